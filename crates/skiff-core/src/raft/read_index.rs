//! Linearizable reads that write nothing to the log (Raft thesis §6.4): ReadIndex on the leader,
//! the check-quorum lease, and follower reads that ask the leader for its read index.
//!
//! A read on the leader takes the commit index as its read index, but only once the leader has
//! committed an entry of its own term (before that its commit index may be behind what earlier
//! leaders committed), then confirms it still leads with a quorum round: every broadcast of
//! AppendEntries (the heartbeats, and one sent at once for a new round) carries the leader's
//! latest round number (`readCtx`) and every answer echoes it, so the heartbeats are the round
//! and all reads waiting at once share one. A read is served once the
//! state machine applied its index.
//!
//! With `lease`, a leader whose latest round a majority echoed skips the round while that round
//! is younger than the lease. The lease is 90% of `minElectionTimeout`, measured from when the
//! leader opened the round, which is before any follower heard an AppendEntries carrying it; a
//! follower refuses votes for `minElectionTimeout` after hearing from its leader. (Measuring
//! from when an answer arrived is not safe: an answer delayed in the network would stretch the
//! lease past the follower's promise, and a deposed leader would serve a stale read; the driver
//! simulation's seed 57 did.) A lease read with no such round takes a round, which starts a new
//! lease. So it assumes clocks run at rates within 10% of each other,
//! and that a follower that restarts stays down for the lease (a restarted node has forgotten
//! its leader and votes at once). A leader that sent TimeoutNow in its term has invited a vote
//! that ignores the lease, so it takes no lease reads for the rest of that term.
//!
//! A follower sends a ReadIndex to its leader, which runs the same round and answers with the
//! read index; the follower serves the read once it applied that index. One ReadIndex is in
//! flight per follower at a time, for every read that arrived before it went; the reads that
//! arrive meanwhile go with the next. One that gets no answer within `maxElectionTimeout`
//! fails its reads (the runtime asks again), so a lost message strands nothing.

use super::{Raft, MAX_SAFE};
use crate::message::{Body, ReadIndex, ReadIndexResponse};
use crate::ready::{ReadFailure, ReadState};
use std::collections::{BTreeMap, VecDeque};

/// Reads waiting on one node (its own, and on a leader its followers'), at most: past it a read
/// is refused as busy, so a flood of requests cannot grow memory.
pub const MAX_PENDING_READS: usize = 10_000;

/// How many of the latest rounds keep their opening time for the lease: a round a majority
/// echoes is among the latest few (older ones only mean a read takes a round).
const OPENED_KEPT: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This node could not confirm a leader for the read: it leads no more, or the leader it
    /// asked changed. `leader` is the one it knows now, if any.
    #[error("not the leader")]
    NotLeader { leader: Option<String> },
    /// Too many reads are waiting (`MAX_PENDING_READS`).
    #[error("too many reads are waiting")]
    Busy,
    /// The leader refused the follower's read.
    #[error("the leader refused the read: {reason}")]
    Refused { reason: String },
}

/// Who asked for a read the leader is confirming.
#[derive(Debug)]
enum Origin {
    /// A read on this node: served here.
    Local { id: u64 },
    /// A follower's ReadIndex: answered with the index.
    Peer { peer: String, id: u64, token: Option<u64> },
}

/// Follower: the ReadIndex in flight to the leader.
#[derive(Debug)]
struct Asked {
    /// The ReadIndex's id.
    batch: u64,
    leader: String,
    term: u64,
    sent_at: u64,
    /// The reads it asks for.
    ids: Vec<u64>,
}

/// A read the leader is confirming.
#[derive(Debug)]
struct LeaderRead {
    origin: Origin,
    /// The read index; 0 until the leader committed an entry of its own term.
    index: u64,
    /// The round that confirms it; 0 until `index` is set.
    seq: u64,
}

