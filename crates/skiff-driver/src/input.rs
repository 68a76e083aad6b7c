//! What the JS side tells a running node (see docs/PROTOCOL.md).

use serde::Deserialize;

/// An error a plugin passed to its callback, as the wrapper forwards it.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct PluginError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

impl PluginError {
    pub fn message(&self) -> String {
        self.message.clone().unwrap_or_else(|| "plugin failed".into())
    }
    pub fn code_or(&self, fallback: &str) -> String {
        self.code.clone().unwrap_or_else(|| fallback.to_string())
    }
}

#[derive(Debug)]
pub enum Input {
    Propose { req: u32, command: String, timeout_ms: u64, wait_for: Option<String> },
    /// `join`: adds `peer` as a learner that the leader promotes to voter once it caught up.
    Join { req: u32, peer: String, metadata: String },
    /// `addLearner`: adds `peer` as a permanent learner (a read replica).
    AddLearner { req: u32, peer: String, metadata: String },
    Leave { req: u32, peer: String },
    /// `read()`: answered once this node's state machine may be read linearizably. `timeout_ms`
    /// 0: the node's `commandTimeout`.
    Read { req: u32, lease: bool, timeout_ms: u64 },
    /// `transferLeadership()`: to `peer`, or with `None` to the most up-to-date voter.
    Transfer { req: u32, peer: Option<String> },
    /// An IO operation finished: `error` from the plugin, or its result as JSON text.
    Complete { io: u32, error: Option<PluginError>, result: Option<String> },
    /// Item `index` of apply batch `io` was applied.
    ApplyProgress { io: u32, index: u64 },
    /// A request from a peer; answer with a `reply` op carrying `reply`. `peer` is the id the
    /// connection it came on was opened with (`None`: the transport gave none), which the
    /// message's `leaderId`/`candidateId` must name.
    Receive { reply: u64, kind: String, args: String, peer: Option<String> },
    SetListened(Vec<String>),
    /// The connection to `peer` declared `pipelining: true` (see `Driver::pipelines`).
    Pipelining { peer: String },
    Stop { req: u32 },
}
