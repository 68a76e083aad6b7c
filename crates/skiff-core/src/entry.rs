//! Log entries and the JSON payloads they carry.

use crate::json_out::{write_str, Obj};
use crate::key;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::sync::Arc;

/// A JSON value kept as its text.
///
/// Commands are opaque to Raft: the engine never needs to look inside them, so they are parsed
/// once (to validate them) and then carried, persisted and applied as text. `Arc` makes the
/// copies that replication needs (one per follower message) cost a reference count.
#[derive(Clone)]
pub struct Json(Arc<RawValue>);

impl Json {
    /// Validates `text` as one JSON value.
    pub fn from_text(text: &str) -> Result<Json, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_str(text)?;
        Ok(Json(Arc::from(raw)))
    }

    /// Serializes any value (used for metadata and internal commands).
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Json {
        let raw = serde_json::value::to_raw_value(value)
            .expect("serializing a serde_json-representable value cannot fail");
        Json(Arc::from(raw))
    }

    pub fn null() -> Json {
        Json::from_value(&serde_json::Value::Null)
    }

    pub fn empty_object() -> Json {
        Json::from_value(&serde_json::Map::new())
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Json {}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        let raw: Box<RawValue> = Box::deserialize(d)?;
        Ok(Json(Arc::from(raw)))
    }
}

/// What an entry does when it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A user command, handed to `persistence.applyCommand`.
    Command(Json),
    /// `['add peer', id, metadata]`: membership change, effective as soon as it is appended.
    AddPeer { id: String, metadata: Json },
    /// `['add peer', id, metadata, {voter: false, promote?: true}]`: adds a learner, which
    /// receives the log but does not vote (or turns a voter into one). With `promote`, the
    /// leader promotes it (an `AddPeer` of the same member) once it has caught up. The flags
    /// ride in a fourth element that skiff-algorithm ignores: it reads the entry as an add.
    AddLearner { id: String, metadata: Json, promote: bool },
    /// `['remove peer', id]`.
    RemovePeer { id: String },
    /// Any other `topologyChange` entry, including the barrier `['noop']` a new leader appends
    /// so that it can commit entries of earlier terms (Raft §5.4.2). The state machine never sees
    /// it. The original text is kept so that a restart or a rollback reads the same log.
    Noop(Json),
}

impl EntryKind {
    pub fn barrier() -> EntryKind {
        EntryKind::Noop(Json::from_value(&["noop"]))
    }

    pub fn is_membership(&self) -> bool {
        matches!(self, EntryKind::AddPeer { .. } | EntryKind::AddLearner { .. } | EntryKind::RemovePeer { .. })
    }

    /// Approximate size, for batching budgets.
    pub fn size_hint(&self) -> usize {
        match self {
            EntryKind::Command(c) | EntryKind::Noop(c) => c.as_str().len(),
            EntryKind::AddPeer { id, metadata } => id.len() + metadata.as_str().len() + 16,
            EntryKind::AddLearner { id, metadata, .. } => id.len() + metadata.as_str().len() + 48,
            EntryKind::RemovePeer { id } => id.len() + 16,
        }
    }
}

/// One log entry. Serialized exactly as skiff-algorithm persisted and sent it:
/// `{term, index, command, topologyChange?, uuid}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub uuid: String,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    term: u64,
    index: u64,
    command: CommandOut<'a>,
    #[serde(rename = "topologyChange", skip_serializing_if = "std::ops::Not::not")]
    topology_change: bool,
    uuid: &'a str,
}

