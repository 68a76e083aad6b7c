//! The Raft state machine: messages, ticks and proposals in; a [`Ready`] out.

use crate::config::{Config, ConfigError, PendingInstall, Restored};
use crate::entry::{Entry, EntryKind, Json};
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::*;
use crate::progress::{Progress, ProgressState};
use crate::ready::{Event, HardState, Ready};
use crate::rng::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Largest index or term we accept: JavaScript numbers are exact only up to 2^53 - 1, and every
/// index and term crosses JavaScript on its way to and from the plugins.
pub const MAX_SAFE: u64 = (1 << 53) - 1;

/// Highest term a peer message may carry. Terms only grow, by one per election, and a node must
/// always be able to campaign at the next term without passing [`MAX_SAFE`] (past it, the state
/// could not be saved, or loaded back). A term within 2^20 of the limit is a lie, not a
/// long-lived cluster: it would take a million elections from a value no honest node reaches.
pub const MAX_TERM: u64 = MAX_SAFE - (1 << 20);

/// Bytes an entry takes in an AppendEntries besides its command (term, index, uuid, field
/// names), for batching.
const ENTRY_OVERHEAD: usize = 96;

/// How many entries past `retained_log_entries` a leader may keep for live followers that are
/// catching up, before it compacts anyway and lets them take a snapshot.
pub const HOLD_FOR_FOLLOWERS: u64 = 10_000;

/// The role as users see it (`node.state.name`, minus the runtime's `idle` and `stopped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not a voting member: waits for a leader to bring it in.
    Standby,
    Follower,
    Candidate,
    Leader,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// What a snapshot transfer carries besides the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub members: Membership,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("not the leader")]
    NotLeader { leader: Option<String> },
    #[error("another membership change is in progress")]
    MembershipChangePending,
    #[error("the log is full: index would pass 2^53 - 1")]
    LogFull,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    #[error("message addressed to {to}, not to this node")]
    WrongRecipient { to: String },
    #[error("malformed {kind} from {from}: {reason}")]
    Malformed { kind: &'static str, from: String, reason: String },
}

/// One node's Raft state machine.
///
/// It performs no IO and reads no clock: the runtime feeds it time ([`Raft::tick`]), peer
/// messages ([`Raft::step`]) and proposals, then carries out each [`Ready`] in the order the
/// `Ready` documentation states. Given the same inputs and seed it behaves the same, so whole
/// clusters can be simulated and replayed.
pub struct Raft {
    cfg: Config,
    rng: Rng,

    // Durable (persisted through `Ready::persist`).
    /// Latest term seen. Never decreases.
    term: u64,
    /// Who we voted for in `term`. Set at most once per term.
    vote: Option<String>,
    log: RaftLog,
    /// Membership at `log.snapshot_index()`.
    base: Membership,

    // Derived from the durable state.
    /// `base` with every membership entry of `log` applied: the membership we act on.
    members: Membership,
    /// Index of the newest membership entry in the log (or of the new leader's barrier): a new
    /// change may be proposed only once this is committed.
    pending_conf_index: u64,
    /// A brand-new node's own metadata until it records itself in its log.
    bootstrap: Option<Json>,
    /// A snapshot install that began and has not finished: while set, the state machine is
    /// untrusted, so nothing is applied, this node does not campaign (unless it holds back every
    /// election: `holds_back_election`), and it asks leaders for a snapshot. Durable
    /// (`log.meta.pendingSnapshot`).
    install: Option<PendingInstall>,

    // Volatile.
    phase: Phase,
    /// Set while an install is pending, when this node refused its vote to a candidate whose log
    /// is behind its own: it may hold committed entries that no node able to lead has (the leader
    /// that streamed the snapshot is gone), and then no election can succeed without it. So it
    /// campaigns after all, leads only until a majority holds its whole log (its barrier is
    /// committed), taking no proposals meanwhile, and steps down; a node with that log and a
    /// complete state machine then wins, and streams it the snapshot it lacks. Volatile: after a
    /// restart the next refusal sets it again. Cleared when the install finishes, when a leader is
    /// heard from, and on stepping down.
    holds_back_election: bool,
    shown_role: Role,
    leader: Option<String>,
    /// Highest index known committed. Never decreases. On a follower it only ever comes from a
    /// leader whose log matched ours, capped at the prefix that matched, so it never points past
    /// our own log (a leader's word about entries we do not hold vouches for nothing).
    commit: u64,
    /// Highest commit index a leader announced while this node was joining (durable,
    /// `log.meta.knownCommit`). Until our log reaches it we may hold an outdated membership (a
    /// node replaying the log from the start, perhaps re-added under an old id, passes through
    /// historical configurations), so we do not campaign. Some node of every majority has a log
    /// that long, so this never stops a majority from electing a leader.
    ///
    /// Only a node that is not a voter in its own view takes the announced value as is: it
    /// cannot campaign anyway, and cannot tell its leader from anyone. A voter takes it capped
    /// at the prefix the leader's message matched, which never exceeds its log, so a stranger's
    /// huge `leaderCommit` cannot stop the members of a cluster from campaigning; and a voter
    /// drops what it was told while joining once a leader in its membership says it holds
    /// everything committed.
    known_commit: u64,
    /// Highest index known durable on this node (what the leader may count for itself).
    persisted: u64,
    /// Last entry handed out in `Ready::committed`.
    apply_cursor: u64,
    /// Where the state machine is, as reported by the runtime.
    applied: u64,

    now: u64,
    election_deadline: u64,
    heartbeat_deadline: u64,
    quorum_check_deadline: u64,
    /// When we last heard from the current leader (for the leader lease in vote handling).
    last_leader_contact: Option<u64>,

    votes: BTreeMap<String, bool>,
    progress: BTreeMap<String, Progress>,
    /// Leader: new entries wait to be sent when the `Ready` is built, so a burst of proposals
    /// goes out as one AppendEntries per follower.
    need_broadcast: bool,

    // Output being built.
    dirty: bool,
    msgs: Vec<Message>,
    events: Vec<Event>,
}

