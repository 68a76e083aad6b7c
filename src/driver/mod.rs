//! The runtime around a core: one tokio task per node, IO through the JS wrapper.

pub mod input;
pub mod node;
pub mod op;
pub mod options;
pub mod status;

pub use input::{Input, PluginError};
pub use node::{Driver, Host};
pub use options::NodeOptions;
pub use status::Status;
