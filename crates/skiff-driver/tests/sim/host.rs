//! The fake host of one node: performs the ops in the driver's batches the way the JS wrapper
//! does (`lib/node/*.js`, docs/PROTOCOL.md), on the fake disk and network, and hands each IO's
//! outcome back to the driver after a simulated delay.

use crate::config::Mutation;
use crate::disk::{Saved, SavedEntry};
use crate::sm::{SmJob, SmLane};
use crate::world::{Ev, Phase, Sim};
use serde::Deserialize;
use serde_json::value::RawValue;
use skiff_core::{Body, Message};
use skiff_driver::{wire, Input, PluginError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// One op of a batch, every field of every kind optional (serde's internal tagging cannot hold
/// borrowed raw JSON, and the raw texts are what the fake needs).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpIn<'a> {
    op: &'a str,
    #[serde(default)]
    pub io: u32,
    #[serde(default, borrow)]
    state: Option<&'a RawValue>,
    #[serde(default)]
    from: Option<u64>,
    #[serde(default, borrow)]
    after: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    pub entries: Vec<ItemIn<'a>>,
    #[serde(default)]
    peer: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, borrow)]
    args: Option<&'a RawValue>,
    #[serde(default)]
    id: u64,
    #[serde(default)]
    error: Option<ErrIn>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    req: u32,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    sid: u32,
    #[serde(default)]
    max_chunks: usize,
    #[serde(default, borrow)]
    chunks: Option<&'a RawValue>,
    #[serde(default)]
    end: bool,
}

#[derive(Deserialize)]
pub struct ItemIn<'a> {
    pub index: u64,
    #[serde(default, borrow)]
    pub command: Option<&'a RawValue>,
    /// A local `command()` waits for this item: the wrapper keeps its result for the `done`.
    #[serde(default)]
    pub want: bool,
}

/// A coded error as the driver hands it to the host.
#[derive(Deserialize, Clone, Debug)]
pub struct ErrIn {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: String,
}

/// An op a save holds back until it completed, with what it claims as of when it was produced.
struct Held {
    text: String,
    claim: Option<(u64, u64)>,
}

struct PendingSave {
    io: u32,
    saved: Saved,
    after: Vec<Held>,
}

/// What one incarnation of the wrapper holds in memory; a crash loses it.
#[derive(Default)]
pub struct HostState {
    /// The log entries of the last `saveMeta`, for the next one's `from`.
    pub saved_entries: Arc<Vec<Arc<SavedEntry>>>,
    /// `saveMeta` calls, one at a time: the one in flight first.
    saves: VecDeque<PendingSave>,
    /// The state-machine lane: apply chains, `removeAllState`, snapshot writes (see sm.rs).
    pub sm: SmLane,
    /// Snapshot read streams: how many state machine items each has handed out.
    pub reads: BTreeMap<u32, usize>,
    /// Snapshot write streams the driver gave up on.
    pub aborted: BTreeSet<u32>,
    pub connected: BTreeSet<String>,
    /// Requests from peers waiting for a reply: id → (sender, its incarnation, its send io, type).
    pub replies: BTreeMap<u64, (usize, u64, u32, String)>,
    pub next_reply: u64,
    /// Indexes of applied items marked `want` whose result waits for the `done` that names it.
    pub kept: BTreeSet<u64>,
}

const BAD_CODES: [&str; 7] = ["EBADMESSAGE", "EBADSENDER", "EBADSTATE", "EBADRESULT", "EINTERNAL", "EBADMETADATA", "EINVALIDOPTIONS"];

impl Sim {
    /// Runs a batch the driver of node `i` returned, op by op, in order.
    pub fn run_batch(&mut self, i: usize, batch: &str) {
        // One pass over the batch: each op borrows its raw parts from `batch`.
        let ops: Vec<OpIn> =
            serde_json::from_str(batch).unwrap_or_else(|e| self.violation(format!("a batch of unexpected shape ({e}): {batch}")));
        for op in &ops {
            if self.nodes[i].driver.is_none() {
                return;
            }
            if !matches!(op.op, "send" | "reply" | "event") {
                trace!(self, "{} op {} io={}", self.nodes[i].id, op.op, op.io);
            }
            self.perform(i, op, None);
        }
    }

