//! The runtime around a core: inputs run on the caller's thread, timers on a tokio task, and
//! IO goes through the JS wrapper.

pub mod code;
pub mod input;
mod install;
mod io;
mod lane;
mod legacy;
mod requests;
mod snapshot_send;
pub mod node;
pub mod op;
pub mod options;
pub mod status;
pub mod wire;

pub use input::{Input, PluginError};
pub use node::{run_timers, Driver, Host};
pub use options::NodeOptions;
pub use status::Status;
