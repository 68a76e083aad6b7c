//! skiff-rs: the native side of the `skiff-rs` npm package.
//!
//! - `skiff-core` (crates/skiff-core) is the sans-IO Raft state machine;
//! - [`driver`] runs one core per node on tokio and performs its IO;
//! - `binding` exposes the driver to JS as `RaftNode` (napi), translating values and errors.
#![deny(clippy::all)]
#![cfg_attr(test, allow(dead_code))]

mod binding;
pub mod driver;
