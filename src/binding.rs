//! The napi binding: translates between JS values and the driver, nothing more.
//!
//! One `RaftNode` per JS `Node`. The JS wrapper (`index.js`) owns the user's plugins; the engine
//! reaches them through the operations each call returns, and after a timer through the `wake`
//! threadsafe function and `drain()` (docs/PROTOCOL.md).

use crate::driver::{code, run_timers, Driver, Host, Input, NodeOptions, PluginError, Status as NodeStatus};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::Notify;

/// `wake()`: called on the JS thread when a timer queued operations; JS answers with `drain()`.
/// Strong, so a running node keeps the process alive; the driver releases it when the node stops.
type WakeFn = ThreadsafeFunction<String, Unknown<'static>, String, Status, false, false>;

struct JsHost(WakeFn);

impl Host for JsHost {
    fn wake(&self) {
        // Non-blocking: the queue is unbounded, and a closing environment just drops the call.
        let _ = self.0.call(String::new(), ThreadsafeFunctionCallMode::NonBlocking);
    }
}

/// napi's `Error<S>` uses `S` as the JS `code`, so a `String` status gives our own codes.
fn coded(code: &str, msg: impl std::fmt::Display) -> napi::Error<String> {
    napi::Error::new(code.to_string(), msg.to_string())
}

/// A log index the wrapper passed as a hint; anything else is no hint.
fn index_hint(value: Option<f64>) -> Option<u64> {
    value.filter(|v| v.is_finite() && *v >= 0.0 && *v <= skiff_core::MAX_SAFE as f64).map(|v| v as u64)
}

/// A timeout from JS in ms: 0 (the node's default) unless a positive number.
fn timeout_arg(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        ms as u64
    } else {
        0
    }
}

fn stopped() -> napi::Error<String> {
    coded(code::ESTOPPED, "node stopped")
}

/// Every error code the engine reports itself (`driver::code::ALL`), for the table test.
#[napi]
pub fn error_codes() -> Vec<String> {
    code::ALL.iter().map(|c| c.to_string()).collect()
}

/// The engine's option defaults by their JS names, as JSON text (`driver::options::defaults`).
#[napi]
pub fn engine_defaults() -> String {
    crate::driver::options::defaults::to_json().to_string()
}

/// Checks a config as the constructor would, without making a node: throws `EINVALIDOPTIONS`
/// with the engine's reason, so tests can hold the wrapper's validation against the engine's.
#[napi]
pub fn check_options(config_json: String) -> napi::Result<(), String> {
    NodeOptions::parse(&config_json).map(|_| ()).map_err(|e| coded(code::EINVALIDOPTIONS, e))
}

/// Every method that feeds the engine returns the operations that produced, as a JSON batch
/// for the wrapper to run (null when there are none).
#[napi]
pub struct RaftNode {
    driver: Arc<Mutex<Driver<JsHost>>>,
    notify: Arc<Notify>,
    status: Arc<Mutex<NodeStatus>>,
    started: bool,
}

#[napi]
impl RaftNode {
    #[napi(constructor)]
    pub fn new(config_json: String, wake: Function<String, Unknown<'static>>) -> napi::Result<Self, String> {
        let opts = NodeOptions::parse(&config_json).map_err(|e| coded(code::EINVALIDOPTIONS, e))?;
        let tsfn: WakeFn = wake
            .build_threadsafe_function::<String>()
            .callee_handled::<false>()
            .weak::<false>()
            .build()
            .map_err(|e| coded(code::EINTERNAL, e.reason))?;
        let status = Arc::new(Mutex::new(NodeStatus::default()));
        let notify = Arc::new(Notify::new());
        let seed: u64 = rand::random();
        let driver = Driver::new(opts, seed, JsHost(tsfn), status.clone(), notify.clone());
        Ok(RaftNode { driver: Arc::new(Mutex::new(driver)), notify, status, started: false })
    }

