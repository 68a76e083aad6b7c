//! The fake state machine's side of the host: the state-machine lane, which runs apply chains,
//! `removeAllState`, snapshot writes and quiesce answers one after another as the wrapper's
//! lane does (`lib/lane.js`: a late `removeAllState` cannot wipe what a later snapshot wrote),
//! and the leader's snapshot read streams.

use crate::host::OpIn;
use crate::world::{Ev, Sim};
use skiff_core::{Entry, EntryKind};
use skiff_driver::{Input, PluginError};
use std::collections::VecDeque;

/// One task of the lane.
pub enum SmJob {
    /// The apply chain of `apply` op `io` (if it is still the current chain when its turn comes).
    Apply(u32),
    Reset(u32),
    Write { io: u32, sid: u32, chunks: String, end: bool, index: u64 },
    Quiesce(u32),
}

/// An `apply` chain: its items, with the entries the core held when it handed them out.
pub struct Chain {
    io: u32,
    /// Each entry with its `want` mark.
    items: Vec<(Entry, bool)>,
    pos: usize,
}

/// Invariant: `running` is the job whose completion event is scheduled (or the apply chain whose
/// next step is); the jobs in `queue` wait for it.
#[derive(Default)]
pub struct SmLane {
    queue: VecDeque<SmJob>,
    running: bool,
    /// The current chain: a newer `apply` op, `removeAllState` or `quiesce` supersedes it (it
    /// stops before its next item).
    pub chain: Option<Chain>,
    running_job: Option<SmJob>,
}

impl Sim {
    /// The chain an `apply` op asks for, checked against the core that handed it out.
    pub fn chain_of(&self, i: usize, op: &OpIn) -> Chain {
        let node = &self.nodes[i];
        let Some(raft) = node.core() else { self.violation(format!("{}: apply before loading", node.id)) };
        let mut items = Vec::with_capacity(op.entries.len());
        for item in &op.entries {
            let Some(e) = raft.log().entry(item.index) else {
                self.violation(format!("{}: apply hands out entry {} that its log does not hold", node.id, item.index))
            };
            if e.index > raft.commit() {
                self.violation(format!("{}: apply hands out entry {} above commit {}", node.id, e.index, raft.commit()));
            }
            if node.disk.durable.term_at(e.index) != Some(e.term) {
                self.violation(format!(
                    "{}: apply hands out entry {} (term {}) that is not in the completed save",
                    node.id, e.index, e.term
                ));
            }
            let expected = match &e.kind {
                EntryKind::Command(c) => Some(c.as_str()),
                _ => None,
            };
            if item.command.map(|c| c.get()) != expected {
                self.violation(format!("{}: apply item {} carries {:?}, the log {:?}", node.id, e.index, item.command, expected));
            }
            items.push((e.clone(), item.want));
        }
        Chain { io: op.io, items, pos: 0 }
    }

    pub fn push_job(&mut self, i: usize, job: SmJob) {
        self.nodes[i].host.sm.queue.push_back(job);
        if !self.nodes[i].host.sm.running {
            self.start_job(i);
        }
    }

    fn start_job(&mut self, i: usize) {
        let Some(job) = self.nodes[i].host.sm.queue.pop_front() else { return };
        self.nodes[i].host.sm.running = true;
        let inc = self.nodes[i].inc;
        match job {
            SmJob::Apply(io) => {
                if self.nodes[i].host.sm.chain.as_ref().is_some_and(|c| c.io == io) {
                    let d = self.between(self.cfg.apply_delay);
                    self.schedule(d, Ev::ApplyStep(i, inc, io));
                } else {
                    self.finish_job(i);
                }
            }
            SmJob::Quiesce(io) => {
                let applied = self.nodes[i].disk.sm_applied.to_string();
                let d = self.between(self.cfg.apply_delay);
                self.finish_io(i, d, io, None, Some(applied));
                self.finish_job(i);
            }
            job => {
                self.nodes[i].host.sm.running_job = Some(job);
                let d = self.disk_delay();
                self.schedule(d, Ev::SmDone(i, inc));
            }
        }
    }

    fn finish_job(&mut self, i: usize) {
        let lane = &mut self.nodes[i].host.sm;
        lane.running = false;
        lane.running_job = None;
        self.start_job(i);
    }

    /// The running `removeAllState` or snapshot write calls back.
    pub fn sm_done(&mut self, i: usize) {
        let inc = self.nodes[i].inc;
        match self.nodes[i].host.sm.running_job.take() {
            Some(SmJob::Reset(io)) => {
                self.nodes[i].disk.clear_state_machine();
                self.input(i, Input::Complete { io, error: None, result: None });
            }
            Some(SmJob::Write { io, sid, chunks, end, index }) => {
                // A write queued on a stream the driver aborted never calls back.
                if !self.nodes[i].host.aborted.contains(&sid) {
                    self.write_chunks(i, &chunks, index, end);
                    self.input(i, Input::Complete { io, error: None, result: None });
                }
            }
            _ => {}
        }
        if self.nodes[i].inc == inc && self.nodes[i].driver.is_some() {
            self.finish_job(i);
        }
    }