enum CommandOut<'a> {
    Raw(&'a Json),
    Add(&'a str, &'a Json),
    AddLearner(&'a str, &'a Json, bool),
    Remove(&'a str),
}

impl Serialize for CommandOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CommandOut::Raw(j) => j.serialize(s),
            CommandOut::Add(id, meta) => ("add peer", id, meta).serialize(s),
            CommandOut::AddLearner(id, meta, promote) => {
                ("add peer", id, meta, LearnerFlags { voter: false, promote: *promote }).serialize(s)
            }
            CommandOut::Remove(id) => ("remove peer", id).serialize(s),
        }
    }
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (command, topology_change) = match &self.kind {
            EntryKind::Command(c) => (CommandOut::Raw(c), false),
            EntryKind::Noop(c) => (CommandOut::Raw(c), true),
            EntryKind::AddPeer { id, metadata } => (CommandOut::Add(id, metadata), true),
            EntryKind::AddLearner { id, metadata, promote } => (CommandOut::AddLearner(id, metadata, *promote), true),
            EntryKind::RemovePeer { id } => (CommandOut::Remove(id), true),
        };
        EntryOut { term: self.term, index: self.index, command, topology_change, uuid: &self.uuid }
            .serialize(s)
    }
}

impl Entry {
    /// About how long `write_json` makes the entry: room to reserve for it.
    pub fn json_len_hint(&self) -> usize {
        self.kind.size_hint() + 96
    }