/// The reads of one node, waiting for a round, an answer or the state machine (etcd's readOnly).
///
/// Invariants: `confirming` is ordered by `seq`, the reads without one (index 0) last, as they
/// get one all at once; every seq is at most `seq`; `acked` holds only answers of term `term`.
#[derive(Debug, Default)]
pub(super) struct ReadOnly {
    /// The latest round; every broadcast AppendEntries carries it as `readCtx`.
    seq: u64,
    /// A round was opened that no AppendEntries carried yet: broadcast heartbeats now.
    need_round: bool,
    /// The term `acked` was collected in.
    term: u64,
    /// The highest `readCtx` each peer echoed in `term`.
    acked: BTreeMap<String, u64>,
    /// Leader: reads waiting for their round (or for a commit in this term), oldest first.
    confirming: VecDeque<LeaderRead>,
    /// Follower: reads waiting for the next ReadIndex.
    unasked: Vec<u64>,
    /// Follower: the ReadIndex in flight.
    asked: Option<Asked>,
    /// Follower: the id of the last ReadIndex sent. Starts at a random value
    /// (`start_batches`): an answer to a ReadIndex of an earlier run of this node, still on its
    /// way, must not pass for the answer to a new one (it would carry an older index).
    batch: u64,
    /// Local reads with a confirmed index, waiting for the state machine to apply it.
    applying: Vec<ReadState>,
    /// The term in which this node sent TimeoutNow: no lease reads in it (see the module docs).
    lease_revoked_term: u64,
    /// (round, time it was opened) of the latest rounds, oldest first, at most `OPENED_KEPT`:
    /// a lease runs from the opening of the round a majority echoed.
    opened: VecDeque<(u64, u64)>,
    ready: Vec<ReadState>,
    failed: Vec<ReadFailure>,
}

impl ReadOnly {
    fn pending(&self) -> usize {
        self.confirming.len() + self.unasked.len() + self.asked.as_ref().map_or(0, |a| a.ids.len()) + self.applying.len()
    }

    /// The `readCtx` to stamp on a broadcast AppendEntries (see `Raft::send_append`).
    pub(super) fn ctx(&self) -> Option<u64> {
        (self.seq > 0).then_some(self.seq)
    }

    /// Sets where ReadIndex ids start (see `batch`).
    pub(super) fn start_batches(&mut self, at: u64) {
        self.batch = at;
    }

    /// Opens a round at time `now` (or joins the one not yet sent). Returns its number.
    pub(super) fn open_round(&mut self, now: u64) -> u64 {
        if !self.need_round {
            self.fresh_round(now);
        }
        self.seq
    }

    /// Opens a round at time `now` that no AppendEntries built so far carries (a transfer's).
    pub(super) fn fresh_round(&mut self, now: u64) -> u64 {
        self.seq += 1;
        self.need_round = true;
        if self.opened.len() >= OPENED_KEPT {
            self.opened.pop_front();
        }
        self.opened.push_back((self.seq, now));
        self.seq
    }

    /// When round `seq` was opened, if it is among the latest ones.
    fn opened_at(&self, seq: u64) -> Option<u64> {
        self.opened.iter().rev().find(|(s, _)| *s == seq).map(|(_, at)| *at)
    }

    pub(super) fn round_wanted(&self) -> bool {
        self.need_round
    }

    pub(super) fn take_round(&mut self) -> bool {
        std::mem::take(&mut self.need_round)
    }

    pub(super) fn revoke_lease(&mut self, term: u64) {
        self.lease_revoked_term = term;
    }

    pub(super) fn has_output(&self) -> bool {
        !self.ready.is_empty() || !self.failed.is_empty()
    }

    pub(super) fn take_output(&mut self) -> (Vec<ReadState>, Vec<ReadFailure>) {
        (std::mem::take(&mut self.ready), std::mem::take(&mut self.failed))
    }
}

impl Raft {
    /// Asks for a linearizable read with the caller's `id`. The answer comes in a later
    /// [`crate::Ready`]: `reads` once the local state machine may serve it, or `read_failures`.
    /// `lease`: on a leader, use the check-quorum lease instead of a round when it holds.
    pub fn read_index(&mut self, id: u64, lease: bool) -> Result<(), ReadError> {
        if self.reads.pending() >= MAX_PENDING_READS {
            return Err(ReadError::Busy);
        }
        if self.ensure_leader().is_ok() {
            if lease && self.lease_holds() && self.committed_in_term() {
                self.reads.applying.push(ReadState { id, index: self.commit });
            } else {
                self.reads.confirming.push_back(LeaderRead { origin: Origin::Local { id }, index: 0, seq: 0 });
            }
        } else if !self.is_leader() && self.leader.is_some() {
            self.reads.unasked.push(id);
        } else {
            return Err(ReadError::NotLeader { leader: None });
        }
        self.settle_reads();
        Ok(())
    }

