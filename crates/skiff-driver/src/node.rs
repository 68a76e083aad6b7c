//! The driver: owns one core and performs its IO through the JS wrapper.
//!
//! Inputs from JS (proposals, plugin results, peer messages) run synchronously on the calling
//! thread and hand back the operations they produced at once: a thread hop costs tens of
//! microseconds each way, and a commit takes several such steps. Timers (elections, heartbeats,
//! IO timeouts) run on a tokio task (`run_timers`); what they produce waits in the same ordered
//! queue and a threadsafe-function wake-up tells JS to `drain` it. So every operation reaches JS
//! exactly once and in the order the driver produced it, whoever picks it up.

use super::code;
use super::wire;
use super::input::{Input, PluginError};
use super::install::{Fit, Install, Written};
use super::lane::Lanes;
use super::io::{IoKind, IoTable};
use super::legacy::{Legacy, Sent};
use super::requests::{MembershipQueue, Outcome, Requests, Waiting};
use super::snapshot_send::{Transfers, SNAPSHOT_BYTES, SNAPSHOT_CHUNKS};
use super::op::{ApplyItem, Arg, JsError, Op};
use super::options::NodeOptions;
use super::status::Status;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use skiff_core::persisted::{restore, PersistedState, PersistedTail};
use skiff_core::{Body, Entry, EntryKind, Event, Json, Membership, Message, ProposeError, Raft, Role};
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How the driver reaches JS on its own (from a timer): a wake-up, after which JS calls `drain`.
pub trait Host: Send + 'static {
    fn wake(&self);
}

/// Where the driver reads the time: milliseconds since some fixed start. The binding uses
/// [`SystemClock`]; a simulation passes a clock it moves itself, so that a seed replays exactly.
pub trait Clock: Send + 'static {
    fn now_ms(&self) -> u64;
}

/// The monotonic wall clock, counted from when it was made.
pub struct SystemClock(Instant);

impl SystemClock {
    pub fn new() -> Self {
        SystemClock(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// Most entries handed to JS in one `apply` op.
const APPLY_BATCH: usize = 1024;
/// Group commit while the state machine is busy: a save may wait this long after the previous
/// one finished, to carry more entries (see `Driver::hold_save`).
const SAVE_HOLD_MS: u64 = 5;
/// ...unless the entries waiting are at least this fraction (1/n) of the log a save writes,
const SAVE_HOLD_FRACTION: u64 = 4;
/// ...and only while the state machine has at least this many entries in hand to apply: it
/// has work for the time the held entries take to commit (so a lone command, or a few,
/// never wait).
const SAVE_HOLD_BACKLOG: u64 = 4;
/// Back-off before retrying a failed persistence operation.
const RETRY_MS: u64 = 100;

/// A `saveMeta` under way and what waits on it.
struct Save {
    io: u32,
    state: Box<RawValue>,
    /// `state` holds the log entries from this index on (see `Op::SaveMeta`).
    from: Option<u64>,
    token: (u64, u64),
    /// Messages of the `Ready` that asked for this save: sent only once it is durable.
    messages: Vec<Message>,
    retry_at: Option<u64>,
    /// The snapshot install this save marks as begun, if any.
    install_mark: Option<u64>,
    /// The term written by this save.
    term: u64,
}

/// An `apply` batch under way.
struct Applying {
    io: u32,
    /// Indexes of the first and last entry of the batch.
    first: u64,
    last: u64,
}

struct Loading {
    meta: Option<String>,
    applied: Option<u64>,
    retry_at: Option<u64>,
}

pub struct Driver<H: Host> {
    opts: NodeOptions,
    seed: u64,
    host: Option<H>,
    status: Arc<Mutex<Status>>,
    /// Tells the timer task to look again at `next_wakeup` (it moved earlier, or the node ended).
    notify: Arc<Notify>,
    /// The time (ms since `start`) the timer task sleeps until.
    timer_at: u64,
    /// A wake-up is on its way to JS; it drains whatever is queued when it lands.
    wake_pending: bool,
    /// Stopped: inputs are ignored and the timer task ends. `host` is released with it, so
    /// the process may exit.
    finished: bool,
    clock: Box<dyn Clock>,
    now: u64,

    raft: Option<Raft>,
    loading: Loading,
    ops: Vec<Op>,
    /// IO handed to JS and not yet called back.
    ios: IoTable,

    saving: Option<Save>,
    applying: Option<Applying>,
    apply_retry_at: Option<u64>,
    apply_queue: VecDeque<Entry>,

    /// Requests answered once an entry is applied.
    requests: Requests,
    /// Membership changes waiting for the one before them.
    membership_queue: MembershipQueue,

    /// Leader: snapshot transfers to followers.
    transfers: Transfers,
    /// Follower: the snapshot being installed.
    install: Install,
    next_sid: u32,
    /// A `quiesce` op under way: applying stops so a snapshot read starts from an exact index.
    quiescing: Option<u32>,
    /// The term of the newest state known to be on disk.
    durable_term: u64,
    /// Last log entry (index, term) of the state last sent in a `saveMeta` op.
    js_log: Option<(u64, u64)>,
    /// When the last save finished (see `hold_save`).
    last_save_done: Option<u64>,
    /// How far the state machine got, as the wrapper last said with an input. Apply chains
    /// report progress to the core only every so many items; group commit needs to know sooner
    /// when the state machine is about to run out of work. Only a hint: nothing but
    /// `hold_save` relies on it.
    applied_hint: u64,

    connected: BTreeSet<String>,
    /// Peers whose connection declared `pipelining` (beside a transport that declared it for all).
    pipelined: HashSet<String>,
    /// What is known of peers that may run skiff-algorithm (a rolling upgrade).
    legacy: Legacy,
    /// Peers whose connection takes one request at a time: what is in flight and what waits.
    lanes: Lanes,
    listened: HashSet<String>,
    removed_self: bool,
    stopping: Option<u32>,
}

fn coded_arg(code: &str, message: impl Into<String>) -> Arg {
    Arg::Error { message: message.into(), code: code.to_string() }
}

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
}

fn to_raw<T: serde::Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| raw("null".into()))
}

/// A message's arguments as they travel.
impl<H: Host> Driver<H> {
    pub fn new(opts: NodeOptions, seed: u64, host: H, status: Arc<Mutex<Status>>, notify: Arc<Notify>) -> Self {
        Self::with_clock(opts, seed, host, status, notify, Box::new(SystemClock::new()))
    }

