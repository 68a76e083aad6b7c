//! Leadership hand-off: `transferLeadership()`, and `stop()` on a leader, which hands off first
//! unless `transferOnStop` is false (the `Handoff` part holds the requests meanwhile).

use super::*;
use skiff_core::TransferError;

impl<H: Host> Driver<H> {
    pub(super) fn transfer(&mut self, req: u32, peer: Option<String>) {
        if let (Some(raft), Some(p)) = (self.raft.as_ref(), peer.as_deref()) {
            if !raft.is_leader() && raft.leader() == Some(p) {
                return self.done(req, None);
            }
        }
        match self.begin_transfer(peer.as_deref()) {
            Ok(()) => {
                let deadline = self.now + self.opts.max_election_timeout;
                self.handoff.wait(req, deadline);
            }
            Err(e) => self.done(req, Some(e)),
        }
    }

    /// Asks the core to hand over to `peer` (or the best voter) and notes the target.
    fn begin_transfer(&mut self, peer: Option<&str>) -> Result<(), JsError> {
        let Some(raft) = self.raft.as_mut() else { return Err(JsError::not_leader(None)) };
        match raft.transfer_leader(peer) {
            Ok(target) if self.legacy.is_modern(&target) => {
                self.handoff.begin(target);
                Ok(())
            }
            Ok(target) => {
                raft.abort_transfer();
                Err(JsError::new(code::ENOVOTER, format!("{target} may run skiff-algorithm, which cannot take over on request")))
            }
            Err(TransferError::NotLeader { leader }) => Err(JsError::not_leader(leader)),
            Err(TransferError::NoTarget(why)) => Err(JsError::new(code::ENOVOTER, why)),
        }
    }

    /// `stop()`: a leader hands off first, for at most one election timeout.
    pub(super) fn request_stop(&mut self, req: u32) {
        let leading = self.raft.as_ref().is_some_and(|r| r.is_leader());
        if self.opts.transfer_on_stop && leading && self.begin_transfer(None).is_ok() {
            let deadline = self.now + self.opts.max_election_timeout;
            self.handoff.wait_to_stop(req, deadline);
            return;
        }
        self.stopping = Some(req);
    }

    /// Answers hand-off requests whose target leads or whose time ran out.
    pub(super) fn drive_handoff(&mut self) {
        if self.handoff.is_idle() {
            return;
        }
        let id = self.opts.id.as_str();
        let leader = self.raft.as_ref().and_then(|r| r.leader().filter(|l| *l != id).map(str::to_string));
        let settled = self.handoff.settle(self.now, leader.as_deref());
        for req in settled.done {
            self.done(req, None);
        }
        for req in settled.timed_out {
            let message = format!("the target did not take over within {} ms", self.opts.max_election_timeout);
            self.done(req, Some(JsError::new(code::ETIMEDOUT, message)));
        }
        if let Some(req) = settled.stop {
            self.stopping = Some(req);
        }
    }
}
