//! Operations the engine asks the JS wrapper to carry out (see docs/PROTOCOL.md).

use super::code;
use serde::Serialize;
use serde_json::value::RawValue;
use skiff_core::Json;

/// A coded error as it crosses to JS, where it becomes an `Error` with these properties.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JsError {
    pub message: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<Option<String>>,
}

impl JsError {
    pub fn new(code: &str, message: impl Into<String>) -> JsError {
        JsError { message: message.into(), code: code.to_string(), leader: None }
    }

    pub fn not_leader(leader: Option<String>) -> JsError {
        JsError { message: "not the leader".into(), code: code::ENOTLEADER.into(), leader: Some(leader) }
    }
}

/// One item of an `apply` batch: a command for `applyCommand`, or (no `command`) an internal
/// entry whose index is recorded with `saveCommitIndex`.
#[derive(Debug, Serialize)]
pub struct ApplyItem {
    pub index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Json>,
    /// A local `command()` call waits for this entry: keep what `applyCommand` called back
    /// with for the `done` op that answers it (in the ops of the `progress` or `complete` call
    /// that reports the item applied). Only the engine decides when a request completes; the
    /// wrapper holds the value.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub want: bool,
}

/// An event argument: JSON, or the node itself.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Arg {
    Json(Json),
    Raw(Box<RawValue>),
    Str(String),
    Num(u64),
    Peer { id: String, metadata: Json },
    Error { message: String, code: String },
    Node {
        #[serde(rename = "$node")]
        node: bool,
    },
    Null(()),
}

impl Arg {
    pub fn node() -> Arg {
        Arg::Node { node: true }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    LoadMeta { io: u32 },
    LastApplied { io: u32 },
    /// `after`: operations the wrapper runs once this save has called back successfully (the
    /// messages that promise what the save makes durable), dropped if it fails.
    /// With `from`, `state.log.entries` holds only the entries from that index on: the wrapper
    /// keeps the earlier ones from the previous `saveMeta` (the engine sends each entry to JS
    /// once instead of with every save).
    SaveMeta {
        io: u32,
        state: Box<RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<u64>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        after: Vec<Op>,
    },
    Apply { io: u32, entries: Vec<ApplyItem> },
    Connect { peer: String, metadata: Json },
    Disconnect { peer: String },
    Send { io: u32, peer: String, #[serde(rename = "type")] kind: &'static str, args: Box<RawValue> },
    Reply { id: u64, error: Option<JsError>, result: Option<Box<RawValue>> },
    Event { name: &'static str, args: Vec<Arg> },
    /// Finishes a `command`/`join`/`leave`/`stop` call. `index` is the log index of a command,
    /// whose `applyCommand` result the wrapper kept (see `ApplyItem::want`): it hands that
    /// result to a success, and drops it on a failure.
    Done {
        req: u32,
        error: Option<JsError>,
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<u64>,
    },
    /// Read up to `max_chunks` chunks (about `max_bytes` of JSON) from the state machine's read
    /// stream `sid`, opening it on first use; answered with `{chunks, done}`.
    #[serde(rename_all = "camelCase")]
    SnapshotRead { io: u32, sid: u32, max_chunks: usize, max_bytes: usize },
    SnapshotClose { sid: u32 },
    /// Open read stream `sid` with the plugin's `createSnapshotReadStream` (a point-in-time
    /// read, taken while applying goes on); answered with the applied index it is of.
    SnapshotOpen { io: u32, sid: u32 },
    /// `removeAllState`, for the install that writes into stream `sid` (a late completion of
    /// an install abandoned since is ignored: the wrapper may log it as such).
    SnapshotReset { io: u32, sid: u32 },
    /// Write `chunks` into write stream `sid` (opened on first use); with `end`, finish the
    /// stream and then `saveCommitIndex(index)`.
    SnapshotWrite { io: u32, sid: u32, chunks: Json, end: bool, index: u64 },
    SnapshotAbort { sid: u32 },
    /// Stop the apply chain, wait until no state-machine call is under way, and answer with the
    /// last index applied.
    Quiesce { io: u32 },
    Stopped,
}