    /// A driver that reads the time from `clock` (a simulation's, say).
    pub fn with_clock(
        opts: NodeOptions,
        seed: u64,
        host: H,
        status: Arc<Mutex<Status>>,
        notify: Arc<Notify>,
        clock: Box<dyn Clock>,
    ) -> Self {
        Driver {
            opts,
            seed,
            host: Some(host),
            status,
            notify,
            timer_at: 0,
            wake_pending: false,
            finished: false,
            clock,
            now: 0,
            raft: None,
            loading: Loading { meta: None, applied: None, retry_at: None },
            ops: Vec::new(),
            ios: IoTable::default(),
            saving: None,
            applying: None,
            apply_retry_at: None,
            apply_queue: VecDeque::new(),
            requests: Requests::default(),
            membership_queue: MembershipQueue::default(),
            transfers: Transfers::default(),
            install: Install::default(),
            next_sid: 1,
            quiescing: None,
            durable_term: 0,
            js_log: None,
            last_save_done: None,
            applied_hint: 0,
            connected: BTreeSet::new(),
            pipelined: HashSet::new(),
            legacy: Legacy::default(),
            lanes: Lanes::default(),
            listened: HashSet::new(),
            removed_self: false,
            stopping: None,
        }
    }

    /// Begins loading the persisted state; the returned batch asks JS for it.
    pub fn start(&mut self) -> Option<String> {
        if self.finished {
            return None;
        }
        self.now = self.clock();
        self.begin_load();
        self.take_batch()
    }

    /// Runs one input from JS and returns the operations it produced (with any a timer queued
    /// before), as one JSON batch. After the node stopped, inputs are dropped.
    pub fn input(&mut self, input: Input, applied: Option<u64>) -> Option<String> {
        if self.finished {
            return None;
        }
        if let Some(a) = applied {
            self.applied_hint = a;
        }
        self.now = self.clock();
        self.handle(input);
        self.settle();
        if self.finished {
            // Everything left is in the batch returned here: release the threadsafe function.
            self.host = None;
        } else if self.next_wakeup() < self.timer_at {
            self.notify.notify_one();
        }
        self.take_batch()
    }

    /// What is queued for JS; called when a wake-up lands.
    pub fn drain(&mut self) -> Option<String> {
        self.wake_pending = false;
        self.take_batch()
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// For the timer task: records when it will next look, and returns how long until then (ms).
    pub fn arm_timer(&mut self) -> u64 {
        self.now = self.clock();
        self.timer_at = self.next_wakeup();
        self.timer_at - self.now
    }

    /// A timer fired: tick, and wake JS if that produced anything.
    pub fn timer_round(&mut self) {
        if self.finished {
            return;
        }
        self.now = self.clock();
        self.settle();
        if !self.ops.is_empty() && !self.wake_pending {
            if let Some(host) = &self.host {
                self.wake_pending = true;
                host.wake();
            }
        }
        if self.finished {
            // Release the threadsafe function: the wake-up above is still delivered.
            self.host = None;
        }
    }

    /// A round, or the end of the node once a stop was asked for (by `stop()`, or by the node
    /// itself after it was removed from the cluster).
    fn settle(&mut self) {
        if self.stopping.is_none() {
            self.round();
        }
        if let Some(req) = self.stopping {
            self.finish_stop(req);
            self.finished = true;
            self.notify.notify_one();
        }
    }

    fn take_batch(&mut self) -> Option<String> {
        if self.ops.is_empty() {
            return None;
        }
        let ops = std::mem::take(&mut self.ops);
        Some(serde_json::to_string(&ops).unwrap_or_else(|e| {
            // Cannot happen for the types in `Op`; say so rather than lose the batch silently.
            serde_json::json!([{ "op": "event", "name": "error",
                "args": [{ "message": format!("internal: cannot encode operations: {e}"), "code": code::EINTERNAL }] }])
            .to_string()
        }))
    }

    fn clock(&self) -> u64 {
        self.clock.now_ms()
    }

    fn next_wakeup(&self) -> u64 {
        let mut at = self.ios.next_scan();
        if let Some(r) = &self.raft {
            at = at.min(r.next_deadline());
        }
        if let Some(until) = self.hold_save() {
            at = at.min(until + 1);
        }
        at.max(self.now)
    }

    /// A fresh id for a snapshot stream.
    fn new_sid(&mut self) -> u32 {
        let sid = self.next_sid;
        self.next_sid = self.next_sid.wrapping_add(1).max(1);
        sid
    }

    fn io(&mut self, kind: IoKind, timeout: u64) -> u32 {
        self.ios.start(kind, self.now + timeout)
    }

    fn persistence_timeout(&self) -> u64 {
        self.opts.command_timeout
    }

    fn send_timeout(&self) -> u64 {
        self.opts.max_election_timeout * 2
    }

    // ----- events -----

    fn wants(&self, name: &str) -> bool {
        matches!(name, "error" | "warning") || self.listened.contains(name)
    }

    fn emit(&mut self, name: &'static str, args: Vec<Arg>) {
        if self.wants(name) {
            self.ops.push(Op::Event { name, args });
        }
    }

    fn warn(&mut self, code: &str, message: impl Into<String>) {
        self.emit("warning", vec![coded_arg(code, message)]);
    }

    fn error(&mut self, code: &str, message: impl Into<String>) {
        self.emit("error", vec![coded_arg(code, message)]);
    }

    fn peer_arg(&self, id: &str) -> Arg {
        let metadata = self
            .raft
            .as_ref()
            .and_then(|r| r.members().metadata(id).cloned())
            .or_else(|| self.status.lock().members.metadata(id).cloned())
            .unwrap_or_else(Json::empty_object);
        Arg::Peer { id: id.to_string(), metadata }
    }

    fn emit_state(&mut self, name: &'static str) {
        self.status.lock().state = name;
        self.emit("state", vec![Arg::Str(name.to_string()), Arg::node()]);
        let ev: &'static str = name;
        self.emit(ev, vec![Arg::node()]);
    }

    // ----- loading -----

    fn begin_load(&mut self) {
        self.loading = Loading { meta: None, applied: None, retry_at: None };
        let t = self.persistence_timeout();
        let io = self.io(IoKind::LoadMeta, t);
        self.ops.push(Op::LoadMeta { io });
        let io = self.io(IoKind::LastApplied, t);
        self.ops.push(Op::LastApplied { io });
    }

    fn load_failed(&mut self, what: &str, err: String, code: &str) {
        self.error(code, format!("{what} failed: {err}"));
        // Forget the other half too and start over after a pause.
        self.ios.forget(|k| matches!(k, IoKind::LoadMeta | IoKind::LastApplied));
        self.loading.retry_at = Some(self.now + RETRY_MS * 10);
    }

    fn maybe_finish_load(&mut self) {
        let (Some(meta), Some(applied)) = (self.loading.meta.clone(), self.loading.applied) else { return };
        let restored = match restore(&self.opts.id, &meta, applied, self.opts.standby, &self.opts.metadata) {
            Ok(r) => r,
            Err(e) => {
                self.load_failed("loadMeta", e.to_string(), code::EBADSTATE);
                return;
            }
        };
        let mut cfg = self.opts.core_config(self.seed);
        cfg.seed = self.seed;
        let mut raft = match Raft::new(cfg, restored) {
            Ok(r) => r,
            Err(e) => {
                self.error(code::EINVALIDOPTIONS, e.to_string());
                return;
            }
        };
        raft.tick(self.now);
        self.durable_term = raft.term();
        self.raft = Some(raft);
        self.emit("loaded", vec![]);
        self.sync_connections();
    }

    fn parse_applied(&mut self, result: Option<String>) -> Result<u64, String> {
        let v: serde_json::Value = match result.as_deref().map(serde_json::from_str) {
            None => serde_json::Value::Null,
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(format!("lastAppliedCommitIndex returned something that is not JSON: {e}")),
        };
        match &v {
            serde_json::Value::Null => Ok(0),
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(i) if i <= skiff_core::MAX_SAFE => Ok(i),
                _ => Err(format!("lastAppliedCommitIndex returned {n}, not a non-negative integer")),
            },
            serde_json::Value::String(s) => match s.trim().parse::<u64>() {
                Ok(i) if i <= skiff_core::MAX_SAFE => Ok(i),
                _ => Err(format!("lastAppliedCommitIndex returned {s:?}, not an index")),
            },
            other => Err(format!("lastAppliedCommitIndex returned {other}, not an index")),
        }
    }

