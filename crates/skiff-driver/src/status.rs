//! What the JS side may read synchronously about a running node.

use skiff_core::Membership;

/// The driver's last published view. Written by the driver after each round; read by the
/// binding's getters (`currentTerm()`, `currentLeader()`, `state.name`, `peerMeta()`).
#[derive(Debug, Clone)]
pub struct Status {
    pub term: u64,
    pub leader: Option<String>,
    /// `idle` until persisted state is loaded, then the core's role, and `stopped` at the end.
    pub state: &'static str,
    pub members: Membership,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
}

impl Default for Status {
    fn default() -> Status {
        Status {
            term: 0,
            leader: None,
            state: "idle",
            members: Membership::new(),
            commit: 0,
            applied: 0,
            last_index: 0,
        }
    }
}
