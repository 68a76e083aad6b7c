//! Applying committed entries and answering the requests that wait for them: the glue between
//! the `ApplyQueue` and `Requests` parts, the core and the `apply` ops.

use super::*;

impl<H: Host> Driver<H> {
    pub(super) fn issue_apply(&mut self) {
        // Hold the state machine still while a snapshot of it is read, or while one is written.
        if self.snapshot_holds_applying() || self.install.is_active() || self.quiescing.is_some() {
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
                let want = command.is_some() && self.requests.wants_result(index, term);
                ApplyItem { index, command, want }
            })
            .collect();
        let t = self.persistence_timeout();
        let io = self.io(IoKind::Apply, t);
        let (first, last) = (items.first().map_or(0, |i| i.index), items.last().map_or(0, |i| i.index));
        self.apply.started(io, first, last);
        self.ops.push(Op::Apply { io, entries: items });
    }

    pub(super) fn apply_finished(&mut self, io: u32, error: Option<PluginError>, result: Option<String>) {
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
    pub(super) fn progress_to(&mut self, index: u64) {
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
    pub(super) fn apply_progress(&mut self, io: u32, index: u64) {
        if !self.apply.is_current(io) {
            return;
        }
        let deadline = self.now + self.persistence_timeout();
        self.ios.extend(io, deadline);
        self.progress_to(index);
    }

    pub(super) fn on_applied(&mut self, index: u64, term: u64) {
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

    /// Completes commands that were applied here and wait for another node to apply them, and
    /// joins whose learner is now a voter.
    pub(super) fn check_wait_for_node(&mut self) {
        let Some(raft) = self.raft.as_ref() else { return };
        for (req, index) in self.requests.wait_for_node(|node| raft.peer_applied(node)) {
            self.ops.push(Op::Done { req, error: None, index: Some(index) });
        }
        if self.requests.awaits_promotion() {
            let promoted = self.requests.promoted(self.now, |p| raft.is_committed_voter(p), |p| raft.is_active_peer(p));
            for (req, index) in promoted {
                self.ops.push(Op::Done { req, error: None, index: Some(index) });
            }
        }
    }

    /// The batch did not call back: forget it, its rest is re-sent.
    pub(super) fn apply_timed_out(&mut self, io: u32) {
        self.error(code::ETIMEDOUT, "applyCommand did not call back; retrying");
        self.apply.forget(io);
    }
}
