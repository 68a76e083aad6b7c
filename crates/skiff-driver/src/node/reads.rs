//! `read()`: linearizable reads through the core's ReadIndex, answered once the local state
//! machine may serve them (the `Reads` part holds them meanwhile).

use super::*;
use skiff_core::{ReadError, ReadFailure, ReadState};

impl<H: Host> Driver<H> {
    pub(super) fn read(&mut self, req: u32, lease: bool, timeout_ms: u64) {
        if !self.reads.has_room() {
            return self.done(req, Some(JsError::new(code::EBUSY, "too many reads are waiting")));
        }
        let timeout_ms = if timeout_ms == 0 { self.opts.command_timeout } else { timeout_ms };
        self.reads.track(req, lease, self.now + timeout_ms, timeout_ms);
        self.ask_read(req, lease);
    }

    /// Hands a tracked read to the core; answers it at once when the core cannot take it.
    fn ask_read(&mut self, req: u32, lease: bool) {
        let refused = match self.raft.as_mut() {
            None => Some(JsError::not_leader(None)),
            // A follower read goes to the leader as a ReadIndex, which skiff-algorithm lacks.
            Some(raft) if !raft.is_leader() && raft.leader().is_some_and(|l| !self.legacy.is_modern(l)) => {
                let leader = raft.leader().map(str::to_string);
                Some(JsError::not_leader(leader))
            }
            Some(raft) => match raft.read_index(u64::from(req), lease) {
                Ok(()) => None,
                Err(ReadError::Busy) => Some(JsError::new(code::EBUSY, "too many reads are waiting")),
                Err(ReadError::NotLeader { leader }) => Some(JsError::not_leader(leader)),
                Err(ReadError::Refused { reason }) => Some(JsError::new(code::ENOTLEADER, reason)),
            },
        };
        if let Some(e) = refused {
            self.reads.finish(req);
            self.done(req, Some(e));
        }
    }

    /// The core's answers from one `Ready`.
    pub(super) fn reads_answered(&mut self, reads: Vec<ReadState>, failures: Vec<ReadFailure>) {
        for r in reads {
            let Ok(req) = u32::try_from(r.id) else { continue };
            if self.reads.finish(req).is_some() {
                self.done(req, None);
            }
        }
        for f in failures {
            let Ok(req) = u32::try_from(f.id) else { continue };
            match f.error {
                ReadError::Busy => {
                    if self.reads.finish(req).is_some() {
                        self.done(req, Some(JsError::new(code::EBUSY, "too many reads are waiting")));
                    }
                }
                // The leader changed under it: ask again once one is known (`drive_reads`).
                ReadError::NotLeader { .. } | ReadError::Refused { .. } => self.reads.park(req),
            }
        }
    }

    /// Answers the reads past their deadline, and asks again for parked ones once a leader is
    /// known.
    pub(super) fn drive_reads(&mut self) {
        for (req, timeout_ms) in self.reads.expire(self.now) {
            self.done(req, Some(JsError::new(code::ETIMEDOUT, format!("read timed out after {timeout_ms} ms"))));
        }
        if self.reads.any_parked() && self.raft.as_ref().is_some_and(|r| r.leader().is_some()) {
            for (req, lease) in self.reads.unpark_all() {
                self.ask_read(req, lease);
            }
        }
    }
}