    /// Whether the leader's reads may skip the round: a majority echoed a round of this term
    /// opened within the lease (see the module docs).
    fn lease_holds(&self) -> bool {
        let lease = self.cfg.min_election_timeout - self.cfg.min_election_timeout / 10;
        let confirmed = self.confirmed_round();
        self.cfg.check_quorum
            && self.reads.lease_revoked_term != self.term
            && confirmed > 0
            && self.reads.opened_at(confirmed).is_some_and(|at| self.now < at + lease)
    }

    /// Whether this leader's commit index covers everything committed before its term.
    fn committed_in_term(&self) -> bool {
        self.log.term(self.commit) == Some(self.term)
    }

    /// Leader: a follower's ReadIndex. Answered once its round confirms it, or refused now.
    pub(super) fn handle_read_index(&mut self, from: String, token: Option<u64>, r: ReadIndex) {
        let refusal = if self.ensure_leader().is_err() {
            Some("not the leader".to_string())
        } else if !self.progress.contains_key(&from) {
            Some("not a member this leader replicates to".to_string())
        } else if self.reads.pending() >= MAX_PENDING_READS {
            Some("too many reads are waiting".to_string())
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.answer_read(from, token, r.id, Err(reason));
            return;
        }
        self.reads.confirming.push_back(LeaderRead { origin: Origin::Peer { peer: from, id: r.id, token }, index: 0, seq: 0 });
    }

    fn answer_read(&mut self, to: String, token: Option<u64>, id: u64, result: Result<u64, String>) {
        let (success, index, reason) = match result {
            Ok(index) => (true, index, None),
            Err(reason) => (false, 0, Some(reason)),
        };
        self.send(to, token, Body::ReadIndexResponse(ReadIndexResponse { term: self.term, id, success, index, reason }));
    }

    /// Follower: the leader's answer to one of our ReadIndex requests.
    pub(super) fn handle_read_index_response(&mut self, from: String, r: ReadIndexResponse) {
        let ours = self.reads.asked.as_ref().is_some_and(|a| a.batch == r.id && a.leader == from && a.term == r.term);
        let Some(asked) = self.reads.asked.take_if(|_| ours) else { return };
        for id in asked.ids {
            if r.success {
                self.reads.applying.push(ReadState { id, index: r.index });
            } else {
                let reason = r.reason.clone().unwrap_or_else(|| "no reason given".into());
                self.reads.failed.push(ReadFailure { id, error: ReadError::Refused { reason } });
            }
        }
    }

    /// Follower: fails the ReadIndex in flight when its leader changed or it got no answer in
    /// time, and sends the next one for the reads waiting.
    /// Runs after every input: with no read waiting here (every node in the steady state) it
    /// returns before it copies the leader's id or builds an error, which cost about 3.5k
    /// instructions per command at 3 nodes and one client.
    fn settle_follower_reads(&mut self) {
        if self.reads.asked.is_none() && self.reads.unasked.is_empty() {
            return;
        }
        let (leader, term) = (self.leader.clone(), self.term);
        let lost = self.reads.asked.as_ref().is_some_and(|a| {
            leader.as_deref() != Some(a.leader.as_str())
                || a.term != term
                || self.now >= a.sent_at + self.cfg.max_election_timeout
        });
        let mut failed: Vec<u64> = Vec::new();
        if lost {
            failed.extend(self.reads.asked.take().map(|a| a.ids).unwrap_or_default());
        }
        let follower_of = leader.filter(|_| !self.is_leader());
        match follower_of {
            None => failed.append(&mut self.reads.unasked),
            Some(to) if self.reads.asked.is_none() && !self.reads.unasked.is_empty() => {
                self.reads.batch += 1;
                let batch = self.reads.batch;
                let body = Body::ReadIndex(ReadIndex { term, follower_id: self.cfg.id.clone(), id: batch });
                self.send(to.clone(), None, body);
                let ids = std::mem::take(&mut self.reads.unasked);
                self.reads.asked = Some(Asked { batch, leader: to, term, sent_at: self.now, ids });
            }
            Some(_) => {}
        }
        let error = ReadError::NotLeader { leader: self.leader.clone() };
        self.reads.failed.extend(failed.into_iter().map(|id| ReadFailure { id, error: error.clone() }));
    }

