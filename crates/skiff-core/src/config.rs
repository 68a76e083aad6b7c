//! Settings of one core.

use crate::entry::Json;
use crate::membership::Membership;
use crate::log::RaftLog;
use crate::ready::HardState;

/// Timing is in logical milliseconds: the runtime passes the current time to
/// [`crate::Raft::tick`], so a simulation can drive many cores from one clock.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: String,
    pub heartbeat_interval: u64,
    pub min_election_timeout: u64,
    pub max_election_timeout: u64,
    /// Upper bounds for one AppendEntries.
    pub max_entries_per_message: usize,
    pub max_bytes_per_message: usize,
    /// AppendEntries in flight per follower before the leader waits for answers.
    pub max_inflight: usize,
    /// Committed entries handed out by one `Ready`, so that one round never grows without bound.
    pub max_committed_per_ready: usize,
    /// Ask for pre-votes before disrupting the cluster with a new term (Raft thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a majority for an election timeout steps down.
    pub check_quorum: bool,
    /// Applied entries kept in the log after compaction (`retainedLogEntries`). Followers that
    /// need older entries get a snapshot instead.
    pub retained_log_entries: u64,
    /// Seed of the core's own generator (election timeouts, entry ids).
    pub seed: u64,
}

impl Config {
    pub fn new(id: impl Into<String>) -> Config {
        Config {
            id: id.into(),
            heartbeat_interval: 50,
            min_election_timeout: 150,
            max_election_timeout: 300,
            max_entries_per_message: 1024,
            max_bytes_per_message: 1 << 20,
            max_inflight: 16,
            max_committed_per_ready: 4096,
            pre_vote: true,
            check_quorum: true,
            retained_log_entries: 50,
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.is_empty() {
            return Err(ConfigError("id must not be empty".into()));
        }
        if self.heartbeat_interval == 0 {
            return Err(ConfigError("heartbeatInterval must be positive".into()));
        }
        if self.max_election_timeout < self.min_election_timeout {
            return Err(ConfigError("maxElectionTimeout must not be below minElectionTimeout".into()));
        }
        if self.heartbeat_interval >= self.min_election_timeout {
            return Err(ConfigError("heartbeatInterval must be below minElectionTimeout".into()));
        }
        if self.max_entries_per_message == 0 || self.max_inflight == 0 || self.max_committed_per_ready == 0 {
            return Err(ConfigError("batch limits must be positive".into()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// What a node starts from: what persistence gave back, or nothing.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    pub log: RaftLog,
    /// Membership as of `log.snapshot_index()`; the log's membership entries apply on top.
    pub base: Membership,
    /// Where the state machine is (`lastAppliedCommitIndex`): everything up to it is committed.
    pub applied: u64,
    /// For a brand-new node that is not a standby: it forms a one-member cluster with this
    /// metadata, and records that in its log when it first leads.
    pub bootstrap: Option<Json>,
    /// A snapshot install was under way when the node stopped: the state machine may be half
    /// written, so nothing may be applied until a complete snapshot is installed.
    pub install: Option<PendingInstall>,
    /// The highest commit index a leader announced (`log.meta.knownCommit`).
    pub known_commit: u64,
}

/// A snapshot being installed, recorded durably before the state machine is cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInstall {
    pub index: u64,
    pub term: u64,
    pub members: Membership,
}
