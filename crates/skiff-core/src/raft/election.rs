//! Elections: campaigning (with pre-vote), voting, the leader lease, and the role changes that
//! follow (`become_follower`, `become_leader`).

use super::{Phase, Raft};
use crate::entry::EntryKind;
use crate::message::{Body, RequestVote, RequestVoteResponse};
use crate::progress::{Progress, ProgressState};
use crate::ready::Event;

impl Raft {
    /// Whether a majority answered within the last election timeout (check-quorum).
    pub(super) fn quorum_active(&self) -> bool {
        self.quorum_since(self.now.saturating_sub(self.cfg.max_election_timeout), |p| p.last_heard)
    }

    /// Whether a majority has `at(progress) >= since` (this node always counts).
    fn quorum_since(&self, since: u64, at: impl Fn(&Progress) -> u64) -> bool {
        self.members.has_quorum(|id| id == self.cfg.id || self.progress.get(id).is_some_and(|p| at(p) >= since))
    }

    /// Leader lease (Raft thesis §4.2.3, etcd's check-quorum): a follower that heard from its
    /// leader less than the minimum election timeout ago does not help anyone depose it, and a
    /// leader that a majority took entries from within that time does not step down for a vote
    /// request (a majority that answers but cannot take anything does not count: the leader
    /// could never commit again, and a newer leader might).
    ///
    /// A candidate with a real claim only appears once the leader fell silent for at least that
    /// long (its own timer is at least that long), so refusing meanwhile costs elections nothing
    /// and keeps a node that cannot hear the leader (or a stranger) from deposing it.
    pub(super) fn in_lease(&self) -> bool {
        match (self.phase, &self.leader, self.last_leader_contact) {
            (Phase::Leader, _, _) => {
                self.cfg.check_quorum
                    && self.quorum_since(self.now.saturating_sub(self.cfg.min_election_timeout), |p| p.last_ack)
            }
            (_, Some(_), Some(t)) => self.now < t + self.cfg.min_election_timeout,
            _ => false,
        }
    }

    pub(super) fn note_role(&mut self) {
        let role = self.role();
        if role != self.shown_role {
            self.shown_role = role;
            self.events.push(Event::Role(role));
        }
    }

    fn set_leader(&mut self, leader: Option<String>) {
        if self.leader != leader {
            self.leader = leader.clone();
            self.events.push(Event::Leader(leader));
        }
    }