    /// Writes the entry as its `Serialize` form does (the tests hold the two together), without
    /// serde: the hot paths (saves, AppendEntries) write one per command.
    pub fn write_json(&self, out: &mut String) {
        let mut o = Obj::begin(out);
        o.u64(key!("term"), self.term).u64(key!("index"), self.index);
        let command = o.key(key!("command"));
        let topology_change = match &self.kind {
            EntryKind::Command(c) => {
                command.push_str(c.as_str());
                false
            }
            EntryKind::Noop(c) => {
                command.push_str(c.as_str());
                true
            }
            EntryKind::AddPeer { id, metadata } | EntryKind::AddLearner { id, metadata, .. } => {
                command.push_str("[\"add peer\",");
                write_str(command, id);
                command.push(',');
                command.push_str(metadata.as_str());
                if let EntryKind::AddLearner { promote, .. } = &self.kind {
                    command.push_str(if *promote { r#",{"voter":false,"promote":true}"# } else { r#",{"voter":false}"# });
                }
                command.push(']');
                true
            }
            EntryKind::RemovePeer { id } => {
                command.push_str("[\"remove peer\",");
                write_str(command, id);
                command.push(']');
                true
            }
        };
        if topology_change {
            o.bool(key!("topologyChange"), true);
        }
        o.str(key!("uuid"), &self.uuid);
        o.end();
    }
}

#[derive(Deserialize)]
struct EntryIn {
    term: u64,
    index: u64,
    #[serde(default)]
    command: Option<Json>,
    #[serde(rename = "topologyChange", default)]
    topology_change: Option<bool>,
    #[serde(default)]
    uuid: Option<String>,
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        let e = EntryIn::deserialize(d)?;
        if e.index == 0 {
            return Err(D::Error::custom("log entry index must be at least 1"));
        }
        let command = e.command.unwrap_or_else(Json::null);
        let kind = if e.topology_change.unwrap_or(false) {
            parse_topology(&command)
        } else {
            EntryKind::Command(command)
        };
        Ok(Entry { term: e.term, index: e.index, kind, uuid: e.uuid.unwrap_or_default() })
    }
}

/// The fourth element of a learner's `add peer`: written for learners only.
#[derive(Serialize)]
struct LearnerFlags {
    voter: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    promote: bool,
}

/// Reads `['add peer', id, metadata, flags?]` and `['remove peer', id]`; anything else marked
/// `topologyChange` is an internal no-op, as skiff-algorithm treated it.
fn parse_topology(command: &Json) -> EntryKind {
    let value = command.to_value();
    let arr = value.as_array();
    let verb = arr.and_then(|a| a.first()).and_then(|v| v.as_str());
    let id = arr.and_then(|a| a.get(1)).and_then(|v| v.as_str());
    match (verb, id) {
        (Some("add peer"), Some(id)) => {
            let meta = arr
                .and_then(|a| a.get(2))
                .filter(|m| !m.is_null())
                .map(Json::from_value)
                .unwrap_or_else(Json::empty_object);
            let flags = arr.and_then(|a| a.get(3));
            let learner = flags.and_then(|f| f.get("voter")).and_then(|v| v.as_bool()) == Some(false);
            if learner {
                let promote = flags.and_then(|f| f.get("promote")).and_then(|v| v.as_bool()) == Some(true);
                return EntryKind::AddLearner { id: id.to_string(), metadata: meta, promote };
            }
            EntryKind::AddPeer { id: id.to_string(), metadata: meta }
        }
        (Some("remove peer"), Some(id)) => EntryKind::RemovePeer { id: id.to_string() },
        _ => EntryKind::Noop(command.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_in_the_original_format() {
        let text = r#"[{"term":3,"index":121,"command":"x","uuid":"u1"},{"term":3,"index":122,"command":["add peer","node-d",{"zone":"b"}],"topologyChange":true,"uuid":"u2"},{"term":3,"index":123,"command":["remove peer","node-d"],"topologyChange":true,"uuid":"u3"},{"term":4,"index":124,"command":["noop"],"topologyChange":true,"uuid":"u4"}]"#;
        let entries: Vec<Entry> = serde_json::from_str(text).unwrap();
        assert_eq!(entries[0].kind, EntryKind::Command(Json::from_text("\"x\"").unwrap()));
        assert!(matches!(&entries[1].kind, EntryKind::AddPeer { id, metadata } if id == "node-d" && metadata.as_str() == r#"{"zone":"b"}"#));
        assert!(matches!(&entries[2].kind, EntryKind::RemovePeer { id } if id == "node-d"));
        assert!(matches!(&entries[3].kind, EntryKind::Noop(_)));
        assert_eq!(serde_json::to_string(&entries).unwrap(), text);
    }

    #[test]
    fn add_peer_without_metadata_gets_an_empty_object() {
        let e: Entry = serde_json::from_str(
            r#"{"term":1,"index":1,"command":["add peer","b",null],"topologyChange":true}"#,
        )
        .unwrap();
        assert!(matches!(&e.kind, EntryKind::AddPeer { metadata, .. } if metadata.as_str() == "{}"));
    }

    #[test]
    fn learners_carry_their_flags_in_a_fourth_element() {
        let text = r#"[{"term":2,"index":5,"command":["add peer","d",{},{"voter":false,"promote":true}],"topologyChange":true,"uuid":"u"},{"term":2,"index":6,"command":["add peer","e",{},{"voter":false}],"topologyChange":true,"uuid":"v"}]"#;
        let entries: Vec<Entry> = serde_json::from_str(text).unwrap();
        assert!(matches!(&entries[0].kind, EntryKind::AddLearner { id, promote: true, .. } if id == "d"));
        assert!(matches!(&entries[1].kind, EntryKind::AddLearner { id, promote: false, .. } if id == "e"));
        assert_eq!(serde_json::to_string(&entries).unwrap(), text);
        let voter: Entry = serde_json::from_str(
            r#"{"term":1,"index":1,"command":["add peer","b",{},{"voter":true}],"topologyChange":true}"#,
        )
        .unwrap();
        assert!(matches!(&voter.kind, EntryKind::AddPeer { .. }));
    }

    #[test]
    fn the_hand_written_form_is_the_serde_form() {
        let text = r#"[{"term":3,"index":121,"command":{"k":"v\"q"},"uuid":"u1"},{"term":3,"index":122,"command":["add peer","node-d",{"zone":"b"}],"topologyChange":true,"uuid":"u2"},{"term":3,"index":123,"command":["remove peer","n\\d"],"topologyChange":true,"uuid":""},{"term":4,"index":124,"command":["noop"],"topologyChange":true,"uuid":"u4"},{"term":2,"index":125,"command":["add peer","d",{},{"voter":false,"promote":true}],"topologyChange":true,"uuid":"u"},{"term":2,"index":126,"command":["add peer","e",null,{"voter":false}],"topologyChange":true,"uuid":"v"}]"#;
        let entries: Vec<Entry> = serde_json::from_str(text).unwrap();
        for e in &entries {
            let mut out = String::new();
            e.write_json(&mut out);
            assert_eq!(out, serde_json::to_string(e).unwrap());
        }
    }

    #[test]
    fn index_zero_is_refused() {
        assert!(serde_json::from_str::<Entry>(r#"{"term":1,"index":0,"command":1}"#).is_err());
    }
}
