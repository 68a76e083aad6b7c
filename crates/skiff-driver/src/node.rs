//! The driver: owns one core and performs its IO through the JS wrapper.
//!
//! Inputs from JS (proposals, plugin results, peer messages) run synchronously on the calling
//! thread and hand back the operations they produced at once: a thread hop costs tens of
//! microseconds each way, and a commit takes several such steps. Timers (elections, heartbeats,
//! IO timeouts) run on a tokio task (`run_timers`); what they produce waits in the same ordered
//! queue and a threadsafe-function wake-up tells JS to `drain` it. So every operation reaches JS
//! exactly once and in the order the driver produced it, whoever picks it up.

mod applying;
mod commands;
mod handoff;
mod messages;
mod notify;
mod reads;
mod saving;
mod snapshots;
#[cfg(test)]
mod tests;

pub use super::host::{Clock, Host, SystemClock};

use super::apply::ApplyQueue;
use super::code;
use super::connections::Connections;
use super::events::{coded_arg, Events};
use super::handoff::Handoff;
use super::input::{Input, PluginError};
use super::install::{Fit, Install, Written};
use super::io::{IoKind, IoTable};
use super::legacy::{Legacy, Sent};
use super::load::Load;
use super::reads::Reads;
use super::op::{write_batch, ApplyItem, Arg, JsError, JsonText, Op};
use super::options::NodeOptions;
use super::requests::{MembershipQueue, Outcome, Requests, Waiting};
use super::save::{HoldView, SaveQueue};
use super::snapshot_send::{Transfers, SNAPSHOT_BYTES, SNAPSHOT_CHUNKS};
use super::status::Status;
use super::wire;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use skiff_core::persisted::{restore, SaveDocument};
use skiff_core::{Body, EntryKind, Event, Json, Membership, Message, ProposeError, Raft, Role};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// One node's runtime. It owns the core and the parts that hold the runtime's state (each with
/// its invariants: `Load`, `SaveQueue`, `ApplyQueue`, `Requests`, `Connections`, `Transfers`,
/// `Install`, `IoTable`, `Events`) and only routes between them: inputs and IO callbacks to the
/// part that issued them, the core's `Ready` to the save, apply and send paths.
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

    /// The core, once the persisted state is loaded (`load` holds the load until then).
    raft: Option<Raft>,
    load: Load,
    /// Operations for JS, in the order they were produced, until a batch takes them.
    ops: Vec<Op>,
    /// IO handed to JS and not yet called back.
    ios: IoTable,

    /// The save under way (one at a time: no `Ready` is taken while it is) and group commit.
    save: SaveQueue,
    /// Committed entries on their way to the state machine.
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
    /// Which events JS listens to.
    events: Events,
    /// The core said this leader's removal committed: stop once what it saves and applies is done.
    removed_self: bool,
    /// A stop was asked for (request id, 0 for the node's own): the next settle ends the node.
    stopping: Option<u32>,
    /// `read()` calls waiting for the core.
    reads: Reads,
    /// `transferLeadership()` calls, and a `stop()` that hands off first.
    handoff: Handoff,
}

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
}


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
            reads: Reads::default(),
            handoff: Handoff::default(),
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
        let mut out = String::new();
        write_batch(&self.ops, &mut out);
        self.ops.clear();
        Some(out)
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
        for deadline in [self.reads.next_deadline(), self.handoff.next_deadline()].into_iter().flatten() {
            at = at.min(deadline);
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

    /// How long a snapshot chunk may go unanswered: the follower answers only once it has
    /// written the chunk into its state machine, a persistence call that may take up to its
    /// `commandTimeout`, so the network's share alone (`send_timeout`) would give up on a
    /// transfer that is merely writing, and start it over, again and again, on a busy follower.
    fn snapshot_chunk_timeout(&self) -> u64 {
        self.send_timeout() + self.persistence_timeout()
    }

    // ----- inputs -----

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose { req, command, timeout_ms, wait_for } => self.propose(req, command, timeout_ms, wait_for),
            Input::Join { req, peer, metadata } => self.add_member(req, peer, &metadata, true),
            Input::AddLearner { req, peer, metadata } => self.add_member(req, peer, &metadata, false),
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
            Input::Read { req, lease, timeout_ms } => self.read(req, lease, timeout_ms),
            Input::Transfer { req, peer } => self.transfer(req, peer),
            Input::Stop { req } => self.request_stop(req),
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
            IoKind::SnapshotReset => self.install_reset_finished(io, error),
            IoKind::SnapshotWrite => self.install_write_finished(io, error),
            IoKind::Quiesce => self.quiesce_finished(io, error, result),
            IoKind::SnapshotOpen { peer, sid } => self.snapshot_opened(peer, sid, error, result),
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
        self.drive_reads();
        self.drive_handoff();
        self.scan_timeouts();
        self.pump_lanes();
        if self.removed_self && self.apply.is_idle() && !self.save.is_busy() {
            self.stopping = Some(0);
        }
        self.publish();
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
            // The wrapper keeps the entries of the previous save below `truncate_from`. The
            // install mark is read with the document, before the events below can begin an
            // install: a save counts as marking an install only if its document records it.
            let state = ready.save.as_ref().map(|save| {
                let install_mark = raft.pending_install().map(|p| p.index);
                (JsonText(SaveDocument(raft, save).to_json_text()), save.truncate_from, save.token, install_mark)
            });
            self.reads_answered(ready.reads, ready.read_failures);
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
            if let Some((state, from, token, install_mark)) = state {
                self.save.begin(state, from, token, ready.persisted_messages, install_mark);
                self.issue_save();
            }
            // Proposals that arrived while this ran are picked up in the next round.
            self.drive_membership();
        }
    }

    /// IO that did not call back in time goes to the part that issued it; then each part
    /// expires what it holds (stalled transfers, a save to retry, requests past their deadline).
    fn scan_timeouts(&mut self) {
        if !self.ios.scan_due(self.now) {
            return;
        }
        for io in self.ios.expired(self.now) {
            let Some(kind) = self.ios.finish(io) else { continue };
            match kind {
                IoKind::LoadMeta | IoKind::LastApplied => {
                    self.load_failed("loading persisted state", "the persistence plugin did not call back".into(), code::ETIMEDOUT)
                }
                IoKind::Save => self.save_timed_out(io),
                IoKind::Apply => self.apply_timed_out(io),
                IoKind::Send { peer, kind, .. } => self.send_timed_out(io, peer, kind),
                IoKind::SnapshotRead { peer } => self.snapshot_read_timed_out(peer),
                IoKind::Quiesce => self.quiesce_timed_out(io),
                IoKind::SnapshotOpen { peer, sid } => self.snapshot_open_timed_out(peer, sid),
                // (one of an install abandoned since says nothing of the one under way)
                IoKind::SnapshotReset | IoKind::SnapshotWrite if self.install.owns(io) => {
                    self.install_failed(code::ETIMEDOUT, "the persistence plugin did not call back while installing a snapshot".into());
                }
                IoKind::SnapshotReset | IoKind::SnapshotWrite => {}
            }
        }
        self.expire_transfers();
        if self.save.retry_due(self.now) {
            self.issue_save();
        }
        self.expire_requests();
    }

    fn publish(&mut self) {
        let Some(raft) = self.raft.as_ref() else { return };
        self.status.lock().observe(raft, &self.transfers, self.now);
    }

    fn finish_stop(&mut self, req: u32) {
        self.publish();
        let err = JsError::new(code::ESTOPPED, "node stopped");
        let reads = self.reads.clear();
        let handoffs = self.handoff.clear();
        for r in self.requests.clear().into_iter().chain(reads).chain(handoffs) {
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

/// Read-only views for a simulation that checks the core's invariants from outside (nothing here
/// changes the driver, so a simulation drives exactly what ships).
impl<H: Host> Driver<H> {
    /// The core, once the persisted state is loaded (`None` while loading).
    pub fn core(&self) -> Option<&Raft> {
        self.raft.as_ref()
    }
}
