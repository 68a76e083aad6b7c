//! Leadership transfer (Raft thesis §3.10, etcd's TimeoutNow): the leader stops taking
//! proposals, brings a voter up to date, then tells it to campaign at once.
//!
//! The target campaigns without pre-vote, and its vote requests carry `transfer`, which asks
//! voters to grant them inside the leader lease (they would otherwise refuse any candidate while
//! they hear from a healthy leader). That flag must not let anyone depose a healthy leader, so a
//! voter honours it only for the candidate its own current leader named: every AppendEntries of
//! a transferring leader carries `transferTo`, and a voter remembers it together with the leader
//! and term it came from. The leader's messages are authenticated by their connection (the
//! runtime refuses a message whose sender is not the peer of its connection), so a stranger, or
//! a member the leader did not name, gets no more than it would without the flag. The named
//! target still needs a log at least as up to date as each voter's and one vote per term.
//!
//! A leader that removes itself does the same without pausing proposals: from the moment it
//! appends its removal it names a successor (the most up-to-date remaining voter), and when the
//! removal commits it sends that voter TimeoutNow as it steps down, so the cluster does not wait
//! out an election timeout.
//!
//! The leader sends TimeoutNow only once the target holds its whole log and a majority has
//! echoed a read round opened when the transfer began (see `read_index`): a majority then knows
//! the target's name, so the target can win even while every lease holds. The transfer is
//! abandoned after `maxElectionTimeout`, or when the target refuses; the leader then takes
//! proposals again.

use super::{Phase, Raft, MAX_SAFE};
use crate::message::{Body, RequestVote, TimeoutNow, TimeoutNowResponse};
use crate::progress::ProgressState;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader")]
    NotLeader { leader: Option<String> },
    /// No voter could take over (none other, or the one named is not a voter answering us).
    #[error("no target: {0}")]
    NoTarget(String),
}

/// A transfer the leader is carrying out.
#[derive(Debug)]
pub(super) struct Transfer {
    pub(super) target: String,
    /// When it began: abandoned at `since + max_election_timeout`.
    since: u64,
    /// The read round opened when it began: once a majority echoed it, a majority knows `target`.
    round: u64,
    /// TimeoutNow went out.
    sent: bool,
}

/// What a follower heard from its leader about a transfer: `leader` at `term` names `target`.
#[derive(Debug)]
pub(super) struct TransferIntent {
    leader: String,
    term: u64,
    target: String,
}

impl Raft {
    /// Hands leadership to `target`, or with `None` to the voter whose log is most up to date.
    /// Returns the target. Proposals are refused (`ProposeError::Transferring`) until the target
    /// leads or the transfer is abandoned ([`Raft::transferring`] turns `None`).
    pub fn transfer_leader(&mut self, target: Option<&str>) -> Result<String, TransferError> {
        if let Err(crate::ProposeError::NotLeader { leader }) = self.ensure_leader() {
            return Err(TransferError::NotLeader { leader });
        }
        let recently = self.now.saturating_sub(self.cfg.max_election_timeout);
        let target = match target {
            Some(t) if t == self.cfg.id => return Err(TransferError::NoTarget("this node already leads".into())),
            Some(t) => {
                let able = self.members.is_voter(t)
                    && self.progress.get(t).is_some_and(|p| p.last_heard >= recently && p.state != ProgressState::Snapshot);
                if !able {
                    return Err(TransferError::NoTarget(format!("{t} is not a voter this leader hears from")));
                }
                t.to_string()
            }
            None => match self.best_voter() {
                Some(id) => id,
                None => return Err(TransferError::NoTarget("no other voter answers this leader".into())),
            },
        };
        if self.transfer.as_ref().is_some_and(|t| t.target == target) {
            return Ok(target);
        }
        // A fresh round: answers to it come from AppendEntries that carry `transferTo`.
        let round = self.reads.fresh_round(self.now);
        self.transfer = Some(Transfer { target: target.clone(), since: self.now, round, sent: false });
        self.settle_transfer();
        Ok(target)
    }

    /// Abandons the transfer under way (the runtime found that the target cannot take
    /// TimeoutNow); proposals are taken again.
    pub fn abort_transfer(&mut self) {
        self.transfer = None;
    }

    /// The voter this leader is handing leadership to.
    pub fn transferring(&self) -> Option<&str> {
        self.transfer.as_ref().map(|t| t.target.as_str())
    }

