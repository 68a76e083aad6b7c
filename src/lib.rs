//! skiff-rs: the native side of the `skiff-rs` npm package.
//!
//! - `skiff-core` (crates/skiff-core) is the sans-IO Raft state machine;
//! - `skiff-driver` (crates/skiff-driver) runs one core per node and hands its IO out as
//!   operations; timers run on tokio;
//! - `binding` exposes the driver to JS as `RaftNode` (napi), translating values and errors.
#![deny(clippy::all)]
#![cfg_attr(test, allow(dead_code))]

mod binding;
use skiff_driver as driver;