impl Raft {
    pub fn new(cfg: Config, restored: Restored) -> Result<Raft, ConfigError> {
        cfg.validate()?;
        let Restored { hard_state, mut log, mut base, applied, bootstrap, install, known_commit } = restored;
        // An install whose state machine write finished and was recorded (saveCommitIndex) but
        // whose log reset was not yet saved: finish it now.
        let mut dirty = false;
        let install = match install {
            Some(pi) if applied == pi.index => {
                log.install_snapshot(pi.index, pi.term);
                base = pi.members;
                dirty = true;
                None
            }
            other => other,
        };
        let mut members = base.clone();
        let mut pending_conf_index = 0;
        for e in log.iter() {
            if e.kind.is_membership() {
                members.apply(&e.kind);
                pending_conf_index = e.index;
            }
        }
        let fresh = log.last_index() == 0 && base.is_empty() && hard_state.term == 0;
        let bootstrap = if fresh { bootstrap } else { None };
        if let Some(meta) = &bootstrap {
            members.insert(cfg.id.clone(), meta.clone());
        }
        let committed = applied.max(log.snapshot_index());
        let mut raft = Raft {
            rng: Rng::new(cfg.seed),
            term: hard_state.term,
            vote: hard_state.vote,
            persisted: log.last_index(),
            log,
            base,
            members,
            pending_conf_index,
            bootstrap,
            install,
            holds_back_election: false,
            phase: Phase::Follower,
            shown_role: Role::Standby,
            leader: None,
            commit: committed,
            known_commit,
            apply_cursor: committed,
            applied: committed,
            now: 0,
            election_deadline: 0,
            heartbeat_deadline: 0,
            quorum_check_deadline: 0,
            last_leader_contact: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            need_broadcast: false,
            dirty,
            msgs: Vec::new(),
            events: Vec::new(),
            cfg,
        };
        raft.reset_election_timer();
        raft.shown_role = raft.role();
        raft.events.push(Event::Role(raft.shown_role));
        Ok(raft)
    }

    // ----- reading -----

