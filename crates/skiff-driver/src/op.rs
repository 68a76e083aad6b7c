//! Operations the engine asks the JS wrapper to carry out (see docs/PROTOCOL.md).

use super::code;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use skiff_core::json_out::{write_array, Obj};
use skiff_core::key;
use skiff_core::Json;

/// JSON text the engine wrote itself (a peer message, a saved document): valid by
/// construction, so `write_batch` copies it into a batch as it is, where a `RawValue` would
/// have parsed it once more to check it.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonText(pub String);

impl JsonText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for JsonText {
    /// The serde path (a test, an event argument): checked like any other raw JSON.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match RawValue::from_string(self.0.clone()) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_unit(),
        }
    }
}

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
    Text(JsonText),
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
        state: JsonText,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<u64>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        after: Vec<Op>,
    },
    Apply { io: u32, entries: Vec<ApplyItem> },
    Connect { peer: String, metadata: Json },
    Disconnect { peer: String },
    Send { io: u32, peer: String, #[serde(rename = "type")] kind: &'static str, args: JsonText },
    Reply { id: u64, error: Option<JsError>, result: Option<JsonText> },
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

/// The batch `ops` as JSON text: what serde writes for `Vec<Op>` (the tests hold the two
/// together), with the ops every command produces (`saveMeta`, `apply`, `send`, `reply`,
/// `done`) written by hand; the others, rare, through serde.
pub fn write_batch(ops: &[Op], out: &mut String) {
    out.reserve(ops.iter().map(Op::len_hint).sum::<usize>() + 2);
    write_array(out, ops, write_op);
}

impl Op {
    /// About how long `write_batch` makes the op: the text it carries and room for the rest,
    /// so that a batch is written into one allocation instead of being grown piece by piece.
    fn len_hint(&self) -> usize {
        64 + match self {
            Op::SaveMeta { state, after, .. } => state.0.len() + after.iter().map(Op::len_hint).sum::<usize>(),
            Op::Apply { entries, .. } => entries.iter().map(|e| 32 + e.command.as_ref().map_or(0, |c| c.as_str().len())).sum(),
            Op::Send { peer, args, .. } => peer.len() + args.0.len(),
            Op::Reply { result, .. } => result.as_ref().map_or(0, |r| r.0.len()),
            _ => 0,
        }
    }
}

fn write_op(out: &mut String, op: &Op) {
    match op {
        Op::SaveMeta { io, state, from, after } => {
            let mut o = Obj::begin(out);
            o.name(key!("op"), "saveMeta").u64(key!("io"), u64::from(*io)).raw(key!("state"), state.as_str());
            if let Some(from) = from {
                o.u64(key!("from"), *from);
            }
            if !after.is_empty() {
                write_batch(after, o.key(key!("after")));
            }
            o.end();
        }
        Op::Apply { io, entries } => {
            let mut o = Obj::begin(out);
            o.name(key!("op"), "apply").u64(key!("io"), u64::from(*io));
            write_array(o.key(key!("entries")), entries, |out, item| {
                let mut e = Obj::begin(out);
                e.u64(key!("index"), item.index);
                if let Some(c) = &item.command {
                    e.json(key!("command"), c);
                }
                if item.want {
                    e.bool(key!("want"), true);
                }
                e.end();
            });
            o.end();
        }
        Op::Send { io, peer, kind, args } => {
            let mut o = Obj::begin(out);
            o.name(key!("op"), "send").u64(key!("io"), u64::from(*io)).str(key!("peer"), peer).name(key!("type"), kind).raw(key!("args"), args.as_str());
            o.end();
        }
        Op::Reply { id, error, result } => {
            let mut o = Obj::begin(out);
            o.name(key!("op"), "reply").u64(key!("id"), *id);
            write_error(o.key(key!("error")), error.as_ref());
            o.raw(key!("result"), result.as_ref().map_or("null", JsonText::as_str));
            o.end();
        }
        Op::Done { req, error, index } => {
            let mut o = Obj::begin(out);
            o.name(key!("op"), "done").u64(key!("req"), u64::from(*req));
            write_error(o.key(key!("error")), error.as_ref());
            if let Some(index) = index {
                o.u64(key!("index"), *index);
            }
            o.end();
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_else(|_| "null".into())),
    }
}

fn write_error(out: &mut String, error: Option<&JsError>) {
    let Some(e) = error else {
        out.push_str("null");
        return;
    };
    let mut o = Obj::begin(out);
    o.str(key!("message"), &e.message).str(key!("code"), &e.code);
    if let Some(leader) = &e.leader {
        o.opt_str(key!("leader"), leader.as_deref());
    }
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_written_batch_is_the_serde_batch() {
        let text = |t: &str| JsonText(t.to_string());
        let command = Json::from_text(r#"{"k":"v"}"#).unwrap();
        let reply = Op::Reply { id: 4, error: None, result: Some(text(r#"{"term":1}"#)) };
        let ops = vec![
            Op::SaveMeta { io: 1, state: text(r#"{"currentTerm":1}"#), from: Some(3), after: vec![reply] },
            Op::SaveMeta { io: 2, state: text("{}"), from: None, after: vec![] },
            Op::Apply {
                io: 3,
                entries: vec![
                    ApplyItem { index: 7, command: Some(command), want: true },
                    ApplyItem { index: 8, command: None, want: false },
                ],
            },
            Op::Send { io: 5, peer: "n\"2".into(), kind: "AppendEntries", args: text(r#"{"term":1,"entries":[]}"#) },
            Op::Reply { id: 9, error: Some(JsError::new(code::EBADMESSAGE, "bad\nline")), result: None },
            Op::Done { req: 1, error: None, index: Some(7) },
            Op::Done { req: 2, error: Some(JsError::not_leader(Some("b".into()))), index: None },
            Op::Done { req: 3, error: Some(JsError::not_leader(None)), index: None },
            Op::Event { name: "reply", args: vec![Arg::Text(text("[1]")), Arg::node()] },
            Op::Stopped,
        ];
        let mut out = String::new();
        write_batch(&ops, &mut out);
        assert_eq!(out, serde_json::to_string(&ops).unwrap());
    }
}