    /// Starts the timer task and asks for the persisted state.
    #[napi]
    pub fn start(&mut self) -> napi::Result<Option<String>, String> {
        if self.started {
            return Err(coded(code::ESTARTED, "node already started"));
        }
        self.started = true;
        let batch = self.driver.lock().start();
        napi::bindgen_prelude::spawn(run_timers(self.driver.clone(), self.notify.clone()));
        Ok(batch)
    }

    /// `applied`: how far this node's state machine got, as the wrapper knows it right now (the
    /// engine hears of it in `progress` only every so many items; see `Driver::applied_hint`).
    fn input(&self, input: Input, applied: Option<f64>) -> napi::Result<Option<String>, String> {
        let mut d = self.driver.lock();
        if d.is_finished() {
            return Err(stopped());
        }
        Ok(d.input(input, index_hint(applied)))
    }

    /// Feeds an input whose caller has no use for an error (a late result after stop is dropped).
    fn input_quiet(&self, input: Input, applied: Option<f64>) -> Option<String> {
        self.driver.lock().input(input, index_hint(applied))
    }

    /// The operations a timer queued (after a wake-up).
    #[napi]
    pub fn drain(&self) -> Option<String> {
        self.driver.lock().drain()
    }

    #[napi]
    pub fn propose(
        &self,
        req: u32,
        command_json: String,
        timeout_ms: f64,
        wait_for: Option<String>,
        applied: Option<f64>,
    ) -> napi::Result<Option<String>, String> {
        let timeout_ms = timeout_arg(timeout_ms);
        self.input(Input::Propose { req, command: command_json, timeout_ms, wait_for }, applied)
    }

    /// `read()`: `timeout_ms` 0 (or not a positive number) means the node's `commandTimeout`.
    #[napi]
    pub fn read(&self, req: u32, lease: bool, timeout_ms: f64) -> napi::Result<Option<String>, String> {
        let timeout_ms = timeout_arg(timeout_ms);
        self.input(Input::Read { req, lease, timeout_ms }, None)
    }

    #[napi]
    pub fn transfer_leadership(&self, req: u32, peer: Option<String>) -> napi::Result<Option<String>, String> {
        self.input(Input::Transfer { req, peer }, None)
    }

    #[napi]
    pub fn join(&self, req: u32, peer: String, metadata_json: String) -> napi::Result<Option<String>, String> {
        self.input(Input::Join { req, peer, metadata: metadata_json }, None)
    }

    #[napi]
    pub fn add_learner(&self, req: u32, peer: String, metadata_json: String) -> napi::Result<Option<String>, String> {
        self.input(Input::AddLearner { req, peer, metadata: metadata_json }, None)
    }

    #[napi]
    pub fn leave(&self, req: u32, peer: String) -> napi::Result<Option<String>, String> {
        self.input(Input::Leave { req, peer }, None)
    }

    /// Finishes IO op `io`. Never throws: a late call after stop is simply dropped.
    #[napi]
    pub fn complete(
        &self,
        io: u32,
        error: Option<serde_json::Value>,
        result_json: Option<String>,
        applied: Option<f64>,
    ) -> Option<String> {
        let error = error.filter(|e| !e.is_null()).map(|e| {
            serde_json::from_value::<PluginError>(e.clone()).unwrap_or(PluginError {
                message: Some(e.to_string()),
                code: None,
            })
        });
        self.input_quiet(Input::Complete { io, error, result: result_json }, applied)
    }

    /// Item `index` of apply batch `io` is applied (progress inside a batch).
    #[napi]
    pub fn progress(&self, io: u32, index: f64, applied: Option<f64>) -> Option<String> {
        let index = index_hint(Some(index))?;
        self.input_quiet(Input::ApplyProgress { io, index }, applied)
    }

    #[napi]
    pub fn receive(
        &self,
        reply: f64,
        kind: String,
        args_json: String,
        peer: Option<String>,
        applied: Option<f64>,
    ) -> napi::Result<Option<String>, String> {
        self.input(Input::Receive { reply: reply as u64, kind, args: args_json, peer }, applied)
    }

