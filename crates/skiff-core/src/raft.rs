//! The Raft state machine: messages, ticks and proposals in; a [`Ready`] out.
//!
//! This file holds the [`Raft`] struct with its invariants, construction, reading, time, the
//! runtime's reports, the output and the dispatch of peer messages. The handlers live in child
//! modules, each an `impl Raft` block that sees the private fields: `election` (campaigns, votes,
//! the lease, role changes), `replication` (AppendEntries both ways, commitment), `snapshot`
//! (transfer and install), `propose` (commands and membership changes), `read_index`
//! (linearizable reads without log writes), `transfer` (leadership transfer) and `validate`
//! (what no correct peer sends).

use crate::config::{Config, ConfigError, PendingInstall, Restored};
use crate::entry::{Entry, Json};
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::*;
use crate::progress::{Progress, ProgressState};
use crate::ready::{Event, HardState, PersistToken, Ready, SavedBase, SaveDelta, Saves};
use crate::rng::Rng;
use std::collections::{BTreeMap, BTreeSet};

mod election;
mod learners;
pub use learners::PROMOTE_WITHIN;
mod propose;
mod read_index;
mod replication;
mod snapshot;
mod transfer;
mod validate;

pub use read_index::{ReadError, MAX_PENDING_READS};
pub use transfer::TransferError;
use read_index::ReadOnly;
use transfer::{Transfer, TransferIntent};

use validate::validate;

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