    /// Leader: a follower echoed round `ctx` in an answer of this term.
    pub(super) fn note_read_ack(&mut self, from: &str, ctx: Option<u64>) {
        let Some(ctx) = ctx.filter(|c| *c <= self.reads.seq) else { return };
        if self.reads.term != self.term {
            self.reads.acked.clear();
            self.reads.term = self.term;
        }
        let seen = self.reads.acked.entry(from.to_string()).or_insert(0);
        *seen = (*seen).max(ctx);
    }

    /// The highest round a majority confirmed in this term (this node confirms its own rounds).
    pub(super) fn confirmed_round(&self) -> u64 {
        let acked = |id: &str| {
            if id == self.cfg.id {
                Some(self.reads.seq)
            } else if self.reads.term == self.term {
                self.reads.acked.get(id).copied()
            } else {
                None
            }
        };
        self.members.quorum_value(acked).unwrap_or(0)
    }

    /// Moves every read as far as it can go: fails those whose leader is gone, gives an index
    /// and a round to those that can have one, confirms those whose round a majority echoed, and
    /// serves those whose index is applied. Called after every input.
    pub(super) fn settle_reads(&mut self) {
        let leading = self.ensure_leader().is_ok();
        if !leading && !self.reads.confirming.is_empty() {
            let leader = self.leader.clone();
            for r in std::mem::take(&mut self.reads.confirming) {
                match r.origin {
                    Origin::Local { id } => {
                        self.reads.failed.push(ReadFailure { id, error: ReadError::NotLeader { leader: leader.clone() } })
                    }
                    Origin::Peer { peer, id, token } => self.answer_read(peer, token, id, Err("not the leader any more".into())),
                }
            }
        }
        self.settle_follower_reads();
        if leading && !self.reads.confirming.is_empty() {
            if self.committed_in_term() && self.reads.confirming.back().is_some_and(|r| r.seq == 0) {
                let seq = self.reads.open_round(self.now);
                let index = self.commit;
                for r in self.reads.confirming.iter_mut().filter(|r| r.seq == 0) {
                    r.index = index;
                    r.seq = seq;
                }
            }
            let confirmed = self.confirmed_round();
            while self.reads.confirming.front().is_some_and(|r| r.seq != 0 && r.seq <= confirmed) {
                let Some(r) = self.reads.confirming.pop_front() else { break };
                match r.origin {
                    Origin::Local { id } => self.reads.applying.push(ReadState { id, index: r.index }),
                    Origin::Peer { peer, id, token } => self.answer_read(peer, token, id, Ok(r.index)),
                }
            }
        }
        // While a snapshot installs, the state machine was reset and holds part of it, whatever
        // `applied` says: reads wait for the install (the driver simulation's seed 272 served
        // one from an emptied state machine).
        if !self.reads.applying.is_empty() && self.install.is_none() {
            let applied = self.applied;
            let (done, waiting): (Vec<ReadState>, Vec<ReadState>) =
                std::mem::take(&mut self.reads.applying).into_iter().partition(|r| r.index <= applied);
            self.reads.applying = waiting;
            self.reads.ready.extend(done);
        }
    }
}

/// Checks the read fields of a peer message (untrusted).
pub(super) fn validate_read_ctx(ctx: Option<u64>) -> Result<(), String> {
    match ctx {
        Some(c) if c > MAX_SAFE => Err(format!("readCtx {c} is too large")),
        _ => Ok(()),
    }
}