    #[napi]
    pub fn set_listened(&self, names: Vec<String>) -> Option<String> {
        self.input_quiet(Input::SetListened(names), None)
    }

    /// The connection just opened to `peer` declared `pipelining: true`: several requests may
    /// be in flight on it.
    #[napi]
    pub fn pipelining(&self, peer: String) -> Option<String> {
        self.input_quiet(Input::Pipelining { peer }, None)
    }

    /// Stops the node: the batch returned answers `req` with a `done` op, then `stopped`.
    #[napi]
    pub fn stop(&mut self, req: u32) -> napi::Result<Option<String>, String> {
        self.input(Input::Stop { req }, None)
    }

    #[napi]
    pub fn term(&self) -> f64 {
        self.status.lock().term as f64
    }

    #[napi]
    pub fn leader(&self) -> Option<String> {
        self.status.lock().leader.clone()
    }

    #[napi]
    pub fn state_name(&self) -> String {
        self.status.lock().state.to_string()
    }

    /// The metadata `id` joined with, as JSON text, or null when it is not a member.
    #[napi]
    pub fn peer_meta(&self, id: String) -> Option<String> {
        self.status.lock().members.metadata(&id).map(|m| m.as_str().to_string())
    }

    /// Members (self included when it is one) as JSON text: `[{id, metadata, voter}]`, where
    /// `voter` is false for a learner.
    #[napi]
    pub fn members(&self) -> String {
        let s = self.status.lock();
        let list: Vec<serde_json::Value> = s
            .members
            .iter()
            .map(|(id, m)| {
                let voter = m.suffrage == skiff_core::Suffrage::Voter;
                serde_json::json!({ "id": id, "metadata": m.metadata.to_value(), "voter": voter })
            })
            .collect();
        serde_json::Value::Array(list).to_string()
    }

    /// How far the state machine got, as of the engine's last round (an installed snapshot moves
    /// it too, which the wrapper's apply chain does not see).
    #[napi]
    pub fn applied(&self) -> f64 {
        self.status.lock().applied as f64
    }

    /// The engine's part of `node.stats()` as JSON text, as of its last round: positions,
    /// members (with the leader's view of each follower), and the counters only it sees. The
    /// wrapper adds what JS counts (lib/node/stats.js).
    #[napi]
    pub fn stats(&self) -> String {
        let s = self.status.lock();
        let members: Vec<serde_json::Value> = s
            .members
            .iter()
            .map(|(id, m)| {
                let p = s.peer(id);
                serde_json::json!({
                    "id": id,
                    "metadata": m.metadata.to_value(),
                    "voter": m.suffrage == skiff_core::Suffrage::Voter,
                    "matchIndex": p.map(|p| p.match_index),
                    "nextIndex": p.map(|p| p.next_index),
                    "inflight": p.map(|p| p.inflight),
                    "lastContactMs": p.map(|p| p.last_contact_ms),
                    "snapshot": {
                        "sending": p.is_some_and(|p| p.snapshot_sending),
                        "bytes": p.map_or(0, |p| p.snapshot_bytes),
                    },
                })
            })
            .collect();
        serde_json::json!({
            "state": s.state,
            "term": s.term,
            "leader": s.leader,
            "commitIndex": s.commit,
            "lastApplied": s.applied,
            "lastLogIndex": s.last_index,
            "firstLogIndex": s.first_index,
            "members": members,
            "electionsStarted": s.elections_started,
            "leaderChanges": s.leader_changes,
            "snapshotsSent": s.snapshots_sent,
            "snapshotBytesSent": s.snapshot_bytes_sent,
        })
        .to_string()
    }

    /// Positions for diagnostics and tests: `{commitIndex, lastApplied, lastLogIndex}`.
    #[napi]
    pub fn positions(&self) -> String {
        let s = self.status.lock();
        serde_json::json!({ "commitIndex": s.commit, "lastApplied": s.applied, "lastLogIndex": s.last_index }).to_string()
    }
}
