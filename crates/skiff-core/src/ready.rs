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
    SnapshotFailed { peer: String },
    /// Follower: a snapshot chunk to write (see [`crate::Raft::begin_install`]). Answer it with
    /// [`crate::Raft::snapshot_reply`] once it is written.
    SnapshotChunk { from: String, token: Option<u64>, chunk: crate::message::InstallSnapshot },
}

/// The output of one round of input.
///
/// The runtime must handle a `Ready` in this order:
/// 1. if `persist` is set, durably save the state returned by [`crate::Raft::persisted_state`]
///    as of the moment `ready()` returned (term, vote, log and membership together);
/// 2. only then send `messages` (votes and acknowledgements promise durability) and call
///    [`crate::Raft::advance`] with this `Ready`'s `persist_token`. One exception: a leader's
///    AppendEntries requests may go out before its own save when its term and vote are already
///    durable (Raft thesis §10.2.1): the leader counts itself only once `advance` says so;
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
    pub persist: bool,
    /// Identifies what `persist` covers: the last log entry (index, term) when it was taken.
    pub persist_token: (u64, u64),
    pub messages: Vec<Message>,
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadState>,
    pub read_failures: Vec<ReadFailure>,
    pub events: Vec<Event>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        !self.persist
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.read_failures.is_empty()
            && self.events.is_empty()
    }
}
