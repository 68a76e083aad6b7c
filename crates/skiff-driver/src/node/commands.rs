//! The user's requests: commands, and membership changes one at a time.

use super::*;

impl<H: Host> Driver<H> {
    pub(super) fn done(&mut self, req: u32, error: Option<JsError>) {
        self.ops.push(Op::Done { req, error, index: None });
    }

    pub(super) fn not_leader(&self) -> JsError {
        JsError::not_leader(self.raft.as_ref().and_then(|r| r.leader().map(str::to_string)))
    }

    pub(super) fn propose(&mut self, req: u32, command: String, timeout_ms: u64, wait_for: Option<String>) {
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
            Err(e @ ProposeError::Transferring { .. }) => self.done(req, Some(JsError::new(code::ETRANSFERRING, e.to_string()))),
            Err(e) => self.done(req, Some(JsError::new(code::ELOGFULL, e.to_string()))),
        }
    }

    pub(super) fn track(&mut self, req: u32, index: u64, term: u64, timeout_ms: u64, waiting: Waiting) {
        self.requests.track(req, index, term, self.now + timeout_ms, timeout_ms, waiting);
    }

    /// `join` (`promote`: a learner promoted once caught up, see `raft/learners.rs` in the core)
    /// or `addLearner` (a permanent learner).
    pub(super) fn add_member(&mut self, req: u32, peer: String, metadata: &str, promote: bool) {
        match Json::from_text(metadata) {
            Ok(metadata) => self.queue_membership(req, EntryKind::AddLearner { id: peer, metadata, promote }),
            Err(e) => self.done(req, Some(JsError::new(code::EBADMETADATA, format!("metadata is not JSON: {e}")))),
        }
    }

    pub(super) fn queue_membership(&mut self, req: u32, kind: EntryKind) {
        let is_leader = self.raft.as_ref().is_some_and(|r| r.is_leader());
        if !is_leader {
            let e = self.not_leader();
            return self.done(req, Some(e));
        }
        if let EntryKind::AddPeer { id, .. } | EntryKind::AddLearner { id, .. } = &kind {
            if *id == self.opts.id {
                return self.done(req, Some(JsError::new(code::EJOINSELF, "can't join self")));
            }
        }
        let deadline = self.now + self.opts.command_timeout;
        self.membership_queue.push(req, kind, deadline);
    }

    /// Proposes queued membership changes one at a time, each once the previous one committed.
    pub(super) fn drive_membership(&mut self) {
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
            let proposed = match &kind {
                // A rolling upgrade from skiff-algorithm: its nodes know no learners; join as a voter.
                EntryKind::AddLearner { id, metadata, promote: true } if self.legacy.any_old(raft.members().ids()) => {
                    EntryKind::AddPeer { id: id.clone(), metadata: metadata.clone() }
                }
                other => other.clone(),
            };
            match raft.propose_membership(proposed) {
                Ok(None) => self.done(req, None),
                Ok(Some(index)) => {
                    let waiting = match &kind {
                        EntryKind::AddLearner { id, promote: true, .. } if !raft.members().is_voter(id) => {
                            Waiting::Join { peer: id.clone() }
                        }
                        _ => Waiting::Membership,
                    };
                    self.track(req, index, term, remaining, waiting)
                }
                Err(ProposeError::NotLeader { leader }) => self.done(req, Some(JsError::not_leader(leader))),
                Err(ProposeError::MembershipChangePending | ProposeError::Transferring { .. }) => {
                    // Raced with can_change_membership, or waits for a hand-off: put it back.
                    let deadline = self.now + remaining;
                    self.membership_queue.put_back(req, kind, deadline);
                    return;
                }
                Err(e) => self.done(req, Some(JsError::new(code::ELOGFULL, e.to_string()))),
            }
        }
    }

    /// Answers the requests whose deadline passed.
    pub(super) fn expire_requests(&mut self) {
        for req in self.requests.expired(self.now) {
            let Some(p) = self.requests.untrack(req) else { continue };
            // Naming the index lets the wrapper drop a result kept for it, unless another request
            // still waits for that entry.
            let index = (!self.requests.waits_for(p.index)).then_some(p.index);
            self.ops.push(Op::Done { req, error: Some(JsError::new(code::ETIMEDOUT, p.timeout_message())), index });
        }
        for req in self.membership_queue.expire(self.now) {
            let msg = format!("timedout after {} ms waiting for an earlier membership change", self.opts.command_timeout);
            self.done(req, Some(JsError::new(code::ETIMEDOUT, msg)));
        }
    }
}
