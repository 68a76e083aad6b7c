//! The driver: owns one core and performs its IO through the JS wrapper.
//!
//! Inputs from JS (proposals, plugin results, peer messages) run synchronously on the calling
//! thread and hand back the operations they produced at once: a thread hop costs tens of
//! microseconds each way, and a commit takes several such steps. Timers (elections, heartbeats,
//! IO timeouts) run on a tokio task (`run_timers`); what they produce waits in the same ordered
//! queue and a threadsafe-function wake-up tells JS to `drain` it. So every operation reaches JS
//! exactly once and in the order the driver produced it, whoever picks it up.

use super::apply::ApplyQueue;
use super::code;
use super::events::{coded_arg, Events};
use super::load::Load;
use super::save::{HoldView, SaveQueue};
use super::wire;
use super::input::{Input, PluginError};
use super::install::{Fit, Install, Written};
use super::connections::Connections;
use super::io::{IoKind, IoTable};
use super::legacy::{Legacy, Sent};
use super::requests::{MembershipQueue, Outcome, Requests, Waiting};
use super::snapshot_send::{Transfers, SNAPSHOT_BYTES, SNAPSHOT_CHUNKS};
use super::op::{ApplyItem, Arg, JsError, Op};
use super::options::NodeOptions;
use super::status::Status;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use skiff_core::persisted::{restore, SaveDocument};
use skiff_core::{Body, EntryKind, Event, Json, Membership, Message, ProposeError, Raft, Role};
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
    load: Load,
    ops: Vec<Op>,
    /// IO handed to JS and not yet called back.
    ios: IoTable,

    save: SaveQueue,
    apply: ApplyQueue,

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
    /// How far the state machine got, as the wrapper last said with an input. Apply chains
    /// report progress to the core only every so many items; group commit needs to know sooner
    /// when the state machine is about to run out of work. Only a hint: nothing but
    /// `hold_save` relies on it.
    applied_hint: u64,

    /// Connections to peers, and the requests waiting for a one-at-a-time connection.
    connections: Connections,
    /// What is known of peers that may run skiff-algorithm (a rolling upgrade).
    legacy: Legacy,
    events: Events,
    removed_self: bool,
    stopping: Option<u32>,
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
        let pipelining = opts.pipelining;
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
            load: Load::default(),
            ops: Vec::new(),
            ios: IoTable::default(),
            save: SaveQueue::default(),
            apply: ApplyQueue::default(),
            requests: Requests::default(),
            membership_queue: MembershipQueue::default(),
            transfers: Transfers::default(),
            install: Install::default(),
            next_sid: 1,
            quiescing: None,
            applied_hint: 0,
            connections: Connections::new(pipelining),
            legacy: Legacy::default(),
            events: Events::default(),
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

    fn emit(&mut self, name: &'static str, args: Vec<Arg>) {
        self.events.emit(&mut self.ops, name, args);
    }

    fn warn(&mut self, code: &str, message: impl Into<String>) {
        self.events.warn(&mut self.ops, code, message);
    }

    fn error(&mut self, code: &str, message: impl Into<String>) {
        self.events.error(&mut self.ops, code, message);
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
        self.load.begin();
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
        self.load.failed(self.now);
    }

    fn maybe_finish_load(&mut self) {
        let Some((meta, applied)) = self.load.both().map(|(m, a)| (m.to_string(), a)) else { return };
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
        self.raft = Some(raft);
        self.emit("loaded", vec![]);
        self.sync_connections();
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
            Input::SetListened(names) => self.events.set(names),
            Input::Pipelining { peer } => {
                // What waited goes now; the request in flight needs no gate any more.
                for m in self.connections.set_pipelining(peer) {
                    self.dispatch(m);
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
                    self.load.meta_loaded(result);
                    self.maybe_finish_load();
                }
            },
            IoKind::LastApplied => match error {
                Some(e) => self.load_failed("lastAppliedCommitIndex", e.message(), &e.code_or(code::EPERSISTENCE)),
                None => match self.load.applied_loaded(result) {
                    Ok(()) => self.maybe_finish_load(),
                    Err(msg) => self.load_failed("lastAppliedCommitIndex", msg, code::EBADRESULT),
                },
            },
            IoKind::Save => self.save_finished(io, error),
            IoKind::Apply => self.apply_finished(io, error, result),
            IoKind::Send { peer, kind, sent } => {
                self.connections.release(&peer, io);
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
        if !self.save.is_busy() {
            return;
        }
        let t = self.persistence_timeout();
        let io = self.io(IoKind::Save, t);
        let Some((state, from, messages)) = self.save.issue(io) else { return };
        // Requests to a peer whose connection is busy cannot be handed over now: they wait in
        // the save and join that peer's queue once the state is durable (`save_finished`).
        let (now, later): (Vec<Message>, Vec<Message>) =
            messages.into_iter().partition(|m| self.connections.can_go_now(m));
        self.save.keep_waiting(later);
        let outer = std::mem::take(&mut self.ops);
        for m in now {
            self.send_message(m);
        }
        let after = std::mem::replace(&mut self.ops, outer);
        self.ops.push(Op::SaveMeta { io, state, from: Some(from), after });
    }

    fn save_finished(&mut self, io: u32, error: Option<PluginError>) {
        if let Some(e) = error {
            if self.save.failed(io, self.now) {
                self.error(&e.code_or(code::EPERSISTENCE), format!("saveMeta failed: {}", e.message()));
            }
            return;
        }
        let Some(saved) = self.save.done(io, self.clock()) else { return };
        for m in saved.messages {
            self.send_message(m);
        }
        if let Some(raft) = self.raft.as_mut() {
            raft.advance(saved.token);
        }
        if saved.install_mark.is_some_and(|index| self.install.marked(index)) {
            // The mark is durable: now the state machine may be cleared.
            let t = self.persistence_timeout();
            let io = self.io(IoKind::SnapshotReset, t);
            self.ops.push(Op::SnapshotReset { io });
        }
    }

    // ----- applying committed entries -----

    fn issue_apply(&mut self) {
        // Hold the state machine still while a snapshot of it is read, or while one is written.
        if self.transfers.reading() || self.install.is_active() || self.quiescing.is_some() {
            return;
        }
        // A state machine that an install began to replace takes nothing but a snapshot.
        if self.raft.as_ref().is_some_and(|r| r.pending_install().is_some()) {
            return;
        }
        let Some(batch) = self.apply.next_batch(self.now) else { return };
        let items: Vec<ApplyItem> = batch
            .into_iter()
            .map(|(index, term, command)| {
                let want = command.is_some() && self.requests.waits_for(index);
                let req = if want { self.requests.take_direct(index, term) } else { None };
                ApplyItem { index, command, want: want && req.is_none(), req }
            })
            .collect();
        let t = self.persistence_timeout();
        let io = self.io(IoKind::Apply, t);
        let (first, last) = (items.first().map_or(0, |i| i.index), items.last().map_or(0, |i| i.index));
        self.apply.started(io, first, last);
        self.ops.push(Op::Apply { io, entries: items });
    }

    fn apply_finished(&mut self, io: u32, error: Option<PluginError>, result: Option<String>) {
        let reported: Option<u64> = result.as_deref().and_then(|r| serde_json::from_str(r).ok());
        let Some((first, done_upto)) = self.apply.finished(io, error.is_some(), reported, self.now) else { return };
        self.progress_to(done_upto);
        if done_upto >= first {
            self.emit("done persisting", vec![Arg::Num(done_upto)]);
        }
        if let Some(e) = error {
            let code = e.code_or(code::EPERSISTENCE);
            self.error(&code, format!("applying index {} failed: {}", done_upto + 1, e.message()));
        }
    }

    /// The state machine has applied everything up to `index`: answer the commands waiting for
    /// those entries and tell the core.
    fn progress_to(&mut self, index: u64) {
        let applied = self.apply.applied_upto(index);
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
        if !self.apply.is_current(io) {
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
        let members = raft.members();
        let wanted = members.iter().filter(|(id, _)| **id != self.opts.id).map(|(id, m)| (id.clone(), m.clone())).collect();
        let sync = self.connections.sync(wanted);
        for peer in sync.disconnect {
            self.legacy.forget(&peer);
            self.ops.push(Op::Disconnect { peer });
        }
        for (peer, metadata) in sync.connect {
            self.emit("connecting", vec![Arg::Peer { id: peer.clone(), metadata: metadata.clone() }]);
            self.ops.push(Op::Connect { peer, metadata });
        }
    }

    /// Sends a reply at once, and a request once its peer's connection can take it.
    fn send_message(&mut self, m: Message) {
        if let Some(token) = m.token {
            let args = wire::to_json(&m.body);
            if self.events.wants("reply") {
                self.ops.push(Op::Event { name: "reply", args: vec![Arg::Raw(args.clone())] });
            }
            self.ops.push(Op::Reply { id: token, error: None, result: Some(args) });
            return;
        }
        let max_entries = self.raft.as_ref().map_or(1, |r| r.config().max_entries_per_message);
        let peer = m.to.clone();
        match self.connections.route(m, max_entries) {
            Some(m) => {
                self.dispatch(m);
            }
            None => self.pump_lane(&peer),
        }
    }


    /// Sends the next waiting request to each idle one-at-a-time peer. Runs at the end of a
    /// round, so that what the round produced was merged into it first.
    fn pump_lanes(&mut self) {
        for peer in self.connections.ready_lanes() {
            self.pump_lane(&peer);
        }
    }

    /// Sends `peer` its oldest waiting request that is still current, if none is in flight
    /// (see `Lanes::next`).
    fn pump_lane(&mut self, peer: &str) {
        let (term, leading) = self.raft.as_ref().map_or((0, false), |r| (r.term(), r.is_leader()));
        while let Some(m) = self.connections.next(peer, term, leading) {
            let io = self.dispatch(m);
            self.connections.sending(peer, io);
        }
    }

    /// Hands one request to the wrapper; returns the id of its `send` op.
    fn dispatch(&mut self, mut m: Message) -> u32 {
        self.legacy.cap_commit(&mut m);
        let kind = m.body.type_name();
        let args = wire::to_json(&m.body);
        let sent = Sent::of(&m.body);
        if self.connections.needs_connect(&m.to) {
            if let Arg::Peer { id, metadata } = self.peer_arg(&m.to) {
                self.ops.push(Op::Connect { peer: id, metadata });
            }
        }
        if self.events.wants("outgoing call") {
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
        if self.events.wants("response") {
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
        if self.events.wants(body.type_name()) {
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
            if self.load.retry_due(self.now) {
                self.begin_load();
            }
            self.scan_timeouts();
            return;
        }
        if let Some(raft) = self.raft.as_mut() {
            raft.tick(self.now);
        }
        if self.save.retry_due(self.now) {
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
        if self.removed_self && self.apply.is_idle() && !self.save.is_busy() {
            self.stopping = Some(0);
        }
        self.publish();
    }

    /// Group commit (see `SaveQueue::hold`): until when to hold the next `Ready`, if at all.
    fn hold_save(&self) -> Option<u64> {
        let raft = self.raft.as_ref()?;
        let log = raft.log();
        // Only what the state machine has already been handed counts: entries committed since
        // reach it through the very `Ready` this would hold.
        let view = HoldView {
            unsaved: raft.has_unsaved(),
            entries_only: raft.term() == raft.durable_term() && raft.pending_install().is_none(),
            backlog: self.apply.handed().saturating_sub(raft.applied().max(self.applied_hint)),
            waiting: log.last_index().saturating_sub(log.unsaved_from() - 1),
            log_size: log.last_index().saturating_sub(log.snapshot_index()),
        };
        self.save.hold(self.clock(), &view)
    }

    fn collect_ready(&mut self) {
        loop {
            if self.save.is_busy() || self.hold_save().is_some() {
                return;
            }
            let Some(raft) = self.raft.as_mut() else { return };
            if !raft.has_ready() {
                return;
            }
            let ready = raft.ready();
            // The wrapper keeps the entries of the previous save below `truncate_from`.
            let state = ready.save.as_ref().map(|save| (to_raw(&SaveDocument(raft, save)), save.truncate_from, save.token));
            let mut membership_changed = false;
            for ev in ready.events {
                membership_changed |= matches!(ev, Event::Joined { .. } | Event::Left { .. });
                self.core_event(ev);
            }
            if membership_changed {
                self.sync_connections();
            }
            self.apply.extend(ready.committed);
            for m in ready.messages {
                self.send_message(m);
            }
            if let Some((state, from, token)) = state {
                let install_mark = self.raft.as_ref().and_then(|r| r.pending_install().map(|p| p.index));
                self.save.begin(state, from, token, ready.persisted_messages, install_mark);
                self.issue_save();
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
                    self.save.timed_out(io, now);
                }
                IoKind::Apply => {
                    self.error(code::ETIMEDOUT, "applyCommand did not call back; retrying");
                    self.apply.forget(io);
                }
                IoKind::Send { peer, kind, .. } => {
                    if self.connections.timed_out(&peer, io) {
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
        if self.save.retry_due(now) {
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
        if let Some(io) = self.apply.stop() {
            self.ios.finish(io);
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
            if self.apply.is_applying() {
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
            self.apply.clear();
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
                self.apply.drop_upto(index);
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
        for peer in self.connections.close_all() {
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
