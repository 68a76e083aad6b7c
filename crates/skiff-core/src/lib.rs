//! skiff-core: a deterministic, sans-IO Raft state machine.
//!
//! The core consumes peer messages, ticks of logical time and proposals, and produces a
//! [`Ready`]: what to persist, what to send, what to apply. It knows nothing of threads, clocks,
//! sockets or JavaScript, so whole clusters can be simulated from a seed (see the driver's
//! `tests/sim.rs`, which runs the shipped runtime around it), and the runtime in the
//! `skiff-driver` crate carries out the IO.

pub mod config;
pub mod entry;
pub mod json_out;
pub mod log;
pub mod membership;
pub mod message;
pub mod persisted;
pub mod progress;
pub mod raft;
pub mod ready;
pub mod rng;

pub use config::{Config, ConfigError, PendingInstall, Restored};
pub use entry::{Entry, EntryKind, Json};
pub use log::RaftLog;
pub use membership::{Member, Membership, Suffrage};
pub use message::{Body, Message};
pub use raft::{ProposeError, Raft, ReadError, Role, SnapshotMeta, StepError, TransferError, MAX_PENDING_READS, MAX_SAFE, PROMOTE_WITHIN};
pub use ready::{Event, HardState, PersistToken, ReadFailure, ReadState, Ready, SaveDelta};