/// How many entries past `retained_log_entries` a leader may keep for followers that can go on
/// from its log (see [`Raft::applied_to`]), before it compacts anyway and lets them take a
/// snapshot. This is the bound on the log's growth: a leader's log holds at most
/// `retained_log_entries + HOLD_FOR_FOLLOWERS` applied entries (plus those not yet applied),
/// whatever its followers do, dead or alive.
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
    /// The transfer's id among this leader's in its term (see `InstallSnapshot::transfer`).
    pub transfer: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("not the leader")]
    NotLeader { leader: Option<String> },
    #[error("another membership change is in progress")]
    MembershipChangePending,
    #[error("the log is full: index would pass 2^53 - 1")]
    LogFull,
    /// Leadership is being handed to `target` (see [`Raft::transfer_leader`]): try again once
    /// it leads, or once the transfer is abandoned.
    #[error("leadership is being transferred to {target}")]
    Transferring { target: String },
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
    /// How many times `members` was replaced by a different membership. Lets a runtime that
    /// mirrors `members` tell in one comparison whether it changed, instead of comparing
    /// every member's id and metadata after each round.
    members_changes: u64,
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
    /// Leader: snapshot transfers begun in this term; the last one's number is its id. Reset with
    /// the term, as the term tells a leader's transfers apart from another leader's (a leader
    /// that restarts must win a later term to lead again).
    transfers_begun: u64,
    /// Leader: new entries wait to be sent when the `Ready` is built, so a burst of proposals
    /// goes out as one AppendEntries per follower.
    need_broadcast: bool,
    /// Reads waiting for a round, an answer or the state machine.
    reads: ReadOnly,
    /// Leader: the transfer under way. Cleared when this node stops leading.
    transfer: Option<Transfer>,
    /// Follower: the transfer our leader announced, if any (replaced by each of its
    /// AppendEntries).
    transfer_intent: Option<TransferIntent>,
    /// Leader that appended its own removal: the voter it hands over to once the removal
    /// commits (announced as `transferTo` meanwhile). Cleared when this node stops leading.
    successor: Option<String>,

    /// What the saves wrote (for the next `SaveDelta`) and made durable.
    saves: Saves,

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
            members_changes: 0,
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
            transfers_begun: 0,
            need_broadcast: false,
            reads: ReadOnly::default(),
            transfer: None,
            transfer_intent: None,
            successor: None,
            saves: Saves { durable_term: hard_state.term, base: SavedBase::default() },
            dirty,
            msgs: Vec::new(),
            events: Vec::new(),
            cfg,
        };
        raft.reset_election_timer();
        let batches = raft.rng.range(1, 1 << 48);
        raft.reads.start_batches(batches);
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
    /// Changes whenever `members()` does (see `members_changes`).
    pub fn members_changes(&self) -> u64 {
        self.members_changes
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
    /// Whether a membership change may be proposed now (not while leadership is handed over).
    pub fn can_change_membership(&self) -> bool {
        self.ensure_leader().is_ok() && self.commit >= self.pending_conf_index && self.transfer.is_none()
    }
    /// When the runtime should call [`Raft::tick`] next, at the latest.
    pub fn next_deadline(&self) -> u64 {
        match self.phase {
            Phase::Leader => self.heartbeat_deadline.min(self.quorum_check_deadline),
            _ => self.election_deadline,
        }
    }
    /// Whether this node votes (a learner does not: it never campaigns).
    fn is_voter(&self) -> bool {
        self.members.is_voter(&self.cfg.id)
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
                    self.maybe_promote();
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
        self.settle();
    }

    /// Moves reads and a transfer on after any input (time, a message, a save, an apply).
    fn settle(&mut self) {
        self.settle_reads();
        self.settle_transfer();
    }

    fn reset_election_timer(&mut self) {
        let timeout = self.rng.range(self.cfg.min_election_timeout, self.cfg.max_election_timeout + 1);
        self.election_deadline = self.now + timeout;
        self.events.push(Event::ResetElectionTimeout);
    }

    // ----- the runtime's reports -----

    /// Called once the save of the `Ready` with this token is durable.
    pub fn advance(&mut self, token: PersistToken) {
        let (index, term) = token.last;
        self.saves.durable_term = self.saves.durable_term.max(token.term);
        if index > self.persisted && self.log.term(index) == Some(term) {
            self.persisted = index;
            if self.is_leader() {
                self.maybe_commit();
            }
        }
        self.settle();
    }

    /// The state machine has applied everything up to `index`.
    /// Compacts the log so that at most `retained_log_entries` applied entries stay in it.
    pub fn applied_to(&mut self, index: u64) {
        if index > self.applied && index <= self.apply_cursor {
            self.applied = index;
            self.settle_reads();
        }
        let keep = self.cfg.retained_log_entries;
        if self.install.is_none() && self.applied > self.log.snapshot_index() + keep {
            let mut upto = self.applied - keep;
            if self.is_leader() {
                upto = upto.min(self.held_for_followers());
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

    /// Leader: the index the log may be compacted up to without taking from a follower entries
    /// it can go on from ([`Progress::resumes_from`]): a follower a few batches behind should
    /// get entries, not a whole snapshot, and one that was sent a snapshot must find the entries
    /// after it when the install ends (applying, and so compaction, goes on while a
    /// point-in-time snapshot streams) or when its stopped transfer resumes; otherwise it is
    /// sent a snapshot again, and under steady writes it never catches up.
    ///
    /// A follower counts while it answers (within two election timeouts), or while a transfer to
    /// it runs (the runtime watches that one and reports a stall, `snapshot_aborted`). However
    /// many followers hold it, the log keeps at most [`HOLD_FOR_FOLLOWERS`] entries past
    /// `retained_log_entries`: a follower further behind gets a snapshot.
    fn held_for_followers(&self) -> u64 {
        let since = self.now.saturating_sub(2 * self.cfg.max_election_timeout);
        let floor = self.applied.saturating_sub(self.cfg.retained_log_entries + HOLD_FOR_FOLLOWERS);
        self.progress
            .values()
            .filter(|p| p.last_heard >= since || p.snapshot_in_flight().is_some())
            .filter_map(Progress::resumes_from)
            .min()
            .map_or(u64::MAX, |m| m.max(floor))
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

    /// The term of the newest state the runtime reported durable.
    pub fn durable_term(&self) -> u64 {
        self.saves.durable_term
    }

    pub fn has_ready(&self) -> bool {
        self.dirty
            || !self.msgs.is_empty()
            || !self.events.is_empty()
            || (self.need_broadcast && self.is_leader())
            || (self.reads.round_wanted() && self.is_leader())
            || self.reads.has_output()
            || (self.install.is_none() && self.apply_cursor < self.commit.min(self.persisted))
    }

    /// Collects what the runtime must do now. See [`Ready`] for the order.
    pub fn ready(&mut self) -> Ready {
        if self.reads.take_round() && self.is_leader() {
            // A read round: every follower gets an AppendEntries carrying it now.
            self.broadcast_heartbeat();
        }
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
        let mut messages = std::mem::take(&mut self.msgs);
        let save = std::mem::take(&mut self.dirty).then(|| self.save_delta());
        let persisted_messages = match &save {
            None => Vec::new(),
            // A leader whose term (and so its vote) is on disk streams new entries to followers
            // while saving them itself (Raft thesis §10.2.1); everything else promises what
            // this save writes.
            Some(_) if self.term == self.saves.durable_term => {
                let (early, later) =
                    messages.into_iter().partition(|m| m.token.is_none() && matches!(m.body, Body::AppendEntries(_)));
                messages = early;
                later
            }
            Some(_) => std::mem::take(&mut messages),
        };
        let (reads, read_failures) = self.reads.take_output();
        Ready { save, messages, persisted_messages, committed, reads, read_failures, events: std::mem::take(&mut self.events) }
    }

    /// What the save asked for now must write: see [`SaveDelta`].
    fn save_delta(&mut self) -> SaveDelta {
        let truncate_from = self.log.take_unsaved();
        let base = SavedBase {
            snapshot: (self.log.snapshot_index(), self.log.snapshot_term()),
            install: self.install.as_ref().map(|pi| (pi.index, pi.term)),
            known_commit: self.known_commit,
        };
        let base_changed = base != self.saves.base;
        self.saves.base = base;
        SaveDelta {
            hard_state: self.hard_state(),
            truncate_from,
            entries: self.log.range(truncate_from, self.log.last_index()).cloned().collect(),
            base_changed,
            token: PersistToken { last: (self.log.last_index(), self.log.last_term()), term: self.term },
        }
    }

    fn send(&mut self, to: String, token: Option<u64>, body: Body) {
        self.msgs.push(Message { from: self.cfg.id.clone(), to, token, body });
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
        // A promotion changes no metadata and is not a join: `joined` fired when the learner came.
        for (id, m) in members.iter() {
            if self.members.metadata(id) != Some(&m.metadata) && *id != self.cfg.id {
                self.events.push(Event::Joined { id: id.clone() });
            }
        }
        let left: Vec<String> =
            self.members.ids().filter(|id| !members.contains(id) && **id != self.cfg.id).cloned().collect();
        for id in left {
            self.events.push(Event::Left { id });
        }
        self.members = members;
        self.members_changes += 1;
        if self.is_leader() {
            let next = self.log.last_index() + 1;
            let now = self.now;
            let wanted: BTreeSet<String> = self.members.ids().filter(|id| **id != self.cfg.id).cloned().collect();
            let dropped: Vec<String> = self.progress.keys().filter(|id| !wanted.contains(*id)).cloned().collect();
            for id in dropped {
                if self.progress.remove(&id).is_some_and(|p| p.state == ProgressState::Snapshot) {
                    self.events.push(Event::SnapshotFailed { peer: id, next_seq: 0 });
                }
            }
            for id in wanted {
                self.progress.entry(id).or_insert_with(|| Progress::new(next, now));
            }
        }
        self.note_role();
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
                Body::RequestVote(rv) if self.in_lease() && !self.honors_transfer_vote(rv) => {
                    // Refuse without changing term: a healthy leader is in charge.
                    self.refuse(m.from, m.token, &m.body, "a leader is active".into());
                    return Ok(());
                }
                Body::ReadIndex(_) | Body::TimeoutNow(_) => {
                    // Neither comes from a leader of a newer term: nothing to follow.
                    let reason = format!("term {} is ahead of the current term {}", term, self.term);
                    self.refuse(m.from, m.token, &m.body, reason);
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
            Body::ReadIndex(r) => self.handle_read_index(from, token, r),
            Body::ReadIndexResponse(r) => self.handle_read_index_response(from, r),
            Body::TimeoutNow(t) => self.handle_timeout_now(from, token, t),
            Body::TimeoutNowResponse(r) => self.handle_timeout_now_response(from, r),
        }
        self.settle();
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
                read_ctx: None,
            }),
            Body::RequestVote(rv) => Body::RequestVoteResponse(RequestVoteResponse {
                term: self.term,
                vote_granted: false,
                pre_vote: rv.pre_vote,
                reason: Some(reason),
            }),
            Body::InstallSnapshot(s) => {
                Body::InstallSnapshotResponse(InstallSnapshotResponse { term: self.term, ..InstallSnapshotResponse::refused(s.seq, 0, reason) })
            }
            Body::ReadIndex(r) => Body::ReadIndexResponse(crate::message::ReadIndexResponse {
                term: self.term,
                id: r.id,
                success: false,
                index: 0,
                reason: Some(reason),
            }),
            Body::TimeoutNow(_) => Body::TimeoutNowResponse(crate::message::TimeoutNowResponse {
                term: self.term,
                success: false,
                reason: Some(reason),
            }),
            // Answers are never answered.
            _ => return,
        };
        self.send(to, token, body);
    }
}
