//! What the core asks its runtime to do.

use crate::entry::Entry;
use crate::message::Message;
use crate::Role;

/// Term and vote: the part of the durable state that elections change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: Option<String>,
}

/// A read that may now be served from the local state machine: it has applied `index`, which
/// was the leader's commit index at a moment it was confirmed to lead (see
/// [`crate::Raft::read_index`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub id: u64,
    pub index: u64,
}

/// A read that failed; the runtime answers it with the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFailure {
    pub id: u64,
    pub error: crate::ReadError,
}

/// Things worth telling the user about, in the order they happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The role changed (`state` and `<role>` events).
    Role(Role),
    /// The known leader changed.
    Leader(Option<String>),
    /// A member was added to (or had its metadata changed in) the membership this node acts on.
    Joined { id: String },
    /// A member was removed.
    Left { id: String },
    /// This node granted its vote.
    VoteGranted { candidate: String },
    ElectionTimeout,
    ResetElectionTimeout,
    /// A leader sent a round of heartbeats.
    Heartbeat,
    /// The removal of this node from the cluster committed while it led it: it has stepped down
    /// and should stop.
    RemovedSelf,
    /// A message from a peer was refused as malformed or impossible; no state changed.
    Rejected { from: String, reason: String },
    /// Leader: `peer` needs entries that compaction removed; stream it a snapshot
    /// ([`crate::Raft::begin_snapshot`]).
    SnapshotNeeded { peer: String },
    /// Leader: `peer` took chunk `seq`; send the next one.
    SnapshotAcked { peer: String, seq: u64 },
    /// Leader: `peer` installed the snapshot; the transfer is over.
    SnapshotInstalled { peer: String },
    /// Leader: `peer` refused a chunk, or this node stopped leading: abandon the transfer.
    /// `next_seq`: where the follower says its partial install of this transfer stands (0: it
    /// holds none); the runtime checks it against what it sent before resuming there.
    SnapshotFailed { peer: String, next_seq: u64 },
    /// Follower: a snapshot chunk to write (see [`crate::Raft::begin_install`]). Answer it with
    /// [`crate::Raft::snapshot_reply`] once it is written.
    SnapshotChunk { from: String, token: Option<u64>, chunk: crate::message::InstallSnapshot },
}

/// Identifies a save: pass it to [`crate::Raft::advance`] once the save is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistToken {
    /// The last log entry (index, term) the save holds.
    pub last: (u64, u64),
    /// The term it writes: once durable, a leader of that term may send before saving.
    pub term: u64,
}

/// What one save must write: the delta since the previous `Ready` that asked for a save.
///
/// The persisted document is term, vote, the log's base (snapshot position, membership at it,
/// a pending install) and the log entries. The base is small and always written whole (read
/// it from the core when `ready()` returns, e.g. with [`crate::persisted::SaveDocument`]); the
/// entries below `truncate_from` are those the previous save wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveDelta {
    pub hard_state: HardState,
    /// The first index whose entry is new or replaced since the previous save: the saved log
    /// keeps the previous entries below it (and from the log's first index on), then
    /// `entries`. After a restart, the first save's delta holds the whole log.
    pub truncate_from: u64,
    /// The log from `truncate_from` to its end.
    pub entries: Vec<Entry>,
    /// The log's base (snapshot position, base membership, pending install, known commit)
    /// differs from the previous save's.
    pub base_changed: bool,
    pub token: PersistToken,
}

/// The log's base as a save wrote it: what `SaveDelta::base_changed` compares with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SavedBase {
    pub snapshot: (u64, u64),
    pub install: Option<(u64, u64)>,
    pub known_commit: u64,
}

/// What the core knows of its saves.
///
/// Invariant: `durable_term` is the term of the newest save the runtime reported durable (or
/// that was restored); `base` is the base the last `SaveDelta` carried.
#[derive(Debug, Default)]
pub(crate) struct Saves {
    pub durable_term: u64,
    pub base: SavedBase,
}

/// The output of one round of input.
///
/// The runtime must handle a `Ready` in this order:
/// 1. `messages` may go at once (after those of earlier `Ready`s);
/// 2. if `save` is set, durably write it (term, vote, log and membership together); only then
///    send `persisted_messages` (votes and acknowledgements promise durability) and call
///    [`crate::Raft::advance`] with its `token`. The core decides which messages may go
///    before the save: a leader whose term and vote are already durable sends its
///    AppendEntries requests while it saves the same entries (Raft thesis §10.2.1); it counts
///    itself only once `advance` says so. Without a save, `persisted_messages` is empty;
/// 3. `committed` may be applied at any time, in order, each once: every entry in it is already
///    durable locally and committed by a majority. Report progress with
///    [`crate::Raft::applied_to`].
///
/// `reads` and `read_failures` answer [`crate::Raft::read_index`] calls, each once, and may be
/// answered at any time.
///
/// `events` are informational and may be dropped.
#[derive(Debug, Default)]
pub struct Ready {
    pub save: Option<SaveDelta>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadState>,
    pub read_failures: Vec<ReadFailure>,
    pub events: Vec<Event>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.save.is_none()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.read_failures.is_empty()
            && self.events.is_empty()
    }

    /// Every message, in the order they may go: for a runtime that sends them all after the save.
    pub fn all_messages(self) -> impl Iterator<Item = Message> {
        self.messages.into_iter().chain(self.persisted_messages)
    }
}
