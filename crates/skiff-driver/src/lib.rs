//! skiff-driver: the runtime around a skiff-core Raft.
//!
//! Inputs run on the caller's thread, timers on a tokio task, and IO goes out as operations for
//! a host to perform (the JS wrapper, through the napi binding; or a simulation's fakes). It
//! knows nothing of napi, so the simulation drives exactly the driver that ships.

mod apply;
pub mod code;
mod connections;
mod events;
mod host;
pub mod input;
mod handoff;
mod install;
mod io;
mod lane;
mod legacy;
mod reads;
mod load;
mod requests;
mod save;
mod snapshot_send;
pub mod node;
pub mod op;
pub mod options;
pub mod status;
pub mod wire;
#[cfg(test)]
mod test_support;

pub use input::{Input, PluginError};
pub use node::{run_timers, Clock, Driver, Host, SystemClock};
pub use options::NodeOptions;
pub use status::Status;