    fn parse_op<'a>(&self, text: &'a str) -> OpIn<'a> {
        serde_json::from_str(text).unwrap_or_else(|e| self.violation(format!("an op of unexpected shape ({e}): {text}")))
    }

    /// What a successful AppendEntries answer claims node `i` holds: (matchIndex, its term in the
    /// log as the answer was produced, which is now).
    fn claim_of(&self, i: usize, body: &Body) -> Option<(u64, u64)> {
        let raft = self.nodes[i].core()?;
        match body {
            Body::AppendEntriesResponse(r) if r.success && r.match_index > raft.log().snapshot_index() => {
                Some((r.match_index, raft.log().term(r.match_index).unwrap_or(u64::MAX)))
            }
            _ => None,
        }
    }

    /// The claim of a reply op as it is produced (see `claim_of`); `None` for other ops.
    fn claim_of_op(&self, i: usize, op: &OpIn) -> Option<(u64, u64)> {
        if op.op != "reply" {
            return None;
        }
        let kind = &self.nodes[i].host.replies.get(&op.id)?.3;
        let body = wire::response(kind, op.result?.get()).ok()?;
        self.claim_of(i, &body)
    }

    /// An IO of node `i`'s current incarnation finishes after `delay`.
    pub fn finish_io(&mut self, i: usize, delay: u64, io: u32, error: Option<PluginError>, result: Option<String>) {
        let inc = self.nodes[i].inc;
        self.schedule(delay, Ev::Io(i, inc, Input::Complete { io, error, result }));
    }

    pub fn disk_delay(&mut self) -> u64 {
        self.between(self.cfg.disk_delay)
    }

    /// A disk operation that fails now and then while faults are on.
    pub fn disk_fails(&mut self) -> bool {
        self.phase == Phase::Faults && self.chance(self.cfg.disk_fail_permille)
    }

    /// Performs one op. `held`: the claim of an op a save held back, taken when it was produced
    /// (`None`: the op is performed as it is produced).
    fn perform(&mut self, i: usize, op: &OpIn, held: Option<Option<(u64, u64)>>) {
        let io = op.io;
        match op.op {
            "loadMeta" => {
                let text = self.nodes[i].disk.durable.text();
                let d = self.disk_delay();
                self.finish_io(i, d, io, None, Some(text));
            }
            "lastApplied" => {
                let applied = self.nodes[i].disk.sm_applied.to_string();
                let d = self.disk_delay();
                self.finish_io(i, d, io, None, Some(applied));
            }
            "saveMeta" => self.save_meta(i, op),
            "connect" => {
                let peer = op.peer.clone().unwrap_or_default();
                self.nodes[i].host.connected.insert(peer);
            }
            "disconnect" => {
                let peer = op.peer.as_deref().unwrap_or_default();
                self.nodes[i].host.connected.remove(peer);
            }
            "send" => self.send_op(i, op),
            "reply" => self.reply_op(i, op, held),
            "event" => self.event_op(i, op),
            "done" => self.request_done(i, op.req, op.error.clone(), op.index),
            "apply" => {
                let chain = self.chain_of(i, op);
                self.nodes[i].host.sm.chain = Some(chain);
                self.push_job(i, SmJob::Apply(io));
            }
            "snapshotRead" => {
                self.nodes[i].host.reads.entry(op.sid).or_insert(0);
                let (inc, d) = (self.nodes[i].inc, self.disk_delay());
                self.schedule(d, Ev::SnapRead(i, inc, io, op.sid, op.max_chunks.max(1)));
            }
            "snapshotClose" => {
                self.nodes[i].host.reads.remove(&op.sid);
            }
            "snapshotReset" => {
                // `removeAllState` supersedes the apply chain (`lib/node/snapshot-io.js`).
                self.nodes[i].host.sm.chain = None;
                self.push_job(i, SmJob::Reset(io));
            }
            "snapshotWrite" => {
                let chunks = op.chunks.map_or("[]".to_string(), |c| c.get().to_string());
                let index = op.index.unwrap_or(0);
                self.push_job(i, SmJob::Write { io, sid: op.sid, chunks, end: op.end, index });
            }
            "snapshotAbort" => {
                self.nodes[i].host.aborted.insert(op.sid);
            }
            "quiesce" => {
                // The chain stops before its next item; the answer waits for the lane.
                self.nodes[i].host.sm.chain = None;
                self.push_job(i, SmJob::Quiesce(io));
            }
            "stopped" => self.stopped(i),
            other => self.violation(format!("{}: unknown op {other:?}", self.nodes[i].id)),
        }
    }

    fn save_meta(&mut self, i: usize, op: &OpIn) {
        let state = op.state.map_or("null", |s| s.get());
        let saved = Saved::parse(state, op.from, &self.nodes[i].host.saved_entries)
            .unwrap_or_else(|e| self.violation(format!("{}: {e}", self.nodes[i].id)));
        self.nodes[i].host.saved_entries = saved.entries.clone();
        self.stats.saves += 1;
        let mut after = Vec::with_capacity(op.after.len());
        for raw in &op.after {
            let op = self.parse_op(raw.get());
            let claim = self.claim_of_op(i, &op);
            after.push(Held { text: raw.get().to_string(), claim });
        }
        if self.cfg.mutation == Some(Mutation::SendBeforeSave) {
            for h in std::mem::take(&mut after) {
                self.release(i, &h);
            }
        }
        let host = &mut self.nodes[i].host;
        host.saves.push_back(PendingSave { io: op.io, saved, after });
        if host.saves.len() == 1 {
            let (inc, d) = (self.nodes[i].inc, self.disk_delay());
            self.schedule(d, Ev::SaveDone(i, inc));
        }
    }

    fn release(&mut self, i: usize, held: &Held) {
        let op = self.parse_op(&held.text);
        self.perform(i, &op, Some(held.claim));
    }

    /// The `saveMeta` in flight called back: durable (then its messages go), or failed (then the
    /// requests among them are refused).
    pub fn save_done(&mut self, i: usize) {
        let Some(save) = self.nodes[i].host.saves.pop_front() else { return };
        if self.disk_fails() {
            for h in &save.after {
                let op = self.parse_op(&h.text);
                if op.op == "reply" {
                    if let Some((to, inc, io, _)) = self.nodes[i].host.replies.remove(&op.id) {
                        let err = ("not saved".to_string(), "EPERSISTENCE".to_string());
                        self.respond(i, to, inc, io, Some(err), None);
                    }
                }
            }
            let err = PluginError { message: Some("disk full".into()), code: Some("EIO".into()) };
            self.input(i, Input::Complete { io: save.io, error: Some(err), result: None });
        } else {
            self.nodes[i].disk.commit(save.saved);
            for h in &save.after {
                self.release(i, h);
            }
            self.input(i, Input::Complete { io: save.io, error: None, result: None });
        }
        if self.nodes[i].driver.is_some() && !self.nodes[i].host.saves.is_empty() {
            let (inc, d) = (self.nodes[i].inc, self.disk_delay());
            self.schedule(d, Ev::SaveDone(i, inc));
        }
    }

    fn send_op(&mut self, i: usize, op: &OpIn) {
        let (kind, args) = (op.kind.as_deref().unwrap_or_default(), op.args.map_or("null", |a| a.get()));
        let peer = op.peer.clone().unwrap_or_default();
        let body = match wire::request(kind, args) {
            Ok(body) => body,
            Err(e) => self.violation(format!("{} sends a malformed {kind}: {e}", self.nodes[i].id)),
        };
        let m = Message { from: self.nodes[i].id.clone(), to: peer.clone(), token: None, body };
        self.check_send(i, &m, None);
        if !self.nodes[i].host.connected.contains(&peer) {
            let err = PluginError { message: Some("not connected".into()), code: Some("ENOTCONNECTED".into()) };
            return self.finish_io(i, 0, op.io, Some(err), None);
        }
        self.transmit(i, &peer, op.io, kind, args);
    }

    fn reply_op(&mut self, i: usize, op: &OpIn, held: Option<Option<(u64, u64)>>) {
        let Some((to, inc, io, kind)) = self.nodes[i].host.replies.remove(&op.id) else {
            self.violation(format!("{} replies to request {}, which is not waiting for a reply", self.nodes[i].id, op.id))
        };
        if let Some(result) = op.result {
            let body = wire::response(&kind, result.get())
                .unwrap_or_else(|e| self.violation(format!("{} replies a malformed {kind}: {e}", self.nodes[i].id)));
            let claim = held.unwrap_or_else(|| self.claim_of(i, &body));
            let m = Message { from: self.nodes[i].id.clone(), to: self.nodes[to].id.clone(), token: None, body };
            self.check_send(i, &m, claim);
        }
        let error = op.error.as_ref().map(|e| (e.message.clone(), e.code.clone()));
        self.respond(i, to, inc, io, error, op.result.map(|r| r.get().to_string()));
    }

    /// A request from a peer reaches node `i`: the driver answers it with a `reply` op.
    pub fn receive(&mut self, i: usize, from: usize, from_inc: u64, io: u32, kind: String, args: String) {
        let host = &mut self.nodes[i].host;
        host.next_reply += 1;
        let reply = host.next_reply;
        host.replies.insert(reply, (from, from_inc, io, kind.clone()));
        let peer = Some(self.nodes[from].id.clone());
        self.input(i, Input::Receive { reply, kind, args, peer });
    }

    /// Delivers a request from `from` (which may be down: a peer the test plays) to `i` now.
    pub fn inject(&mut self, from: usize, i: usize, body: Body) {
        let kind = body.type_name().to_string();
        let args = wire::to_json(&body).0;
        let inc = self.nodes[from].inc;
        self.receive(i, from, inc, 0, kind, args);
        self.check_all();
    }

    fn event_op(&mut self, i: usize, op: &OpIn) {
        let name = op.name.as_deref().unwrap_or_default();
        let args: Vec<serde_json::Value> = op.args.and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or_default();
        match name {
            "warning" | "error" => {
                let code = args.first().and_then(|a| a["code"].as_str()).unwrap_or_default();
                if BAD_CODES.contains(&code) {
                    self.violation(format!("{} emitted {name} {code}: {}", self.nodes[i].id, args[0]["message"]));
                }
            }
            "snapshot installed" => {
                let index = args.first().and_then(|a| a.as_u64()).unwrap_or(0);
                self.nodes[i].installs += 1;
                self.stats.snapshots_installed += 1;
                self.check_installed(i, index);
            }
            _ => {}
        }
    }
}