    pub fn id(&self) -> &str {
        &self.cfg.id
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn term(&self) -> u64 {
        self.term
    }
    /// Term and vote without copying the vote.
    pub fn hard_state_ref(&self) -> (u64, Option<&str>) {
        (self.term, self.vote.as_deref())
    }
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote.clone() }
    }
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    pub fn is_leader(&self) -> bool {
        self.phase == Phase::Leader
    }
    pub fn role(&self) -> Role {
        match self.phase {
            Phase::Leader => Role::Leader,
            Phase::Candidate | Phase::PreCandidate => Role::Candidate,
            Phase::Follower if self.is_voter() => Role::Follower,
            Phase::Follower => Role::Standby,
        }
    }
    pub fn commit(&self) -> u64 {
        self.commit
    }
    pub fn known_commit(&self) -> u64 {
        self.known_commit
    }
    pub fn applied(&self) -> u64 {
        self.applied
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    pub fn members(&self) -> &Membership {
        &self.members
    }
    /// Membership at the start of the log (persisted so a restart can rebuild `members`).
    pub fn base_members(&self) -> &Membership {
        &self.base
    }
    pub fn now(&self) -> u64 {
        self.now
    }
    /// The follower's last reported `lastApplied`, as the leader knows it.
    pub fn peer_applied(&self, id: &str) -> Option<u64> {
        if id == self.cfg.id {
            return Some(self.applied);
        }
        self.progress.get(id).map(|p| p.applied)
    }
    /// Leader: what it knows of each follower's log (empty on other roles). Read-only, for stats.
    pub fn progress(&self) -> &BTreeMap<String, Progress> {
        &self.progress
    }
    /// Whether a membership change may be proposed now.
    pub fn can_change_membership(&self) -> bool {
        self.ensure_leader().is_ok() && self.commit >= self.pending_conf_index
    }
    /// When the runtime should call [`Raft::tick`] next, at the latest.
    pub fn next_deadline(&self) -> u64 {
        match self.phase {
            Phase::Leader => self.heartbeat_deadline.min(self.quorum_check_deadline),
            _ => self.election_deadline,
        }
    }
    fn is_voter(&self) -> bool {
        self.members.contains(&self.cfg.id)
    }

    // ----- time -----

    /// Advances logical time to `now` and fires whatever timers expired.
    pub fn tick(&mut self, now: u64) {
        if now > self.now {
            self.now = now;
        }
        match self.phase {
            Phase::Leader => {
                if self.now >= self.heartbeat_deadline {
                    self.heartbeat_deadline = self.now + self.cfg.heartbeat_interval;
                    self.broadcast_heartbeat();
                }
                if self.cfg.check_quorum && self.now >= self.quorum_check_deadline {
                    self.quorum_check_deadline = self.now + self.cfg.max_election_timeout;
                    if !self.quorum_active() {
                        let term = self.term;
                        self.become_follower(term, None);
                    }
                }
            }
            _ => {
                if self.now >= self.election_deadline {
                    // A node whose state machine is incomplete must not lead: it could neither
                    // apply nor serve snapshots.
                    // Nor may one whose next term could not be saved (see `MAX_TERM`).
                    // Unless it holds back every election (`holds_back_election`).
                    let may_lead = self.install.is_none() || self.holds_back_election;
                    if self.is_voter() && may_lead && self.log.last_index() >= self.known_commit && self.term < MAX_SAFE {
                        self.events.push(Event::ElectionTimeout);
                        if self.cfg.pre_vote {
                            self.campaign_pre();
                        } else {
                            self.campaign();
                        }
                    } else {
                        self.reset_election_timer();
                    }
                }
            }
        }
    }

    fn reset_election_timer(&mut self) {
        let timeout = self.rng.range(self.cfg.min_election_timeout, self.cfg.max_election_timeout + 1);
        self.election_deadline = self.now + timeout;
        self.events.push(Event::ResetElectionTimeout);
    }

    /// Whether a majority answered within the last election timeout (check-quorum).
    fn quorum_active(&self) -> bool {
        self.quorum_since(self.now.saturating_sub(self.cfg.max_election_timeout), |p| p.last_heard)
    }

    /// Whether a majority has `at(progress) >= since` (this node always counts).
    fn quorum_since(&self, since: u64, at: impl Fn(&Progress) -> u64) -> bool {
        let active = self
            .members
            .ids()
            .filter(|id| **id == self.cfg.id || self.progress.get(*id).is_some_and(|p| at(p) >= since))
            .count();
        active >= self.members.quorum()
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
    fn in_lease(&self) -> bool {
        match (self.phase, &self.leader, self.last_leader_contact) {
            (Phase::Leader, _, _) => {
                self.cfg.check_quorum
                    && self.quorum_since(self.now.saturating_sub(self.cfg.min_election_timeout), |p| p.last_ack)
            }
            (_, Some(_), Some(t)) => self.now < t + self.cfg.min_election_timeout,
            _ => false,
        }
    }

    // ----- role changes -----

    fn note_role(&mut self) {
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
    fn become_follower(&mut self, term: u64, leader: Option<String>) {
        let restart_timer = leader.is_some() || self.phase == Phase::Leader;
        self.set_term(term);
        self.phase = Phase::Follower;
        for (peer, p) in std::mem::take(&mut self.progress) {
            if p.state == ProgressState::Snapshot {
                self.events.push(Event::SnapshotFailed { peer });
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

    fn request_votes(&mut self, term: u64, pre_vote: bool) {
        let req = RequestVote {
            term,
            candidate_id: self.cfg.id.clone(),
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
        };
        let peers: Vec<String> = self.members.ids().filter(|id| **id != self.cfg.id).cloned().collect();
        for to in peers {
            self.send(to, None, Body::RequestVote(req.clone()));
        }
    }

    fn campaign_pre(&mut self) {
        self.campaign_as(Phase::PreCandidate);
    }

    fn campaign(&mut self) {
        self.campaign_as(Phase::Candidate);
    }

    /// Stands for election. A pre-candidate asks whether it could win at the next term without
    /// changing anything; a candidate takes the next term and votes for itself (saved before any
    /// RequestVote goes out).
    fn campaign_as(&mut self, phase: Phase) {
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
            self.request_votes(term, pre);
        }
    }

    /// Whether the votes with value `granted` reach a majority of the membership.
    fn won(&self, granted: bool) -> bool {
        let n = self.members.ids().filter(|id| self.votes.get(*id) == Some(&granted)).count();
        n >= self.members.quorum()
    }

    fn become_leader(&mut self) {
        self.phase = Phase::Leader;
        self.set_leader(Some(self.cfg.id.clone()));
        self.votes.clear();
        self.progress.clear();
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

    // ----- proposals -----

    /// Appends a user command. Returns its index.
    pub fn propose(&mut self, command: Json) -> Result<u64, ProposeError> {
        self.ensure_leader()?;
        self.append(EntryKind::Command(command))
    }

    /// Proposes a single-server membership change. `Ok(None)` means there is nothing to do
    /// (the member is already there with that metadata, or already absent).
    pub fn propose_membership(&mut self, kind: EntryKind) -> Result<Option<u64>, ProposeError> {
        self.ensure_leader()?;
        let needed = match &kind {
            EntryKind::AddPeer { id, metadata } => self.members.metadata(id) != Some(metadata),
            EntryKind::RemovePeer { id } => self.members.contains(id),
            _ => return Ok(None),
        };
        if !needed {
            return Ok(None);
        }
        if !self.can_change_membership() {
            return Err(ProposeError::MembershipChangePending);
        }
        self.append(kind).map(Some)
    }

    /// A leader whose install is pending leads only to hand its log on (`holds_back_election`):
    /// it could not apply what it takes, and steps down as soon as its barrier commits, so it
    /// answers proposals as a follower that knows no leader would.
    fn ensure_leader(&self) -> Result<(), ProposeError> {
        if self.is_leader() && self.install.is_none() {
            Ok(())
        } else if self.is_leader() {
            Err(ProposeError::NotLeader { leader: None })
        } else {
            Err(ProposeError::NotLeader { leader: self.leader.clone() })
        }
    }

    fn append(&mut self, kind: EntryKind) -> Result<u64, ProposeError> {
        let index = self.log.last_index() + 1;
        if index > MAX_SAFE {
            return Err(ProposeError::LogFull);
        }
        let entry = Entry { term: self.term, index, kind, uuid: self.rng.uuid() };
        let membership = entry.kind.is_membership();
        if let Err(e) = self.log.append(entry) {
            // Unreachable: the index is last + 1 and the term is ours, the highest in the log.
            self.events.push(Event::Rejected { from: self.cfg.id.clone(), reason: e.to_string() });
            return Err(ProposeError::LogFull);
        }
        self.dirty = true;
        self.need_broadcast = true;
        if membership {
            self.pending_conf_index = index;
            self.refresh_members();
        }
        Ok(index)
    }

    // ----- the runtime's reports -----

    /// Called once the state asked for by the `Ready` with this `persist_token` is durable.
    pub fn advance(&mut self, persist_token: (u64, u64)) {
        let (index, term) = persist_token;
        if index > self.persisted && self.log.term(index) == Some(term) {
            self.persisted = index;
            if self.is_leader() {
                self.maybe_commit();
            }
        }
    }

    /// The state machine has applied everything up to `index`.
    /// Compacts the log so that at most `retained_log_entries` applied entries stay in it.
    pub fn applied_to(&mut self, index: u64) {
        if index > self.applied && index <= self.apply_cursor {
            self.applied = index;
        }
        let keep = self.cfg.retained_log_entries;
        if self.install.is_none() && self.applied > self.log.snapshot_index() + keep {
            let mut upto = self.applied - keep;
            if self.is_leader() {
                // Do not compact away what a live follower is about to need: a follower a few
                // batches behind should get entries, not a whole snapshot. Only followers in
                // step (answering, in Replicate) hold the log, and only up to a bound; one that
                // failed a send, went silent, or is too far behind gets a snapshot instead.
                let since = self.now.saturating_sub(2 * self.cfg.max_election_timeout);
                let floor = self.applied.saturating_sub(keep + HOLD_FOR_FOLLOWERS);
                let slowest = self
                    .progress
                    .values()
                    .filter(|p| p.last_heard >= since && p.state == ProgressState::Replicate)
                    .map(|p| p.match_index)
                    .min();
                if let Some(m) = slowest {
                    upto = upto.min(m.max(floor));
                }
            }
            if upto <= self.log.snapshot_index() {
                return;
            }
            self.base = self.membership_at(upto);
            // Not a reason to save on its own: the next save (there is one for every new entry)
            // writes the shorter log, and a longer one on disk is still correct.
            self.log.compact_to(upto);
        }
    }

    /// The membership as of `index` (which must be at or after the log's start).
    pub fn membership_at(&self, index: u64) -> Membership {
        let mut m = self.base.clone();
        for e in self.log.range(self.log.first_index(), index) {
            m.apply(&e.kind);
        }
        m
    }

    /// The snapshot install under way, if any.
    pub fn pending_install(&self) -> Option<&PendingInstall> {
        self.install.as_ref()
    }

    /// A message to `peer` could not be delivered: stop waiting for its answers.
    pub fn report_unreachable(&mut self, peer: &str) {
        if let Some(p) = self.progress.get_mut(peer) {
            if p.state == ProgressState::Replicate {
                p.become_probe();
            }
        }
    }

    // ----- output -----

    /// Whether the next [`Ready`] asks for a save (new entries, or a changed term, vote or
    /// membership). A runtime may hold such a `Ready` back for a moment to save more at once.
    pub fn has_unsaved(&self) -> bool {
        self.dirty
    }

    pub fn has_ready(&self) -> bool {
        self.dirty
            || !self.msgs.is_empty()
            || !self.events.is_empty()
            || (self.need_broadcast && self.is_leader())
            || (self.install.is_none() && self.apply_cursor < self.commit.min(self.persisted))
    }

    /// Collects what the runtime must do now. See [`Ready`] for the order.
    pub fn ready(&mut self) -> Ready {
        if self.need_broadcast && self.is_leader() {
            self.need_broadcast = false;
            let peers: Vec<String> = self.progress.keys().cloned().collect();
            for id in peers {
                self.send_append(&id, false);
            }
        }
        self.need_broadcast = false;
        let upto = self.commit.min(self.persisted).min(self.apply_cursor + self.cfg.max_committed_per_ready as u64);
        let committed: Vec<Entry> = if upto > self.apply_cursor && self.install.is_none() {
            self.log.range(self.apply_cursor + 1, upto).cloned().collect()
        } else {
            Vec::new()
        };
        if let Some(last) = committed.last() {
            self.apply_cursor = last.index;
        }
        let persist = std::mem::take(&mut self.dirty);
        Ready {
            persist,
            persist_token: (self.log.last_index(), self.log.last_term()),
            messages: std::mem::take(&mut self.msgs),
            committed,
            events: std::mem::take(&mut self.events),
        }
    }

    fn send(&mut self, to: String, token: Option<u64>, body: Body) {
        self.msgs.push(Message { from: self.cfg.id.clone(), to, token, body });
    }

    // ----- replication (leader) -----

    fn broadcast_heartbeat(&mut self) {
        self.events.push(Event::Heartbeat);
        let peers: Vec<String> = self.progress.keys().cloned().collect();
        let now = self.now;
        let stalled_after = self.cfg.max_election_timeout;
        for id in peers {
            if let Some(p) = self.progress.get_mut(&id) {
                match p.state {
                    ProgressState::Probe => p.probe_sent = false,
                    // Answers stopped coming (lost messages, a restarted follower): fall back to
                    // probing from what is known to match instead of waiting forever.
                    ProgressState::Replicate
                        if !p.inflight.is_empty() && now.saturating_sub(p.last_progress) >= stalled_after =>
                    {
                        p.become_probe()
                    }
                    _ => {}
                }
            }
            self.send_append(&id, true);
        }
    }

    /// Sends `peer` what it is missing. With `heartbeat`, sends an empty AppendEntries when there
    /// is nothing else to send, so the follower keeps its leader and learns the commit index.
    fn send_append(&mut self, peer: &str, heartbeat: bool) {
        let mut sent_any = false;
        loop {
            let Some(p) = self.progress.get(peer) else { return };
            let last = self.log.last_index();
            let wants_entries = p.next_index <= last && !p.is_paused(self.cfg.max_inflight);
            if !wants_entries {
                if heartbeat && !sent_any {
                    self.send_heartbeat(peer);
                }
                return;
            }
            let prev = p.next_index - 1;
            let Some(prev_term) = self.log.term(prev) else {
                // The entries this follower needs were compacted away. Snapshot transfer is
                // driven by the runtime; until it reports success keep the follower's lease.
                self.enter_snapshot(peer);
                if heartbeat && !sent_any {
                    self.send_heartbeat(peer);
                }
                return;
            };
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            // A message holds at most `max_bytes_per_message`, or one entry larger than that:
            // with entries bounded (`maxCommandBytes`), no message outgrows what a transport
            // can carry, and an entry is never stuck behind a batch too big to send.
            for e in self.log.range(prev + 1, last) {
                let size = e.kind.size_hint() + ENTRY_OVERHEAD;
                if !entries.is_empty()
                    && (entries.len() >= self.cfg.max_entries_per_message || bytes + size > self.cfg.max_bytes_per_message)
                {
                    break;
                }
                bytes += size;
                entries.push(e.clone());
            }
            let sent_last = prev + entries.len() as u64;
            let count = entries.len();
            let msg = AppendEntries {
                term: self.term,
                leader_id: self.cfg.id.clone(),
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.commit,
                peers: self.base_for(prev),
            };
            self.send(peer.to_string(), None, Body::AppendEntries(msg));
            sent_any = true;
            let now = self.now;
            let Some(p) = self.progress.get_mut(peer) else { return };
            p.on_sent(sent_last, count, now);
            if p.state != ProgressState::Replicate {
                return;
            }
            // In Replicate, keep filling the window.
        }
    }

    /// The membership before the first entry, for an AppendEntries anchored at index 0 of a log
    /// that does not start with its own membership (a cluster from skiff-algorithm's format keeps
    /// its first members in `peers`, not in the log): a follower replaying such a log from the
    /// start needs it to know who the members are.
    fn base_for(&self, prev: u64) -> Option<Vec<PeerDesc>> {
        (prev == 0 && self.log.snapshot_index() == 0 && !self.base.is_empty()).then(|| {
            self.base.iter().map(|(id, m)| PeerDesc { id: id.clone(), metadata: m.clone() }).collect()
        })
    }

    /// An AppendEntries with no entries anchored at what the follower is known to have.
    fn send_heartbeat(&mut self, peer: &str) {
        let Some(p) = self.progress.get(peer) else { return };
        let (prev, prev_term) = match self.log.term(p.match_index) {
            Some(t) => (p.match_index, t),
            None => (0, 0),
        };
        let msg = AppendEntries {
            term: self.term,
            leader_id: self.cfg.id.clone(),
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit: self.commit,
            peers: self.base_for(prev),
        };
        self.send(peer.to_string(), None, Body::AppendEntries(msg));
    }

    /// Raft §5.3/§5.4: commit the highest index a majority holds, if it is from this term.
    fn maybe_commit(&mut self) {
        let mut matched: Vec<u64> = self
            .members
            .ids()
            .map(|id| {
                if *id == self.cfg.id {
                    self.persisted
                } else {
                    self.progress.get(id).map_or(0, |p| p.match_index)
                }
            })
            .collect();
        if matched.is_empty() {
            return;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.members.quorum() - 1];
        if candidate > self.commit && self.log.term(candidate) == Some(self.term) {
            let old = self.commit;
            self.commit = candidate;
            // Tell followers about the new commit index without waiting for the next heartbeat
            // when there is nothing else to send them.
            let peers: Vec<String> = self.progress.keys().cloned().collect();
            for id in peers {
                if let Some(p) = self.progress.get(&id) {
                    if p.next_index > self.log.last_index() || p.is_paused(self.cfg.max_inflight) {
                        self.send_heartbeat(&id);
                    }
                }
            }
            let removed_self = self
                .log
                .range(old + 1, candidate)
                .any(|e| matches!(&e.kind, EntryKind::RemovePeer { id } if *id == self.cfg.id));
            if removed_self && !self.is_voter() {
                let term = self.term;
                self.become_follower(term, None);
                self.events.push(Event::RemovedSelf);
            } else if self.install.is_some() && self.is_leader() {
                // Led only to hand the log on (`holds_back_election`): a majority now holds all of
                // it, so a node among them that can apply can win; make way for it.
                self.holds_back_election = false;
                let term = self.term;
                self.become_follower(term, None);
            }
        }
    }

    // ----- membership -----

    /// Recomputes `members` from `base` and the log, and reports the difference.
    fn refresh_members(&mut self) {
        let mut members = self.base.clone();
        let mut pending = 0;
        for e in self.log.iter() {
            if e.kind.is_membership() {
                members.apply(&e.kind);
                pending = e.index;
            }
        }
        if let Some(meta) = self.bootstrap.clone() {
            members.insert(self.cfg.id.clone(), meta);
        }
        self.pending_conf_index = if self.is_leader() { self.pending_conf_index.max(pending) } else { pending };
        if members == self.members {
            return;
        }
        for (id, meta) in members.iter() {
            if self.members.metadata(id) != Some(meta) && *id != self.cfg.id {
                self.events.push(Event::Joined { id: id.clone() });
            }
        }
        let left: Vec<String> =
            self.members.ids().filter(|id| !members.contains(id) && **id != self.cfg.id).cloned().collect();
        for id in left {
            self.events.push(Event::Left { id });
        }
        self.members = members;
        if self.is_leader() {
            let next = self.log.last_index() + 1;
            let now = self.now;
            let wanted: BTreeSet<String> = self.members.ids().filter(|id| **id != self.cfg.id).cloned().collect();
            let dropped: Vec<String> = self.progress.keys().filter(|id| !wanted.contains(*id)).cloned().collect();
            for id in dropped {
                if self.progress.remove(&id).is_some_and(|p| p.state == ProgressState::Snapshot) {
                    self.events.push(Event::SnapshotFailed { peer: id });
                }
            }
            for id in wanted {
                self.progress.entry(id).or_insert_with(|| Progress::new(next, now));
            }
        }
        self.note_role();
    }

    // ----- snapshots -----
    //
    // The state machine lives in the user's persistence plugin, so the runtime moves its bytes;
    // the core decides when a transfer is needed, stamps every chunk with its term, and changes
    // the log and membership when one completes.

    fn enter_snapshot(&mut self, peer: &str) {
        let Some(p) = self.progress.get_mut(peer) else { return };
        if p.state != ProgressState::Snapshot {
            p.become_snapshot(0);
            self.events.push(Event::SnapshotNeeded { peer: peer.to_string() });
        }
    }

    /// Leader: the runtime opened a read of the state machine, which is at `index` (the runtime
    /// holds applying back until the read ends, so the stream is exactly the state at `index`).
    /// Returns what the chunks must carry, or `None` if `peer` no longer needs a snapshot.
    pub fn begin_snapshot(&mut self, peer: &str, index: u64) -> Option<SnapshotMeta> {
        // A leader whose own install is pending has no state machine to stream.
        if !self.is_leader() || self.install.is_some() || index < self.log.snapshot_index() || index > self.applied {
            return None;
        }
        let term = self.log.term(index)?;
        let members = self.membership_at(index);
        let recently = self.now.saturating_sub(self.cfg.max_election_timeout);
        let p = self.progress.get_mut(peer)?;
        // Only stream to a follower that answers: a transfer holds the leader's state machine
        // still, and must not do so for a node that is down. It is asked again when the follower
        // answers a heartbeat.
        if p.state != ProgressState::Snapshot || p.last_heard < recently {
            return None;
        }
        p.pending_snapshot = index;
        p.last_heard = self.now;
        Some(SnapshotMeta { index, term, members })
    }

    /// Leader: sends chunk `seq` of the transfer to `peer`. Returns false when the transfer is no
    /// longer wanted (the runtime then closes its read).
    pub fn send_snapshot_chunk(&mut self, peer: &str, meta: &SnapshotMeta, seq: u64, data: Option<Json>, done: bool) -> bool {
        let ok = self.is_leader()
            && self.progress.get(peer).is_some_and(|p| p.state == ProgressState::Snapshot && p.pending_snapshot == meta.index);
        if !ok {
            return false;
        }
        let peers = (seq == 0).then(|| {
            meta.members.iter().map(|(id, m)| PeerDesc { id: id.clone(), metadata: m.clone() }).collect()
        });
        let chunk = InstallSnapshot {
            term: self.term,
            leader_id: self.cfg.id.clone(),
            last_included_index: meta.index,
            last_included_term: meta.term,
            seq,
            first: seq == 0,
            done,
            data,
            peers,
        };
        self.send(peer.to_string(), None, Body::InstallSnapshot(chunk));
        true
    }

    /// Leader: the runtime gave up on a transfer (read failed, no answer). It is retried from
    /// scratch when the follower is next found to need it.
    pub fn snapshot_aborted(&mut self, peer: &str) {
        if let Some(p) = self.progress.get_mut(peer) {
            if p.state == ProgressState::Snapshot {
                p.become_probe();
            }
        }
    }

    fn handle_install_response(&mut self, from: String, r: InstallSnapshotResponse) {
        if !self.is_leader() {
            return;
        }
        let now = self.now;
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_heard = now;
        if p.state != ProgressState::Snapshot || p.pending_snapshot == 0 {
            return;
        }
        if !r.success {
            p.become_probe();
            self.events.push(Event::SnapshotFailed { peer: from });
        } else if r.installed_index != 0 {
            if r.installed_index != p.pending_snapshot || r.installed_index > last {
                return;
            }
            p.become_probe();
            p.on_success(r.installed_index, now);
            self.events.push(Event::SnapshotInstalled { peer: from.clone() });
            self.maybe_commit();
            self.send_append(&from, false);
        } else {
            self.events.push(Event::SnapshotAcked { peer: from, seq: r.seq });
        }
    }

    fn handle_install(&mut self, from: String, token: Option<u64>, s: InstallSnapshot) {
        if self.phase != Phase::Follower || self.leader.as_deref() != Some(from.as_str()) {
            self.become_follower(s.term, Some(from.clone()));
        }
        self.last_leader_contact = Some(self.now);
        self.holds_back_election = false;
        self.reset_election_timer();
        self.bootstrap = None;
        if self.install.is_none() && s.last_included_index <= self.commit {
            // We already have everything it holds.
            let index = s.last_included_index;
            self.snapshot_reply(&from, token, s.seq, true, index, None);
            return;
        }
        self.events.push(Event::SnapshotChunk { from, token, chunk: s });
    }

    /// Follower: answers one chunk. `installed_index` is non-zero once the snapshot is installed.
    pub fn snapshot_reply(&mut self, to: &str, token: Option<u64>, seq: u64, success: bool, installed_index: u64, reason: Option<String>) {
        let body = Body::InstallSnapshotResponse(InstallSnapshotResponse {
            term: self.term,
            seq,
            success,
            installed_index,
            reason,
        });
        self.send(to.to_string(), token, body);
    }

    /// Follower: a transfer of the state machine at `index` starts. The mark is persisted with
    /// the next `Ready`; the runtime must not clear the state machine before that save is
    /// durable, so that a crash in the middle never leaves a half-written state machine that
    /// counts as caught up.
    pub fn begin_install(&mut self, index: u64, term: u64, members: Membership) -> bool {
        if self.is_leader() || index < self.log.snapshot_index() || (self.install.is_none() && index <= self.commit) {
            return false;
        }
        self.install = Some(PendingInstall { index, term, members });
        self.dirty = true;
        true
    }

    /// Follower: the state machine now holds exactly the snapshot at `index`, and the plugin
    /// recorded `index` as applied. Resets the log to the snapshot.
    pub fn finish_install(&mut self, index: u64) -> bool {
        let Some(pi) = self.install.take_if(|pi| pi.index == index) else { return false };
        self.holds_back_election = false;
        self.log.install_snapshot(pi.index, pi.term);
        self.base = pi.members;
        self.commit = self.commit.max(index);
        self.apply_cursor = index;
        self.applied = index;
        self.persisted = self.persisted.max(index).min(self.log.last_index());
        self.dirty = true;
        self.refresh_members();
        true
    }

    // ----- messages -----

    /// Feeds one message from a peer.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        if m.to != self.cfg.id {
            return Err(StepError::WrongRecipient { to: m.to });
        }
        if let Err(reason) = validate(&m.body) {
            let kind = m.body.type_name();
            self.events.push(Event::Rejected { from: m.from.clone(), reason: reason.clone() });
            return Err(StepError::Malformed { kind, from: m.from, reason });
        }
        let term = m.body.term();
        if term > self.term {
            match &m.body {
                Body::RequestVote(rv) if rv.pre_vote => {}
                Body::RequestVoteResponse(r) if r.pre_vote && r.vote_granted => {}
                Body::RequestVote(_) if self.in_lease() => {
                    // Refuse without changing term: a healthy leader is in charge.
                    self.refuse(m.from, m.token, &m.body, "a leader is active".into());
                    return Ok(());
                }
                Body::AppendEntries(_) | Body::InstallSnapshot(_) => self.become_follower(term, Some(m.from.clone())),
                _ => self.become_follower(term, None),
            }
        } else if term < self.term {
            // Answer stale requests so their sender learns the new term; drop stale answers.
            let reason = format!("term {} is behind the current term {}", term, self.term);
            self.refuse(m.from, m.token, &m.body, reason);
            return Ok(());
        } else if matches!(m.body, Body::AppendEntries(_) | Body::InstallSnapshot(_)) {
            // One leader per term: whoever we know leads this term (ourselves included) is the
            // only one whose entries or snapshot we take. Another sender is lying or broken.
            let known = if self.is_leader() { Some(self.cfg.id.as_str()) } else { self.leader.as_deref() };
            if let Some(leader) = known.filter(|l| *l != m.from) {
                let reason = format!("{leader} leads term {term}; refusing a second leader");
                self.events.push(Event::Rejected { from: m.from.clone(), reason: reason.clone() });
                self.refuse(m.from, m.token, &m.body, reason);
                return Ok(());
            }
        }
        let Message { from, token, body, .. } = m;
        match body {
            Body::AppendEntries(a) => self.handle_append(from, token, a),
            Body::AppendEntriesResponse(r) => self.handle_append_response(from, r),
            Body::RequestVote(rv) => self.handle_vote(from, token, rv),
            Body::RequestVoteResponse(r) => self.handle_vote_response(from, r),
            Body::InstallSnapshot(s) => self.handle_install(from, token, s),
            Body::InstallSnapshotResponse(r) => self.handle_install_response(from, r),
        }
        Ok(())
    }

    /// The answer to a request that is refused: our term, nothing granted or taken, and why.
    fn refuse(&mut self, to: String, token: Option<u64>, request: &Body, reason: String) {
        let body = match request {
            Body::AppendEntries(a) => Body::AppendEntriesResponse(AppendEntriesResponse {
                term: self.term,
                success: false,
                last_applied: self.applied,
                match_index: 0,
                reject_index: a.prev_log_index,
                conflict_index: None,
                conflict_term: None,
                reason: Some(reason),
                needs_snapshot: false,
            }),
            Body::RequestVote(rv) => Body::RequestVoteResponse(RequestVoteResponse {
                term: self.term,
                vote_granted: false,
                pre_vote: rv.pre_vote,
                reason: Some(reason),
            }),
            Body::InstallSnapshot(s) => Body::InstallSnapshotResponse(InstallSnapshotResponse {
                term: self.term,
                seq: s.seq,
                success: false,
                installed_index: 0,
                reason: Some(reason),
            }),
            // Answers are never answered.
            _ => return,
        };
        self.send(to, token, body);
    }

    fn handle_append(&mut self, from: String, token: Option<u64>, a: AppendEntries) {
        if self.phase != Phase::Follower || self.leader.as_deref() != Some(from.as_str()) {
            self.become_follower(a.term, Some(from.clone()));
        }
        self.last_leader_contact = Some(self.now);
        self.holds_back_election = false;
        self.reset_election_timer();
        // Whether we are joining, before these entries change our membership (see `known_commit`).
        let joining = !self.is_voter();

        let reply = |this: &Raft, success: bool, match_index: u64, hint: Option<(u64, Option<u64>)>, reason: Option<String>| {
            Body::AppendEntriesResponse(AppendEntriesResponse {
                term: this.term,
                success,
                last_applied: this.applied,
                match_index,
                reject_index: a.prev_log_index,
                conflict_index: hint.map(|h| h.0),
                conflict_term: hint.and_then(|h| h.1),
                reason,
                needs_snapshot: this.install.is_some(),
            })
        };

        // Entries at or below our snapshot are committed, hence identical to the leader's
        // (leader completeness): skip them and match from the snapshot on.
        let mut prev = a.prev_log_index;
        let mut prev_term = a.prev_log_term;
        let mut entries = a.entries.as_slice();
        let snap = self.log.snapshot_index();
        if prev < snap {
            let skip = ((snap - prev) as usize).min(entries.len());
            entries = &entries[skip..];
            if entries.is_empty() {
                let body = reply(self, true, snap, None, None);
                self.send(from, token, body);
                return;
            }
            prev = snap;
            prev_term = self.log.snapshot_term();
        }
        if !entries.is_empty() {
            // A brand-new node that hears from a leader is part of that leader's cluster, not
            // a cluster of its own.
            self.bootstrap = None;
        }
        if self.install.is_some() {
            // Only a snapshot helps now. Taking entries meanwhile could leave this node, which may
            // not campaign, with the longest log, refusing every candidate.
            let body = reply(self, false, 0, None, Some("waiting for a snapshot".into()));
            self.send(from, token, body);
            return;
        }

        if let (0, 0, Some(peers)) = (prev, self.log.snapshot_index(), &a.peers) {
            let base = Membership::from_members(peers.iter().map(|p| (p.id.clone(), p.metadata.clone())));
            if base != self.base {
                self.base = base;
                self.dirty = true;
                self.refresh_members();
            }
        }
        match self.log.term(prev) {
            Some(t) if t == prev_term => {}
            found => {
                let hint = if prev > self.log.last_index() || found.is_none() {
                    (self.log.last_index() + 1, None)
                } else {
                    (self.log.first_index_of_term_at(prev), found)
                };
                let body = reply(self, false, 0, Some(hint), Some("log does not match at prevLogIndex".into()));
                self.send(from, token, body);
                return;
            }
        }

        let mut changed_membership = false;
        let mut truncated = false;
        let mut failed = false;
        for e in entries {
            match self.log.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    if e.index <= self.commit {
                        // Before anything was changed: entries in front of a conflict matched.
                        let reason = format!("entry {} conflicts with a committed entry", e.index);
                        self.events.push(Event::Rejected { from: from.clone(), reason: reason.clone() });
                        let body = reply(self, false, 0, None, Some(reason));
                        self.send(from, token, body);
                        return;
                    }
                    self.log.truncate_from(e.index);
                    self.persisted = self.persisted.min(e.index - 1);
                    self.drop_acks_from(e.index);
                    truncated = true;
                }
                None => {}
            }
            if self.log.append(e.clone()).is_err() {
                // Validation guarantees contiguity and terms; a failure means our own log was
                // shorter than prev, which the match check above rules out.
                failed = true;
                break;
            }
            self.dirty = true;
            changed_membership |= e.kind.is_membership();
        }
        if truncated || changed_membership {
            self.refresh_members();
        }
        if failed {
            let body = reply(self, false, 0, None, Some("entries could not be appended".into()));
            self.send(from, token, body);
            return;
        }
        // The commit index we take is capped at the prefix this message proved we share with
        // the leader: a commit index past it would vouch for entries we do not hold.
        let last_new = prev + entries.len() as u64;
        let commit = a.leader_commit.min(last_new);
        if commit > self.commit {
            self.commit = commit;
        }
        let announced = if joining { a.leader_commit } else { commit };
        if announced > self.known_commit {
            self.known_commit = announced;
            // Worth a save only while our log is shorter (it is what stops us campaigning).
            if announced > self.log.last_index() {
                self.dirty = true;
            }
        } else if self.known_commit > self.log.last_index()
            && !joining
            && a.leader_commit <= last_new
            && self.members.contains(&from)
        {
            // A leader that is a member as we see it says we hold everything it committed: what
            // we were told while joining (by whoever it was) is settled.
            self.known_commit = self.commit;
            self.dirty = true;
        }
        let body = reply(self, true, last_new, None, None);
        self.send(from, token, body);
    }

    /// Our log was truncated at `index`: acknowledgements still queued that cover it would
    /// promise entries no disk will hold, so they become refusals (each still answers its
    /// request).
    fn drop_acks_from(&mut self, index: u64) {
        for m in &mut self.msgs {
            if let Body::AppendEntriesResponse(r) = &mut m.body {
                if r.success && r.match_index >= index {
                    r.success = false;
                    r.match_index = 0;
                    r.reason = Some(format!("entries from {index} on were replaced"));
                }
            }
        }
    }

    fn handle_append_response(&mut self, from: String, r: AppendEntriesResponse) {
        if !self.is_leader() {
            return;
        }
        let last = self.log.last_index();
        let now = self.now;
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_heard = now;
        p.applied = p.applied.max(r.last_applied);
        if p.state == ProgressState::Snapshot || r.needs_snapshot {
            // Only a snapshot helps this follower; what a success says about its log still holds,
            // and counts toward commitment now: later answers repeating the same matchIndex do
            // not advance the progress, so nothing else would (no commit, ever, when no new
            // entry comes: clients waiting for this very commit).
            let advanced = r.success && r.match_index > p.match_index && r.match_index <= last;
            if advanced {
                p.match_index = r.match_index;
            }
            if p.state == ProgressState::Snapshot {
                // Answers to heartbeats during a transfer say nothing about the transfer, but one
                // that is needed and not started (the follower was silent) can start now.
                if p.pending_snapshot == 0 {
                    self.events.push(Event::SnapshotNeeded { peer: from });
                }
                if advanced {
                    self.maybe_commit();
                }
                return;
            }
            self.enter_snapshot(&from);
            self.maybe_commit();
            return;
        }
        if r.success {
            if r.match_index > last {
                self.events.push(Event::Rejected { from, reason: format!("matchIndex {} is past our log", r.match_index) });
                return;
            }
            if p.on_success(r.match_index, now) {
                self.maybe_commit();
            }
            self.send_append(&from, false);
            return;
        }
        // Rejected: is this answer about what we are sending now?
        let stale = match p.state {
            ProgressState::Replicate => r.reject_index < p.match_index,
            ProgressState::Probe => r.reject_index + 1 != p.next_index,
            ProgressState::Snapshot => true,
        };
        if stale {
            return;
        }
        let mut next = match (r.conflict_term, r.conflict_index) {
            (Some(t), Some(ci)) => match self.log.last_index_of_term(t) {
                Some(li) => li + 1,
                None => ci,
            },
            (None, Some(ci)) => ci,
            _ => r.reject_index,
        };
        next = next.min(r.reject_index).max(p.match_index + 1);
        p.become_probe();
        p.next_index = next;
        self.send_append(&from, false);
    }

    fn handle_vote(&mut self, from: String, token: Option<u64>, rv: RequestVote) {
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

    fn handle_vote_response(&mut self, from: String, r: RequestVoteResponse) {
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

/// Checks a message for things no correct peer sends. Nothing about the receiver's state is
/// consulted, so a malformed message changes nothing.
fn validate(body: &Body) -> Result<(), String> {
    let term = body.term();
    if term > MAX_TERM {
        return Err(format!("term {term} is too large: it leaves no room for elections"));
    }
    let check = |what: &str, v: u64| if v > MAX_SAFE { Err(format!("{what} {v} is too large")) } else { Ok(()) };
    match body {
        Body::AppendEntries(a) => {
            check("prevLogIndex", a.prev_log_index)?;
            check("leaderCommit", a.leader_commit)?;
            if a.prev_log_term > a.term {
                return Err("prevLogTerm is past the message term".into());
            }
            let mut last_term = a.prev_log_term;
            for (expect, e) in (a.prev_log_index + 1..).zip(a.entries.iter()) {
                if e.index != expect {
                    return Err(format!("entry index {} where {} was expected", e.index, expect));
                }
                if e.term < last_term || e.term > a.term {
                    return Err(format!("entry {} has term {} out of order", e.index, e.term));
                }
                check("index", e.index)?;
                last_term = e.term;
            }
            if a.leader_id.is_empty() {
                return Err("empty leaderId".into());
            }
        }
        Body::AppendEntriesResponse(r) => {
            check("matchIndex", r.match_index)?;
            check("rejectIndex", r.reject_index)?;
            check("lastApplied", r.last_applied)?;
            if let Some(ci) = r.conflict_index {
                check("conflictIndex", ci)?;
            }
        }
        Body::RequestVote(rv) => {
            check("lastLogIndex", rv.last_log_index)?;
            if rv.last_log_term > rv.term {
                return Err("lastLogTerm is past the message term".into());
            }
            if rv.candidate_id.is_empty() {
                return Err("empty candidateId".into());
            }
        }
        Body::RequestVoteResponse(_) => {}
        Body::InstallSnapshot(s) => {
            check("lastIncludedIndex", s.last_included_index)?;
            if s.last_included_term > s.term {
                return Err("lastIncludedTerm is past the message term".into());
            }
        }
        Body::InstallSnapshotResponse(r) => check("installedIndex", r.installed_index)?,
    }
    Ok(())
}