    fn set_term(&mut self, term: u64) {
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.dirty = true;
        }
    }

    /// Steps down to follower at `term` (at least the current one), following `leader` if known.
    ///
    /// The election timer restarts only when there is a reason to wait a full timeout: a leader
    /// was heard from, or this node was leading and had no election timer running. A higher term
    /// seen in a vote request, a vote answer or a lost election does not restart it (Raft
    /// Figure 2: a follower campaigns when the timeout elapses "without receiving AppendEntries
    /// from the current leader or granting vote to candidate"; granting restarts it in
    /// `handle_vote`). Otherwise a candidate that cannot win (its log is behind) and whose timer
    /// fires first would push back, with every new term it tries, the timer of the one node that
    /// could win: no leader, ever.
    pub(super) fn become_follower(&mut self, term: u64, leader: Option<String>) {
        let restart_timer = leader.is_some() || self.phase == Phase::Leader;
        self.set_term(term);
        self.phase = Phase::Follower;
        for (peer, p) in std::mem::take(&mut self.progress) {
            if p.state == ProgressState::Snapshot {
                self.events.push(Event::SnapshotFailed { peer, next_seq: 0 });
            }
        }
        self.votes.clear();
        self.need_broadcast = false;
        if leader.is_some() {
            self.last_leader_contact = Some(self.now);
        }
        self.set_leader(leader);
        if restart_timer {
            self.reset_election_timer();
        }
        self.note_role();
    }

    /// An AppendEntries or InstallSnapshot from `leader` at `term` passed `step`'s checks:
    /// follow it, and wait a full election timeout from now before campaigning.
    pub(super) fn heard_from_leader(&mut self, leader: &str, term: u64) {
        if self.phase != Phase::Follower || self.leader.as_deref() != Some(leader) {
            self.become_follower(term, Some(leader.to_string()));
        }
        self.last_leader_contact = Some(self.now);
        self.holds_back_election = false;
        self.reset_election_timer();
    }

    fn request_votes(&mut self, term: u64, pre_vote: bool, transfer: bool) {
        let req = RequestVote {
            term,
            candidate_id: self.cfg.id.clone(),
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            transfer,
        };
        // Learners are not asked: their votes would not count.
        let peers: Vec<String> = self.members.voters().filter(|id| **id != self.cfg.id).cloned().collect();
        for to in peers {
            self.send(to, None, Body::RequestVote(req.clone()));
        }
    }

    pub(super) fn campaign_pre(&mut self) {
        self.campaign_as(Phase::PreCandidate, false);
    }

    pub(super) fn campaign(&mut self) {
        self.campaign_as(Phase::Candidate, false);
    }

    /// Campaigns at once because the leader said so (TimeoutNow): no pre-vote, and the vote
    /// requests carry `transfer` (see `transfer`).
    pub(super) fn campaign_transfer(&mut self) {
        self.campaign_as(Phase::Candidate, true);
    }

    /// Stands for election. A pre-candidate asks whether it could win at the next term without
    /// changing anything; a candidate takes the next term and votes for itself (saved before any
    /// RequestVote goes out).
    fn campaign_as(&mut self, phase: Phase, transfer: bool) {
        let pre = phase == Phase::PreCandidate;
        if !pre {
            let term = self.term + 1;
            self.set_term(term);
            self.vote = Some(self.cfg.id.clone());
            self.dirty = true;
        }
        self.phase = phase;
        self.set_leader(None);
        self.votes.clear();
        self.votes.insert(self.cfg.id.clone(), true);
        self.reset_election_timer();
        self.note_role();
        if self.won(true) {
            if pre {
                self.campaign();
            } else {
                self.become_leader();
            }
        } else {
            let term = if pre { self.term + 1 } else { self.term };
            self.request_votes(term, pre, transfer);
        }
    }

    /// Whether the votes with value `granted` reach a majority of the membership.
    fn won(&self, granted: bool) -> bool {
        self.members.has_quorum(|id| self.votes.get(id) == Some(&granted))
    }

    fn become_leader(&mut self) {
        self.phase = Phase::Leader;
        self.set_leader(Some(self.cfg.id.clone()));
        self.votes.clear();
        self.progress.clear();
        self.transfers_begun = 0;
        let next = self.log.last_index() + 1;
        for id in self.members.ids() {
            if *id != self.cfg.id {
                self.progress.insert(id.clone(), Progress::new(next, self.now));
            }
        }
        self.heartbeat_deadline = self.now + self.cfg.heartbeat_interval;
        self.quorum_check_deadline = self.now + self.cfg.max_election_timeout;
        self.note_role();
        // The barrier: a leader may only count replicas of entries from its own term (§5.4.2),
        // so it appends one at once. A brand-new node records its one-member membership instead,
        // which serves the same purpose and lets joining members learn about it from the log.
        let kind = match self.bootstrap.take() {
            Some(metadata) => EntryKind::AddPeer { id: self.cfg.id.clone(), metadata },
            None => EntryKind::barrier(),
        };
        // Appending cannot fail at a fresh index below MAX_SAFE; if the log is full we still lead
        // but cannot commit, which the runtime reports through proposals failing.
        if let Ok(index) = self.append(kind) {
            self.pending_conf_index = index;
        }
        self.broadcast_heartbeat();
    }

    pub(super) fn handle_vote(&mut self, from: String, token: Option<u64>, rv: RequestVote) {
        let up_to_date = self.log.is_up_to_date(rv.last_log_index, rv.last_log_term);
        // Votes are granted whatever our own view of the membership: a member that has not yet
        // received the entry adding it must still be able to help elect a leader.
        let (granted, reason) = if rv.pre_vote {
            // A pre-vote is granted to a candidate that could win, without changing our state.
            if rv.term <= self.term {
                (false, "term is not ahead")
            } else if self.in_lease() {
                (false, "a leader is active")
            } else if !up_to_date {
                (false, "candidate log is behind")
            } else {
                (true, "")
            }
        } else if self.vote.as_ref().is_some_and(|v| *v != rv.candidate_id) {
            (false, "already voted in this term")
        } else if !up_to_date {
            (false, "candidate log is behind")
        } else {
            (true, "")
        };
        if !up_to_date && self.install.is_some() && !self.in_lease() {
            self.holds_back_election = true;
        }
        if granted && !rv.pre_vote {
            if self.vote.is_none() {
                self.vote = Some(rv.candidate_id.clone());
                self.dirty = true;
            }
            self.reset_election_timer();
            self.events.push(Event::VoteGranted { candidate: rv.candidate_id.clone() });
        }
        let body = Body::RequestVoteResponse(RequestVoteResponse {
            term: if granted && rv.pre_vote { rv.term } else { self.term },
            vote_granted: granted,
            pre_vote: rv.pre_vote,
            reason: if granted { None } else { Some(reason.to_string()) },
        });
        self.send(from, token, body);
    }

    pub(super) fn handle_vote_response(&mut self, from: String, r: RequestVoteResponse) {
        let expected = match self.phase {
            Phase::PreCandidate if r.pre_vote && r.term == self.term + 1 && r.vote_granted => true,
            Phase::PreCandidate if r.pre_vote && !r.vote_granted => true,
            Phase::Candidate if !r.pre_vote && r.term == self.term => true,
            _ => false,
        };
        if !expected || !self.members.contains(&from) {
            return;
        }
        self.votes.insert(from, r.vote_granted);
        if self.won(true) {
            if self.phase == Phase::PreCandidate {
                self.campaign();
            } else {
                self.become_leader();
            }
        } else if self.won(false) {
            let term = self.term;
            self.become_follower(term, None);
        }
    }
}