    /// The voter this leader names in `transferTo`.
    pub(super) fn announced_transfer(&self) -> Option<String> {
        self.transfer.as_ref().map(|t| t.target.clone()).or_else(|| self.successor.clone())
    }

    /// The most up-to-date voter (other than this node) that answered within an election timeout.
    fn best_voter(&self) -> Option<String> {
        let recently = self.now.saturating_sub(self.cfg.max_election_timeout);
        self.progress
            .iter()
            .filter(|(id, p)| {
                *id != &self.cfg.id && self.members.is_voter(id) && p.last_heard >= recently && p.state != ProgressState::Snapshot
            })
            .max_by_key(|(_, p)| (p.match_index, p.last_ack))
            .map(|(id, _)| id.clone())
    }

    /// Leader: it appended its own removal; name who takes over when it commits.
    pub(super) fn choose_successor(&mut self) {
        self.successor = self.best_voter();
    }

    /// Leader: its removal committed; the successor campaigns at once.
    pub(super) fn hand_over_on_removal(&mut self) {
        if let Some(target) = self.successor.take() {
            self.send(target, None, Body::TimeoutNow(TimeoutNow { term: self.term, leader_id: self.cfg.id.clone() }));
        }
    }

    /// Ends a transfer that can no longer succeed, and sends TimeoutNow once the target is ready.
    pub(super) fn settle_transfer(&mut self) {
        if !self.is_leader() {
            self.successor = None;
        }
        let Some(t) = &self.transfer else { return };
        if !self.is_leader() || self.now >= t.since + self.cfg.max_election_timeout {
            self.transfer = None;
            return;
        }
        if t.sent {
            return;
        }
        let caught_up = self.progress.get(&t.target).is_some_and(|p| p.match_index == self.log.last_index());
        if !caught_up || self.confirmed_round() < t.round {
            return;
        }
        let target = t.target.clone();
        if let Some(t) = &mut self.transfer {
            t.sent = true;
        }
        self.reads.revoke_lease(self.term);
        self.send(target, None, Body::TimeoutNow(TimeoutNow { term: self.term, leader_id: self.cfg.id.clone() }));
    }

    /// Follower: our leader tells us to campaign now.
    pub(super) fn handle_timeout_now(&mut self, from: String, token: Option<u64>, _m: TimeoutNow) {
        let refusal = if self.phase != Phase::Follower || self.leader.as_deref() != Some(from.as_str()) {
            Some("TimeoutNow comes only from this node's leader")
        } else if !self.is_voter() {
            Some("not a voter")
        } else if self.install.is_some() || self.log.last_index() < self.known_commit || self.term >= MAX_SAFE {
            Some("this node cannot lead now")
        } else {
            None
        };
        let body = TimeoutNowResponse { term: self.term, success: refusal.is_none(), reason: refusal.map(str::to_string) };
        self.send(from, token, Body::TimeoutNowResponse(body));
        if refusal.is_none() {
            self.campaign_transfer();
        }
    }

    /// Leader: a target that refuses will not campaign; take proposals again at once.
    pub(super) fn handle_timeout_now_response(&mut self, from: String, r: TimeoutNowResponse) {
        if !r.success && self.transfer.as_ref().is_some_and(|t| t.target == from) {
            self.transfer = None;
        }
    }

    /// Follower: what our leader's AppendEntries said about a transfer (`None`: none).
    pub(super) fn note_transfer_intent(&mut self, leader: &str, term: u64, target: Option<&str>) {
        self.transfer_intent =
            target.map(|t| TransferIntent { leader: leader.to_string(), term, target: t.to_string() });
    }

    /// Whether a vote request may pass this node's lease: it comes from the candidate our own
    /// current leader (or we, leading) named for a transfer (see the module docs).
    pub(super) fn honors_transfer_vote(&self, rv: &RequestVote) -> bool {
        if !rv.transfer || rv.pre_vote {
            return false;
        }
        if self.is_leader() {
            return self.transfer.as_ref().is_some_and(|t| t.sent && t.target == rv.candidate_id);
        }
        self.transfer_intent.as_ref().is_some_and(|i| {
            i.target == rv.candidate_id && i.term == self.term && self.leader.as_deref() == Some(i.leader.as_str())
        })
    }
}