    // ----- inputs -----

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose { req, command, timeout_ms, wait_for } => self.propose(req, command, timeout_ms, wait_for),
            Input::Join { req, peer, metadata } => match Json::from_text(&metadata) {
                Ok(metadata) => self.queue_membership(req, EntryKind::AddPeer { id: peer, metadata }),
                Err(e) => self.done(req, Some(JsError::new(code::EBADMETADATA, format!("metadata is not JSON: {e}")))),
            },
            Input::Leave { req, peer } => self.queue_membership(req, EntryKind::RemovePeer { id: peer }),
            Input::Complete { io, error, result } => self.complete(io, error, result),
            Input::ApplyProgress { io, index } => self.apply_progress(io, index),
            Input::Receive { reply, kind, args, peer } => self.receive(reply, kind, args, peer),
            Input::SetListened(names) => self.listened = names.into_iter().collect(),
            Input::Pipelining { peer } => {
                self.pipelined.insert(peer.clone());
                if let Some(queue) = self.lanes.remove(&peer) {
                    // What waited goes now; the request in flight needs no gate any more.
                    for m in queue {
                        self.dispatch(m);
                    }
                }
            }
            Input::Stop { req } => self.stopping = Some(req),
        }
    }

    fn done(&mut self, req: u32, error: Option<JsError>) {
        self.ops.push(Op::Done { req, error, index: None });
    }

    fn not_leader(&self) -> JsError {
        JsError::not_leader(self.raft.as_ref().and_then(|r| r.leader().map(str::to_string)))
    }

    fn propose(&mut self, req: u32, command: String, timeout_ms: u64, wait_for: Option<String>) {
        // Refused wherever it is sent: no node would take it, and no transport need carry it.
        if command.len() as u64 > self.opts.max_command_bytes {
            let message =
                format!("command is {} bytes of JSON, more than maxCommandBytes ({})", command.len(), self.opts.max_command_bytes);
            return self.done(req, Some(JsError::new(code::EBADCOMMAND, message)));
        }
        let Some(raft) = self.raft.as_mut() else {
            let e = self.not_leader();
            return self.done(req, Some(e));
        };
        let json = match Json::from_text(&command) {
            Ok(j) => j,
            Err(e) => return self.done(req, Some(JsError::new(code::EBADCOMMAND, format!("command is not JSON: {e}")))),
        };
        let term = raft.term();
        match raft.propose(json) {
            Ok(index) => {
                let timeout_ms = if timeout_ms == 0 { self.opts.command_timeout } else { timeout_ms };
                self.track(req, index, term, timeout_ms, Waiting::Command { wait_for });
            }
            Err(ProposeError::NotLeader { leader }) => self.done(req, Some(JsError::not_leader(leader))),
            Err(e) => self.done(req, Some(JsError::new(code::ELOGFULL, e.to_string()))),
        }
    }

    fn track(&mut self, req: u32, index: u64, term: u64, timeout_ms: u64, waiting: Waiting) {
        self.requests.track(req, index, term, self.now + timeout_ms, timeout_ms, waiting);
    }

    fn queue_membership(&mut self, req: u32, kind: EntryKind) {
        let is_leader = self.raft.as_ref().is_some_and(|r| r.is_leader());
        if !is_leader {
            let e = self.not_leader();
            return self.done(req, Some(e));
        }
        if let EntryKind::AddPeer { id, .. } = &kind {
            if *id == self.opts.id {
                return self.done(req, Some(JsError::new(code::EJOINSELF, "can't join self")));
            }
        }
        let deadline = self.now + self.opts.command_timeout;
        self.membership_queue.push(req, kind, deadline);
    }

    /// Proposes queued membership changes one at a time, each once the previous one committed.
    fn drive_membership(&mut self) {
        while let Some(front) = self.membership_queue.front() {
            let Some(raft) = self.raft.as_mut() else { return };
            if !raft.is_leader() {
                let e = self.not_leader();
                for req in self.membership_queue.clear() {
                    self.done(req, Some(e.clone()));
                }
                return;
            }
            if !raft.can_change_membership() {
                return;
            }
            let term = raft.term();
            let kind = front.kind.clone();
            let req = front.req;
            let remaining = front.deadline.saturating_sub(self.now).max(1);
            self.membership_queue.pop();
            match raft.propose_membership(kind.clone()) {
                Ok(None) => self.done(req, None),
                Ok(Some(index)) => self.track(req, index, term, remaining, Waiting::Membership),
                Err(ProposeError::NotLeader { leader }) => self.done(req, Some(JsError::not_leader(leader))),
                Err(ProposeError::MembershipChangePending) => {
                    // Raced with can_change_membership; put it back.
                    let deadline = self.now + remaining;
                    self.membership_queue.put_back(req, kind, deadline);
                    return;
                }
                Err(e) => self.done(req, Some(JsError::new(code::ELOGFULL, e.to_string()))),
            }
        }
    }

    fn complete(&mut self, io: u32, error: Option<PluginError>, result: Option<String>) {
        let Some(kind) = self.ios.finish(io) else {
            // A late or second callback: the operation was already finished or retried.
            return;
        };
        match kind {
            IoKind::LoadMeta => match error {
                Some(e) => self.load_failed("loadMeta", e.message(), &e.code_or(code::EPERSISTENCE)),
                None => {
                    self.loading.meta = Some(result.unwrap_or_else(|| "null".into()));
                    self.maybe_finish_load();
                }
            },
            IoKind::LastApplied => match error {
                Some(e) => self.load_failed("lastAppliedCommitIndex", e.message(), &e.code_or(code::EPERSISTENCE)),
                None => match self.parse_applied(result) {
                    Ok(i) => {
                        self.loading.applied = Some(i);
                        self.maybe_finish_load();
                    }
                    Err(msg) => self.load_failed("lastAppliedCommitIndex", msg, code::EBADRESULT),
                },
            },
            IoKind::Save => self.save_finished(io, error),
            IoKind::Apply => self.apply_finished(io, error, result),
            IoKind::Send { peer, kind, sent } => {
                self.lanes.release(&peer, io);
                self.send_finished(peer, kind, sent, error, result)
            }
            IoKind::SnapshotRead { peer } => self.snapshot_read_finished(peer, error, result),
            IoKind::SnapshotReset => self.install_reset_finished(error),
            IoKind::SnapshotWrite => self.install_write_finished(error),
            IoKind::Quiesce => self.quiesce_finished(io, error, result),
        }
    }

    // ----- persistence of the core's state -----

    /// Issues (or re-issues) the save under way. The first time, the messages waiting for it
    /// travel with it and the wrapper sends them as soon as `saveMeta` calls back, without a hop
    /// through the engine. If that save fails they are dropped: peers time out and ask again.
    fn issue_save(&mut self) {
        let Some(save) = self.saving.as_mut() else { return };
        save.retry_at = None;
        let state = save.state.clone();
        let from = save.from;
        let messages = std::mem::take(&mut save.messages);
        let t = self.persistence_timeout();
        let io = self.io(IoKind::Save, t);
        if let Some(save) = self.saving.as_mut() {
            save.io = io;
        }
        // Requests to a peer whose connection is busy cannot be handed over now: they wait in
        // the save and join that peer's queue once the state is durable (`save_finished`).
        let (now, later): (Vec<Message>, Vec<Message>) = messages.into_iter().partition(|m| {
            m.token.is_some() || self.pipelines(&m.to) || self.lanes.is_free(&m.to)
        });
        if let Some(save) = self.saving.as_mut() {
            save.messages = later;
        }
        let outer = std::mem::take(&mut self.ops);
        for m in now {
            self.send_message(m);
        }
        let after = std::mem::replace(&mut self.ops, outer);
        self.ops.push(Op::SaveMeta { io, state, from, after });
    }

    fn save_finished(&mut self, io: u32, error: Option<PluginError>) {
        let Some(save) = self.saving.as_mut() else { return };
        if save.io != io {
            return;
        }
        if let Some(e) = error {
            // Nothing that depends on this state is sent until a save succeeds.
            save.retry_at = Some(self.now + RETRY_MS);
            let code = e.code_or(code::EPERSISTENCE);
            self.error(&code, format!("saveMeta failed: {}", e.message()));
            return;
        }
        let Some(save) = self.saving.take() else { return };
        self.durable_term = self.durable_term.max(save.term);
        self.last_save_done = Some(self.clock());
        for m in save.messages {
            self.send_message(m);
        }
        if let Some(raft) = self.raft.as_mut() {
            raft.advance(save.token);
        }
        if save.install_mark.is_some_and(|index| self.install.marked(index)) {
            // The mark is durable: now the state machine may be cleared.
            let t = self.persistence_timeout();
            let io = self.io(IoKind::SnapshotReset, t);
            self.ops.push(Op::SnapshotReset { io });
        }
    }

    // ----- applying committed entries -----

    fn issue_apply(&mut self) {
        if self.applying.is_some() || self.apply_queue.is_empty() {
            return;
        }
        // Hold the state machine still while a snapshot of it is read, or while one is written.
        if self.transfers.reading() || self.install.is_active() || self.quiescing.is_some() {
            return;
        }
        // A state machine that an install began to replace takes nothing but a snapshot.
        if self.raft.as_ref().is_some_and(|r| r.pending_install().is_some()) {
            return;
        }
        if self.apply_retry_at.is_some_and(|t| t > self.now) {
            return;
        }
        self.apply_retry_at = None;
        let n = self.apply_queue.len().min(APPLY_BATCH);
        let mut items = Vec::with_capacity(n);
        for k in 0..n {
            let (index, term, command) = match self.apply_queue.get(k) {
                Some(e) => match &e.kind {
                    EntryKind::Command(c) => (e.index, e.term, Some(c.clone())),
                    _ => (e.index, e.term, None),
                },
                None => break,
            };
            let want = command.is_some() && self.requests.waits_for(index);
            let req = if want { self.requests.take_direct(index, term) } else { None };
            items.push(ApplyItem { index, command, want: want && req.is_none(), req });
        }
        let t = self.persistence_timeout();
        let io = self.io(IoKind::Apply, t);
        let (first, last) = (items.first().map_or(0, |i| i.index), items.last().map_or(0, |i| i.index));
        self.applying = Some(Applying { io, first, last });
        self.ops.push(Op::Apply { io, entries: items });
    }

    fn apply_finished(&mut self, io: u32, error: Option<PluginError>, result: Option<String>) {
        let Some(applying) = self.applying.take() else { return };
        if applying.io != io {
            self.applying = Some(applying);
            return;
        }
        let reported: Option<u64> = result.as_deref().and_then(|r| serde_json::from_str(r).ok());
        let (first, last) = (applying.first, applying.last);
        let done_upto = match (&error, reported) {
            (None, _) => last,
            (Some(_), Some(i)) if i >= first && i <= last => i,
            (Some(_), _) => first.saturating_sub(1),
        };
        self.progress_to(done_upto);
        if done_upto >= first {
            self.emit("done persisting", vec![Arg::Num(done_upto)]);
        }
        if let Some(e) = error {
            let code = e.code_or(code::EPERSISTENCE);
            self.error(&code, format!("applying index {} failed: {}", done_upto + 1, e.message()));
            self.apply_retry_at = Some(self.now + RETRY_MS);
        }
    }

    /// The state machine has applied everything up to `index`: answer the commands waiting for
    /// those entries and tell the core.
    fn progress_to(&mut self, index: u64) {
        let mut applied = Vec::new();
        while let Some(e) = self.apply_queue.front() {
            if e.index > index {
                break;
            }
            applied.push((e.index, e.term));
            self.apply_queue.pop_front();
        }
        if applied.is_empty() {
            return;
        }
        if let Some(raft) = self.raft.as_mut() {
            raft.applied_to(index);
        }
        for (index, term) in applied {
            self.on_applied(index, term);
        }
    }

    /// One item of the apply batch `io` is done. A slow chain thus keeps its deadline as long as
    /// it progresses, and a retry after a real stall starts where the chain stopped.
    fn apply_progress(&mut self, io: u32, index: u64) {
        if self.applying.as_ref().is_none_or(|a| a.io != io) {
            return;
        }
        let deadline = self.now + self.persistence_timeout();
        self.ios.extend(io, deadline);
        self.progress_to(index);
    }

    fn on_applied(&mut self, index: u64, term: u64) {
        let raft = self.raft.as_ref();
        for outcome in self.requests.applied(index, term, |node| raft.and_then(|r| r.peer_applied(node))) {
            match outcome {
                Outcome::Done { req, index } => self.ops.push(Op::Done { req, error: None, index: Some(index) }),
                Outcome::Superseded { req } => {
                    let e = self.not_leader();
                    self.done(req, Some(e));
                }
            }
        }
    }

    /// Completes commands that were applied here and wait for another node to apply them.
    fn check_wait_for_node(&mut self) {
        let Some(raft) = self.raft.as_ref() else { return };
        for (req, index) in self.requests.wait_for_node(|node| raft.peer_applied(node)) {
            self.ops.push(Op::Done { req, error: None, index: Some(index) });
        }
    }

    // ----- messages -----

    fn sync_connections(&mut self) {
        let Some(raft) = self.raft.as_ref() else { return };
        let wanted: BTreeSet<String> = raft.members().ids().filter(|id| **id != self.opts.id).cloned().collect();
        let gone: Vec<String> = self.connected.difference(&wanted).cloned().collect();
        let new: Vec<(String, Json)> = wanted
            .difference(&self.connected)
            .map(|id| (id.clone(), raft.members().metadata(id).cloned().unwrap_or_else(Json::empty_object)))
            .collect();
        for peer in gone {
            self.connected.remove(&peer);
            self.lanes.remove(&peer);
            self.pipelined.remove(&peer);
            self.legacy.forget(&peer);
            self.ops.push(Op::Disconnect { peer });
        }
        if !self.opts.pipelining {
            // Transports written for skiff-algorithm: connect on the first request, not before.
            // A skiff-algorithm node takes a new connection from a peer for a new session with
            // it and drops the one it sends on (it never uses the new one): a follower that
            // connected to a skiff-algorithm leader it has nothing to ask would be cut off
            // from that leader (a rolling upgrade).
            return;
        }
        for (peer, metadata) in new {
            self.connected.insert(peer.clone());
            self.emit("connecting", vec![Arg::Peer { id: peer.clone(), metadata: metadata.clone() }]);
            self.ops.push(Op::Connect { peer, metadata });
        }
    }

    /// Sends a reply at once, and a request once its peer's connection can take it.
    fn send_message(&mut self, m: Message) {
        if let Some(token) = m.token {
            let args = wire::to_json(&m.body);
            if self.wants("reply") {
                self.ops.push(Op::Event { name: "reply", args: vec![Arg::Raw(args.clone())] });
            }
            self.ops.push(Op::Reply { id: token, error: None, result: Some(args) });
            return;
        }
        if self.pipelines(&m.to) {
            self.dispatch(m);
            return;
        }
        let max_entries = self.raft.as_ref().map_or(1, |r| r.config().max_entries_per_message);
        let peer = m.to.clone();
        self.lanes.push(m, max_entries);
        self.pump_lane(&peer);
    }

    /// Whether several requests may be in flight to `peer`: the transport or the connection
    /// declared `pipelining`.
    fn pipelines(&self, peer: &str) -> bool {
        self.opts.pipelining || self.pipelined.contains(peer)
    }

    /// Sends the next waiting request to each idle one-at-a-time peer. Runs at the end of a
    /// round, so that what the round produced was merged into it first.
    fn pump_lanes(&mut self) {
        for peer in self.lanes.ready() {
            self.pump_lane(&peer);
        }
    }

    /// Sends `peer` its oldest waiting request that is still current, if none is in flight
    /// (see `Lanes::next`).
    fn pump_lane(&mut self, peer: &str) {
        let (term, leading) = self.raft.as_ref().map_or((0, false), |r| (r.term(), r.is_leader()));
        while let Some(m) = self.lanes.next(peer, term, leading) {
            let io = self.dispatch(m);
            self.lanes.sending(peer, io);
        }
    }

    /// Hands one request to the wrapper; returns the id of its `send` op.
    fn dispatch(&mut self, mut m: Message) -> u32 {
        self.legacy.cap_commit(&mut m);
        let kind = m.body.type_name();
        let args = wire::to_json(&m.body);
        let sent = Sent::of(&m.body);
        if !self.connected.contains(&m.to) {
            let metadata = self.peer_arg(&m.to);
            if let Arg::Peer { id, metadata } = metadata {
                self.connected.insert(id.clone());
                self.ops.push(Op::Connect { peer: id, metadata });
            }
        }
        if self.wants("outgoing call") {
            let peer = self.peer_arg(&m.to);
            self.ops.push(Op::Event { name: "outgoing call", args: vec![peer, Arg::Str(kind.into()), Arg::Raw(args.clone())] });
        }
        let t = self.send_timeout();
        let io = self.io(IoKind::Send { peer: m.to.clone(), kind, sent }, t);
        self.ops.push(Op::Send { io, peer: m.to, kind, args });
        io
    }

    fn send_finished(
        &mut self,
        peer: String,
        kind: &'static str,
        sent: Option<Sent>,
        error: Option<PluginError>,
        result: Option<String>,
    ) {
        if self.wants("response") {
            let p = self.peer_arg(&peer);
            let err = error.as_ref().map_or(Arg::Null(()), |e| coded_arg(&e.code_or(code::ETRANSPORT), e.message()));
            let res = result.clone().map_or(Arg::Null(()), |r| Arg::Raw(raw(r)));
            self.ops.push(Op::Event { name: "response", args: vec![p, err, res] });
        }
        if let Some(e) = error {
            if let Some(raft) = self.raft.as_mut() {
                raft.report_unreachable(&peer);
            }
            if kind == "InstallSnapshot" {
                self.abort_outgoing(&peer);
            }
            self.warn(&e.code_or(code::ETRANSPORT), format!("{kind} to {peer} failed: {}", e.message()));
            return;
        }
        let text = result.unwrap_or_else(|| "null".into());
        match wire::response(kind, &text) {
            Ok(mut body) => {
                if let (Body::AppendEntriesResponse(r), Some(sent)) = (&mut body, sent) {
                    self.legacy.position_reply(&peer, &text, sent, r);
                }
                self.step(Message { from: peer, to: self.opts.id.clone(), token: None, body });
            }
            Err(e) => self.warn(code::EBADMESSAGE, format!("malformed {kind} reply from {peer}: {e}")),
        }
    }

    fn receive(&mut self, reply: u64, kind: String, args: String, peer: Option<String>) {
        let reject = |this: &mut Self, code: &str, message: String| {
            this.warn(code, message.clone());
            this.ops.push(Op::Reply { id: reply, error: Some(JsError::new(code, message)), result: None });
        };
        if self.raft.is_none() {
            return reject(self, code::ENOTREADY, "node is still loading its state".into());
        }
        let (translated, mark) = match self.legacy.translate(self.raft.as_ref(), &kind, &args) {
            Ok(Some((text, mark))) => (Some(text), mark),
            Ok(None) => (None, None),
            Err(e) => return reject(self, code::EBADMESSAGE, e),
        };
        let text = translated.as_deref().unwrap_or(&args);
        let (from, body) = match wire::request(&kind, text) {
            Ok(p) => p,
            Err(e) => return reject(self, code::EBADMESSAGE, format!("malformed {kind} message: {e}")),
        };
        // The sender is the connection: a message may only speak for the peer its connection
        // was opened with. A connection the transport gave no peer id for speaks for no one.
        match peer {
            Some(p) if p == from => {}
            Some(p) => {
                let message = format!("{kind} on the connection with {p} claims to come from {from}");
                return reject(self, code::EBADSENDER, message);
            }
            None => {
                let message = format!("{kind} from {from} came on a connection the transport gave no peer id for");
                return reject(self, code::EBADSENDER, message);
            }
        }
        self.legacy.accept(mark);
        if self.wants(body.type_name()) {
            let name = body.type_name();
            self.ops.push(Op::Event { name, args: vec![Arg::Raw(raw(args))] });
        }
        self.step(Message { from, to: self.opts.id.clone(), token: Some(reply), body });
    }

    fn step(&mut self, m: Message) {
        let token = m.token;
        let Some(raft) = self.raft.as_mut() else { return };
        if let Err(e) = raft.step(m) {
            if let Some(id) = token {
                self.ops.push(Op::Reply { id, error: Some(JsError::new(code::EBADMESSAGE, e.to_string())), result: None });
            }
        }
    }

    // ----- one round -----

    fn round(&mut self) {
        if self.raft.is_none() {
            if self.loading.retry_at.is_some_and(|t| t <= self.now) {
                self.begin_load();
            }
            self.scan_timeouts();
            return;
        }
        if let Some(raft) = self.raft.as_mut() {
            raft.tick(self.now);
        }
        if self.saving.as_ref().is_some_and(|s| s.retry_at.is_some_and(|t| t <= self.now)) {
            self.issue_save();
        }
        self.drive_membership();
        self.collect_ready();
        self.start_snapshots();
        self.collect_ready();
        self.issue_apply();
        self.check_wait_for_node();
        self.scan_timeouts();
        self.pump_lanes();
        if self.removed_self && self.apply_queue.is_empty() && self.applying.is_none() && self.saving.is_none() {
            self.stopping = Some(0);
        }
        self.publish();
    }

    /// Group commit. Each save hands the plugin the whole log (the persisted format is one
    /// document), so saving every entry or two as it arrives costs a full copy of the log per
    /// entry. While the state machine is busy (it has entries in hand to apply, one
    /// `applyCommand` at a time), a `Ready` that asks for a save waits until a fair share of
    /// the log is new, or `SAVE_HOLD_MS` after the last save. Holding the `Ready` also holds the
    /// AppendEntries it carries, so followers get (and save) batches too. Term and vote changes
    /// never wait, and neither does a lone command.
    fn hold_save(&self) -> Option<u64> {
        let done = self.last_save_done?;
        let raft = self.raft.as_ref()?;
        if !raft.has_unsaved() || raft.term() != self.durable_term || raft.pending_install().is_some() {
            return None;
        }
        let log = raft.log();
        // Only what the state machine has already been handed counts: entries committed since
        // reach it through the very `Ready` this would hold.
        let handed = self.apply_queue.back().map(|e| e.index).max(self.applying.as_ref().map(|a| a.last)).unwrap_or(0);
        if handed.saturating_sub(raft.applied().max(self.applied_hint)) < SAVE_HOLD_BACKLOG {
            return None;
        }
        let saved = self.js_log.map_or(log.snapshot_index(), |(i, _)| i);
        let waiting = log.last_index().saturating_sub(saved);
        let size = log.last_index().saturating_sub(log.snapshot_index());
        if waiting * SAVE_HOLD_FRACTION >= size {
            return None;
        }
        let until = done + SAVE_HOLD_MS;
        (self.clock() < until).then_some(until)
    }

    fn collect_ready(&mut self) {
        loop {
            if self.saving.is_some() || self.hold_save().is_some() {
                return;
            }
            let Some(raft) = self.raft.as_mut() else { return };
            if !raft.has_ready() {
                return;
            }
            let ready = raft.ready();
            let state = if ready.persist {
                let log = raft.log();
                // The wrapper still holds the entries of the previous save up to `js_log`; send
                // only what follows, unless the log was truncated or moved past them.
                let from = match self.js_log {
                    Some((last, term)) if last >= log.snapshot_index() && log.term(last) == Some(term) => Some(last + 1),
                    _ => None,
                };
                self.js_log = Some((log.last_index(), log.last_term()));
                Some(match from {
                    Some(from) => (to_raw(&PersistedTail(raft, from)), Some(from)),
                    None => (to_raw(&PersistedState(raft)), None),
                })
            } else {
                None
            };
            let mut membership_changed = false;
            for ev in ready.events {
                membership_changed |= matches!(ev, Event::Joined { .. } | Event::Left { .. });
                self.core_event(ev);
            }
            if membership_changed {
                self.sync_connections();
            }
            self.apply_queue.extend(ready.committed);
            match state {
                Some((state, from)) => {
                    let install_mark = self.raft.as_ref().and_then(|r| r.pending_install().map(|p| p.index));
                    let term = self.raft.as_ref().map_or(0, |r| r.term());
                    // A leader whose term (and so its vote) is already on disk streams new entries
                    // to followers while saving them itself; everything else waits for the save.
                    let (early, messages): (Vec<Message>, Vec<Message>) = if term == self.durable_term {
                        ready
                            .messages
                            .into_iter()
                            .partition(|m| m.token.is_none() && matches!(m.body, Body::AppendEntries(_)))
                    } else {
                        (Vec::new(), ready.messages)
                    };
                    for m in early {
                        self.send_message(m);
                    }
                    self.saving =
                        Some(Save { io: 0, state, from, token: ready.persist_token, messages, retry_at: None, install_mark, term });
                    self.issue_save();
                }
                None => {
                    for m in ready.messages {
                        self.send_message(m);
                    }
                }
            }
            // Proposals that arrived while this ran are picked up in the next round.
            self.drive_membership();
        }
    }

    fn core_event(&mut self, ev: Event) {
        match ev {
            Event::Role(role) => {
                let name: &'static str = role.name();
                self.emit_state(name);
                if role != Role::Leader {
                    // Queued membership changes need a leader.
                    let e = self.not_leader();
                    for req in self.membership_queue.clear() {
                        self.done(req, Some(e.clone()));
                    }
                }
            }
            Event::Leader(_) => {}
            Event::Joined { id } => {
                let p = self.peer_arg(&id);
                self.emit("joined", vec![p]);
            }
            Event::Left { id } => {
                let metadata = self.status.lock().members.metadata(&id).cloned().unwrap_or_else(Json::empty_object);
                self.emit("left", vec![Arg::Peer { id, metadata }]);
            }
            Event::VoteGranted { candidate } => self.emit("vote granted", vec![Arg::Str(candidate)]),
            Event::ElectionTimeout => self.emit("election timeout", vec![]),
            Event::ResetElectionTimeout => self.emit("reset election timeout", vec![]),
            Event::Heartbeat => self.emit("heartbeat", vec![]),
            Event::RemovedSelf => self.removed_self = true,
            Event::Rejected { from, reason } => self.warn(code::EBADMESSAGE, format!("refused a message from {from}: {reason}")),
            Event::SnapshotNeeded { peer } => {
                self.transfers.want(peer);
            }
            Event::SnapshotAcked { peer, seq } => self.snapshot_acked(peer, seq),
            Event::SnapshotInstalled { peer } | Event::SnapshotFailed { peer } => self.close_outgoing(&peer),
            Event::SnapshotChunk { from, token, chunk } => self.install_chunk(from, token, chunk),
        }
    }

    fn scan_timeouts(&mut self) {
        if !self.ios.scan_due(self.now) {
            return;
        }
        let now = self.now;
        for io in self.ios.expired(now) {
            let Some(kind) = self.ios.finish(io) else { continue };
            match kind {
                IoKind::LoadMeta | IoKind::LastApplied => {
                    self.load_failed("loading persisted state", "the persistence plugin did not call back".into(), code::ETIMEDOUT)
                }
                IoKind::Save => {
                    self.error(code::ETIMEDOUT, "saveMeta did not call back; retrying");
                    if let Some(s) = self.saving.as_mut() {
                        if s.io == io {
                            s.retry_at = Some(now);
                        }
                    }
                }
                IoKind::Apply => {
                    self.error(code::ETIMEDOUT, "applyCommand did not call back; retrying");
                    if self.applying.as_ref().is_some_and(|a| a.io == io) {
                        self.applying = None;
                    }
                }
                IoKind::Send { peer, kind, .. } => {
                    if self.lanes.release(&peer, io) && self.connected.contains(&peer) {
                        // Its reply may still come, and a transport without request ids would
                        // hand it to the next request: start over on a fresh connection.
                        if let Arg::Peer { id, metadata } = self.peer_arg(&peer) {
                            self.ops.push(Op::Connect { peer: id, metadata });
                        }
                    }
                    if let Some(raft) = self.raft.as_mut() {
                        raft.report_unreachable(&peer);
                    }
                    if kind == "InstallSnapshot" {
                        self.abort_outgoing(&peer);
                    }
                    self.warn(code::ETIMEDOUT, format!("{kind} to {peer} got no reply"));
                }
                IoKind::SnapshotRead { peer } => {
                    self.warn(code::ETIMEDOUT, format!("reading the snapshot for {peer} stalled"));
                    self.abort_outgoing(&peer);
                }
                IoKind::Quiesce => {
                    self.warn(code::ETIMEDOUT, "the state machine did not come to rest for a snapshot; retrying");
                    if self.quiescing == Some(io) {
                        self.quiescing = None;
                    }
                }
                IoKind::SnapshotReset | IoKind::SnapshotWrite => {
                    self.install_failed(code::ETIMEDOUT, "the persistence plugin did not call back while installing a snapshot".into());
                }
            }
        }
        for peer in self.transfers.stalled(now, self.send_timeout()) {
            self.warn(code::ETIMEDOUT, format!("snapshot transfer to {peer} stalled"));
            self.abort_outgoing(&peer);
        }
        if self.saving.as_ref().is_some_and(|s| s.retry_at.is_some_and(|t| t <= now)) {
            self.issue_save();
        }
        for req in self.requests.expired(now) {
            let Some(p) = self.requests.untrack(req) else { continue };
            let msg = format!("timedout after {} ms trying to replicate log index {}", p.timeout_ms, p.index);
            self.done(req, Some(JsError::new(code::ETIMEDOUT, msg)));
        }
        for req in self.membership_queue.expire(now) {
            let msg = format!("timedout after {} ms waiting for an earlier membership change", self.opts.command_timeout);
            self.done(req, Some(JsError::new(code::ETIMEDOUT, msg)));
        }
    }

    fn publish(&mut self) {
        let Some(raft) = self.raft.as_ref() else { return };
        let mut s = self.status.lock();
        s.term = raft.term();
        s.leader = raft.leader().map(str::to_string);
        s.commit = raft.commit();
        s.applied = raft.applied();
        s.last_index = raft.log().last_index();
        if s.members != *raft.members() {
            s.members = raft.members().clone();
        }
    }

    // ----- snapshots: sending (leader) -----

    /// Starts transfers to the followers that need one. The state machine must be at rest and
    /// its position exact: unless transfers already hold applying back, first stop the apply
    /// chain and learn how far it got (`quiesce`).
    fn start_snapshots(&mut self) {
        if !self.transfers.is_wanted() || self.quiescing.is_some() {
            return;
        }
        if self.transfers.reading() {
            return self.begin_transfers();
        }
        let t = self.persistence_timeout();
        let io = self.io(IoKind::Quiesce, t);
        self.quiescing = Some(io);
        self.ops.push(Op::Quiesce { io });
    }

    fn quiesce_finished(&mut self, io: u32, error: Option<PluginError>, result: Option<String>) {
        if self.quiescing != Some(io) {
            return;
        }
        self.quiescing = None;
        if let Some(e) = error {
            return self.warn(&e.code_or(code::EPLUGIN), format!("could not stop applying for a snapshot: {}", e.message()));
        }
        // The chain under way was stopped; forget its batch (the rest is re-sent later).
        if let Some(a) = self.applying.take() {
            self.ios.finish(a.io);
        }
        let reported: u64 = result.as_deref().and_then(|r| serde_json::from_str(r).ok()).unwrap_or(0);
        self.progress_to(reported);
        self.begin_transfers();
    }

    fn begin_transfers(&mut self) {
        for peer in self.transfers.take_wanted() {
            let Some(raft) = self.raft.as_mut() else { return };
            let index = raft.applied();
            let Some(meta) = raft.begin_snapshot(&peer, index) else { continue };
            let sid = self.new_sid();
            self.transfers.open(peer.clone(), sid, meta, self.now);
            self.read_snapshot(&peer);
        }
    }

    fn read_snapshot(&mut self, peer: &str) {
        let Some(sid) = self.transfers.reading_for(peer, self.now) else { return };
        let t = self.persistence_timeout();
        let io = self.io(IoKind::SnapshotRead { peer: peer.to_string() }, t);
        self.ops.push(Op::SnapshotRead { io, sid, max_chunks: SNAPSHOT_CHUNKS, max_bytes: SNAPSHOT_BYTES });
    }

    fn snapshot_read_finished(&mut self, peer: String, error: Option<PluginError>, result: Option<String>) {
        if !self.transfers.is_open(&peer) {
            return;
        }
        if let Some(e) = error {
            self.error(&e.code_or(code::EPERSISTENCE), format!("reading the state machine for a snapshot failed: {}", e.message()));
            return self.abort_outgoing(&peer);
        }
        #[derive(serde::Deserialize)]
        struct ReadResult {
            chunks: Json,
            done: bool,
        }
        let parsed: Option<ReadResult> = result.as_deref().and_then(|r| serde_json::from_str(r).ok());
        let Some(read) = parsed else {
            self.warn(code::EBADRESULT, "the snapshot read returned something unexpected");
            return self.abort_outgoing(&peer);
        };
        let Some((meta, seq)) = self.transfers.read(&peer, read.done, self.now) else { return };
        let sent = self.raft.as_mut().is_some_and(|r| r.send_snapshot_chunk(&peer, &meta, seq, Some(read.chunks), read.done));
        if !sent {
            self.close_outgoing(&peer);
        }
    }

    fn snapshot_acked(&mut self, peer: String, seq: u64) {
        if self.transfers.acked(&peer, seq, self.now) {
            self.read_snapshot(&peer);
        }
    }

    fn abort_outgoing(&mut self, peer: &str) {
        if let Some(raft) = self.raft.as_mut() {
            raft.snapshot_aborted(peer);
        }
        self.close_outgoing(peer);
    }

    fn close_outgoing(&mut self, peer: &str) {
        if let Some(sid) = self.transfers.close(peer) {
            self.ops.push(Op::SnapshotClose { sid });
        }
    }

    // ----- snapshots: installing (follower) -----

    fn install_chunk(&mut self, from: String, token: Option<u64>, chunk: skiff_core::message::InstallSnapshot) {
        let reply = |this: &mut Self, success: bool, installed: u64, reason: Option<&str>| {
            if let Some(raft) = this.raft.as_mut() {
                raft.snapshot_reply(&from, token, chunk.seq, success, installed, reason.map(str::to_string));
            }
        };
        if chunk.seq == 0 {
            if let Some(old) = self.install.abort() {
                self.ops.push(Op::SnapshotAbort { sid: old.sid });
                // The chunk the old transfer held (the first, waiting for the reset, or one
                // being written) still gets its answer.
                if let (Some(Some(token)), Some(raft)) = (old.held, self.raft.as_mut()) {
                    let reason = Some("replaced by a newer transfer".to_string());
                    raft.snapshot_reply(&old.from, Some(token), old.next_seq, false, 0, reason);
                }
            }
            if self.applying.is_some() {
                return reply(self, false, 0, Some("busy applying entries; retry"));
            }
            let members = Membership::from_members(
                chunk.peers.clone().unwrap_or_default().into_iter().map(|p| (p.id, p.metadata)),
            );
            let began = self
                .raft
                .as_mut()
                .is_some_and(|r| r.begin_install(chunk.last_included_index, chunk.last_included_term, members));
            if !began {
                return reply(self, false, 0, Some("snapshot refused"));
            }
            // Entries still queued for applying are older than the snapshot, which replaces them;
            // applied onto a cleared state machine after a failed transfer they would corrupt it.
            self.apply_queue.clear();
            self.apply_retry_at = None;
            let sid = self.new_sid();
            self.install.begin(from.clone(), chunk.last_included_index, sid, (token, chunk.data.clone(), chunk.done));
            return;
        }
        match self.install.fit(&from, chunk.last_included_index, chunk.seq) {
            Fit::NoTransfer => reply(self, false, 0, Some("no snapshot transfer in progress")),
            Fit::Other => reply(self, false, 0, Some("chunk of another transfer")),
            // A duplicate of a chunk already written.
            Fit::Duplicate => reply(self, true, 0, None),
            Fit::OutOfOrder => reply(self, false, 0, Some("chunk out of order")),
            Fit::Next => self.write_chunk(token, chunk.seq, chunk.data, chunk.done),
        }
    }

    fn write_chunk(&mut self, token: Option<u64>, seq: u64, data: Option<Json>, done: bool) {
        let Some((sid, index)) = self.install.write(seq, token, done) else { return };
        let t = self.persistence_timeout();
        let io = self.io(IoKind::SnapshotWrite, t);
        self.ops.push(Op::SnapshotWrite { io, sid, chunks: data.unwrap_or_else(|| Json::from_value(&[] as &[u8])), end: done, index });
    }

    fn install_reset_finished(&mut self, error: Option<PluginError>) {
        if let Some(e) = error {
            return self.install_failed(&e.code_or(code::EPERSISTENCE), format!("removeAllState failed: {}", e.message()));
        }
        if let Some((token, data, done)) = self.install.reset() {
            self.write_chunk(token, 0, data, done);
        }
    }

    fn install_write_finished(&mut self, error: Option<PluginError>) {
        if let Some(e) = error {
            return self.install_failed(&e.code_or(code::EPERSISTENCE), format!("writing the snapshot failed: {}", e.message()));
        }
        let Some(Written { from, index, seq, token, done }) = self.install.written() else { return };
        let mut installed = 0;
        if done {
            // The stream finished and the plugin recorded `index`: the state machine is the
            // snapshot. Reset the log; entries queued for applying are older than it.
            if self.raft.as_mut().is_some_and(|r| r.finish_install(index)) {
                self.apply_queue.retain(|e| e.index > index);
                installed = index;
                self.emit("snapshot installed", vec![Arg::Num(index)]);
            }
        }
        if let Some(raft) = self.raft.as_mut() {
            raft.snapshot_reply(&from, token, seq, true, installed, None);
        }
    }

    fn install_failed(&mut self, code: &str, message: String) {
        self.error(code, message.clone());
        let Some(inc) = self.install.abort() else { return };
        self.ops.push(Op::SnapshotAbort { sid: inc.sid });
        let token = inc.held.flatten();
        if let Some(raft) = self.raft.as_mut() {
            raft.snapshot_reply(&inc.from, token, inc.next_seq, false, 0, Some(message));
        }
    }

    fn finish_stop(&mut self, req: u32) {
        self.publish();
        let err = JsError::new(code::ESTOPPED, "node stopped");
        for r in self.requests.clear() {
            self.done(r, Some(err.clone()));
        }
        for req in self.membership_queue.clear() {
            self.done(req, Some(err.clone()));
        }
        for sid in self.transfers.close_all() {
            self.ops.push(Op::SnapshotClose { sid });
        }
        if let Some(inc) = self.install.abort() {
            self.ops.push(Op::SnapshotAbort { sid: inc.sid });
        }
        for peer in std::mem::take(&mut self.connected) {
            self.ops.push(Op::Disconnect { peer });
        }
        self.emit_state("stopped");
        if req != 0 {
            self.done(req, None);
        }
        self.ops.push(Op::Stopped);
    }
}

/// The timer task of one node: sleeps until the driver's next deadline (or a nudge), then runs
/// a round. Ends once the node has stopped.
pub async fn run_timers<H: Host>(driver: Arc<Mutex<Driver<H>>>, notify: Arc<Notify>) {
    loop {
        let at = {
            let mut d = driver.lock();
            if d.finished {
                return;
            }
            tokio::time::Instant::now() + Duration::from_millis(d.arm_timer())
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(at) => {}
        }
        driver.lock().timer_round();
    }
}

/// Read-only views for a simulation that checks the core's invariants from outside (nothing here
/// changes the driver, so a simulation drives exactly what ships).
impl<H: Host> Driver<H> {
    /// The core, once the persisted state is loaded (`None` while loading).
    pub fn core(&self) -> Option<&Raft> {
        self.raft.as_ref()
    }
}