    /// The apply chain `io` applies a few more items (each `applyCommand` persists its index with
    /// it), then reports how far it got; a superseded chain stops and frees the lane.
    pub fn apply_step(&mut self, i: usize, io: u32) {
        let inc = self.nodes[i].inc;
        let Some(chain) = self.nodes[i].host.sm.chain.as_ref().filter(|c| c.io == io) else {
            return self.finish_job(i);
        };
        let left = (chain.items.len() - chain.pos) as u64;
        let take = self.rng.range(1, left + 1);
        let mut last = None;
        for _ in 0..take {
            let chain = self.nodes[i].host.sm.chain.as_mut().expect("the chain runs");
            let (e, want) = chain.items[chain.pos].clone();
            chain.pos += 1;
            let node = &self.nodes[i];
            if e.index != node.disk.sm_applied + 1 {
                self.violation(format!(
                    "{} applies index {} but its state machine is at {} (must apply in order, exactly once)",
                    node.id, e.index, node.disk.sm_applied
                ));
            }
            let term = node.core().map_or(0, |r| r.term());
            if self.disk_fails() {
                self.nodes[i].host.sm.chain = None;
                let err = PluginError { message: Some("apply failed".into()), code: Some("EIO".into()) };
                let result = last.map(|l: u64| l.to_string());
                self.input(i, Input::Complete { io, error: Some(err), result });
                return self.finish_job_of(i, inc);
            }
            self.note_committed(i, &e, term);
            if let EntryKind::Command(c) = &e.kind {
                let cmd = c.as_str().to_string();
                match self.cmd_index.get(&cmd) {
                    Some(&at) if at != e.index => {
                        self.violation(format!("command {cmd} applied at index {} and at index {at}", e.index))
                    }
                    Some(_) => {}
                    None => {
                        self.cmd_index.insert(cmd.clone(), e.index);
                    }
                }
                self.nodes[i].disk.sm.push((e.index, cmd));
            }
            self.nodes[i].disk.sm_applied = e.index;
            self.stats.applied += 1;
            last = Some(e.index);
            if want {
                // The wrapper keeps the result for the `done` that names this index.
                self.nodes[i].host.kept.insert(e.index);
            }
        }
        let index = last.expect("at least one item");
        let finished = self.nodes[i].host.sm.chain.as_ref().is_some_and(|c| c.pos == c.items.len());
        if finished {
            self.nodes[i].host.sm.chain = None;
            self.input(i, Input::Complete { io, error: None, result: Some(index.to_string()) });
            self.finish_job_of(i, inc);
        } else {
            self.input(i, Input::ApplyProgress { io, index });
            if self.nodes[i].inc == inc && self.nodes[i].driver.is_some() {
                let d = self.between(self.cfg.apply_delay);
                self.schedule(d, Ev::ApplyStep(i, inc, io));
            }
        }
    }

    /// Frees the lane, unless the node went down (or stopped) meanwhile.
    fn finish_job_of(&mut self, i: usize, inc: u64) {
        if self.nodes[i].inc == inc && self.nodes[i].driver.is_some() {
            self.finish_job(i);
        }
    }

    /// A snapshot read: up to `max_chunks` chunks of the state machine as it is now (a driver
    /// that let it change while a read is open is caught by the follower's `check_installed`).
    pub fn snap_read(&mut self, i: usize, io: u32, sid: u32, max_chunks: usize) {
        let Some(&cursor) = self.nodes[i].host.reads.get(&sid) else { return };
        let size = self.cfg.snapshot_chunk.max(1);
        let sm = &self.nodes[i].disk.sm;
        let end = (cursor + size * max_chunks).min(sm.len());
        let chunks: Vec<String> = sm[cursor.min(end)..end]
            .chunks(size)
            .map(|c| format!("[{}]", c.iter().map(|(k, cmd)| format!("[{k},{cmd}]")).collect::<Vec<_>>().join(",")))
            .collect();
        let done = end >= sm.len();
        if done {
            self.nodes[i].host.reads.remove(&sid);
        } else {
            self.nodes[i].host.reads.insert(sid, end);
        }
        let result = format!(r#"{{"chunks":[{}],"done":{done}}}"#, chunks.join(","));
        self.input(i, Input::Complete { io, error: None, result: Some(result) });
    }

    /// A snapshot write: its chunks go into the state machine; with `end`, the stream finishes
    /// and `saveCommitIndex(index)` records where the state machine now is.
    fn write_chunks(&mut self, i: usize, chunks: &str, index: u64, end: bool) {
        let id = self.nodes[i].id.clone();
        let parsed: Vec<Vec<(u64, serde_json::Value)>> = serde_json::from_str(chunks)
            .unwrap_or_else(|e| self.violation(format!("{id}: snapshot chunks are not what the leader read: {e}")));
        for (k, v) in parsed.into_iter().flatten() {
            let cmd = v.to_string();
            let disk = &self.nodes[i].disk;
            if disk.sm.last().is_some_and(|(last, _)| *last >= k) || k > index {
                self.violation(format!("{id}: snapshot {index} holds index {k} out of order or past its end"));
            }
            if self.cmd_index.get(&cmd) != Some(&k) {
                self.violation(format!(
                    "snapshot {index} for {id} holds {cmd} at {k}, which was applied at {:?}",
                    self.cmd_index.get(&cmd)
                ));
            }
            self.nodes[i].disk.sm.push((k, cmd));
        }
        if end {
            self.nodes[i].disk.sm_applied = index;
        }
    }
}
