//! The napi binding: translates between JS values and the driver, nothing more.
//!
//! One `RaftNode` per JS `Node`. The JS wrapper (`index.js`) owns the user's plugins; the engine
//! reaches them only through the `dispatch` threadsafe function, which carries whole batches of
//! operations (docs/PROTOCOL.md).

use crate::driver::{Driver, Host, Input, NodeOptions, PluginError, Status as NodeStatus};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::mpsc;

/// `dispatch(batchJson)`: called on the JS thread, its return value ignored. Strong, so a
/// running node keeps the process alive; released when the driver task ends (after `stop()`).
type DispatchFn = ThreadsafeFunction<String, Unknown<'static>, String, Status, false, false>;

struct JsHost(Arc<DispatchFn>);

impl Host for JsHost {
    fn dispatch(&self, batch: String) {
        // Non-blocking: the queue is unbounded, and a closing environment just drops the call.
        let _ = self.0.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
    }
}

/// napi's `Error<S>` uses `S` as the JS `code`, so a `String` status gives our own codes.
fn coded(code: &str, msg: impl std::fmt::Display) -> napi::Error<String> {
    napi::Error::new(code.to_string(), msg.to_string())
}

#[napi]
pub struct RaftNode {
    tx: Option<mpsc::UnboundedSender<Input>>,
    driver: Option<Driver<JsHost>>,
    status: Arc<Mutex<NodeStatus>>,
}

#[napi]
impl RaftNode {
    #[napi(constructor)]
    pub fn new(config_json: String, dispatch: Function<String, Unknown<'static>>) -> napi::Result<Self, String> {
        let opts = NodeOptions::parse(&config_json).map_err(|e| coded("EINVALIDOPTIONS", e))?;
        let tsfn: DispatchFn = dispatch
            .build_threadsafe_function::<String>()
            .callee_handled::<false>()
            .weak::<false>()
            .build()
            .map_err(|e| coded("EINTERNAL", e.reason))?;
        let status = Arc::new(Mutex::new(NodeStatus::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let seed: u64 = rand::random();
        let driver = Driver::new(opts, seed, JsHost(Arc::new(tsfn)), status.clone(), rx);
        Ok(RaftNode { tx: Some(tx), driver: Some(driver), status })
    }

    /// Starts the driver task: it loads persisted state, then runs.
    #[napi]
    pub fn start(&mut self) -> napi::Result<(), String> {
        let driver = self.driver.take().ok_or_else(|| coded("ESTARTED", "node already started"))?;
        napi::bindgen_prelude::spawn(driver.run());
        Ok(())
    }

    fn input(&self, input: Input) -> napi::Result<(), String> {
        match &self.tx {
            Some(tx) if tx.send(input).is_ok() => Ok(()),
            _ => Err(coded("ESTOPPED", "node stopped")),
        }
    }

    #[napi]
    pub fn propose(&self, req: u32, command_json: String, timeout_ms: f64, wait_for: Option<String>) -> napi::Result<(), String> {
        let timeout_ms = if timeout_ms.is_finite() && timeout_ms > 0.0 { timeout_ms as u64 } else { 0 };
        self.input(Input::Propose { req, command: command_json, timeout_ms, wait_for })
    }

    #[napi]
    pub fn join(&self, req: u32, peer: String, metadata_json: String) -> napi::Result<(), String> {
        self.input(Input::Join { req, peer, metadata: metadata_json })
    }

    #[napi]
    pub fn leave(&self, req: u32, peer: String) -> napi::Result<(), String> {
        self.input(Input::Leave { req, peer })
    }

    /// Finishes IO op `io`. Never throws: a late call after stop is simply dropped.
    #[napi]
    pub fn complete(&self, io: u32, error: Option<serde_json::Value>, result_json: Option<String>) {
        let error = error.filter(|e| !e.is_null()).map(|e| {
            serde_json::from_value::<PluginError>(e.clone()).unwrap_or(PluginError {
                message: Some(e.to_string()),
                code: None,
            })
        });
        let _ = self.input(Input::Complete { io, error, result: result_json });
    }

    /// Item `index` of apply batch `io` is applied (progress inside a batch).
    #[napi]
    pub fn progress(&self, io: u32, index: f64) {
        if index.is_finite() && index >= 0.0 {
            let _ = self.input(Input::ApplyProgress { io, index: index as u64 });
        }
    }

    #[napi]
    pub fn receive(&self, reply: f64, kind: String, args_json: String) -> napi::Result<(), String> {
        self.input(Input::Receive { reply: reply as u64, kind, args: args_json })
    }

    #[napi]
    pub fn set_listened(&self, names: Vec<String>) {
        let _ = self.input(Input::SetListened(names));
    }

    /// Stops the node; answered by a `done` op for `req`, then `stopped`.
    #[napi]
    pub fn stop(&mut self, req: u32) -> napi::Result<(), String> {
        let result = self.input(Input::Stop { req });
        // Dropping the sender lets the task end even if the stop input was lost.
        self.tx = None;
        if let Some(driver) = self.driver.take() {
            // Never started: nothing runs; releasing the driver releases the dispatch function.
            drop(driver);
        }
        result
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

    /// Members (self included when it is one) as JSON text: `[{id, metadata}]`.
    #[napi]
    pub fn members(&self) -> String {
        let s = self.status.lock();
        let list: Vec<serde_json::Value> = s
            .members
            .iter()
            .map(|(id, m)| serde_json::json!({ "id": id, "metadata": m.to_value() }))
            .collect();
        serde_json::Value::Array(list).to_string()
    }

    /// Positions for diagnostics and tests: `{commitIndex, lastApplied, lastLogIndex}`.
    #[napi]
    pub fn positions(&self) -> String {
        let s = self.status.lock();
        serde_json::json!({ "commitIndex": s.commit, "lastApplied": s.applied, "lastLogIndex": s.last_index }).to_string()
    }
}
