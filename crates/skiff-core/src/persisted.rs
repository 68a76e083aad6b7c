//! The durable state in skiff-algorithm's format, so clusters move between the two engines.
//!
//! ```text
//! { currentTerm, votedFor,
//!   log: { meta: { lastIncludedIndex, lastIncludedTerm, members? }, entries: [...] },
//!   peers: [ { id, metadata } ] }
//! ```
//!
//! `log.meta.members` is ours: the membership at `lastIncludedIndex`, which a log that starts
//! after compaction can no longer describe. skiff-algorithm ignores it. States written by
//! skiff-algorithm lack it; for them we take `peers` plus this node as the current membership
//! and recover the older one by undoing the log's membership entries.

use crate::config::{PendingInstall, Restored};
use crate::entry::{Entry, Json};
use crate::json_out::{write_array, Obj};
use crate::key;
use crate::log::{LogError, RaftLog};
use crate::membership::Membership;
use crate::message::PeerDesc;
use crate::raft::{Raft, MAX_SAFE};
use crate::ready::{HardState, SaveDelta};
use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("persisted state is not in the expected format: {0}")]
    Format(#[from] serde_json::Error),
    #[error("persisted log is inconsistent: {0}")]
    Log(#[from] LogError),
    #[error("persisted {0} is too large")]
    TooLarge(&'static str),
    /// The state machine holds entries the persisted log never recorded, and no install mark
    /// says they are a snapshot's: nothing tells which term they are of, so this node cannot
    /// take part without risking a log that disagrees with its state machine.
    #[error("the state machine is at index {applied}, past the persisted log's end at {last}, and no snapshot install accounts for it")]
    AheadOfLog { applied: u64, last: u64 },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateIn {
    #[serde(default)]
    current_term: Option<u64>,
    #[serde(default)]
    voted_for: Option<String>,
    #[serde(default)]
    log: Option<LogIn>,
    #[serde(default)]
    peers: Option<Vec<PeerIn>>,
}

#[derive(Deserialize)]
struct LogIn {
    #[serde(default)]
    meta: Option<MetaIn>,
    #[serde(default)]
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaIn {
    #[serde(default)]
    last_included_index: u64,
    #[serde(default)]
    last_included_term: u64,
    #[serde(default)]
    members: Option<Vec<PeerIn>>,
    #[serde(default)]
    pending_snapshot: Option<PendingIn>,
    #[serde(default)]
    known_commit: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingIn {
    last_included_index: u64,
    last_included_term: u64,
    #[serde(default)]
    members: Vec<PeerIn>,
}

/// A member as persisted. `voter` and `promote` are ours, written for learners only; a member
/// without them (every member skiff-algorithm wrote) is a voter.
#[derive(Deserialize)]
struct PeerIn {
    id: String,
    #[serde(default)]
    metadata: Option<Json>,
    #[serde(default)]
    voter: Option<bool>,
    #[serde(default)]
    promote: Option<bool>,
}

impl PeerIn {
    fn into_desc(self) -> PeerDesc {
        let meta = self.metadata.filter(|m| m.as_str() != "null").unwrap_or_else(Json::empty_object);
        let voter = self.voter.unwrap_or(true);
        PeerDesc { id: self.id, metadata: meta, voter, promote: !voter && self.promote == Some(true) }
    }
}

fn membership(list: Vec<PeerIn>) -> Membership {
    Membership::from_peers(list.into_iter().map(PeerIn::into_desc))
}

/// Reads what `loadMeta` returned (`null` for a node that never saved anything).
///
/// `applied` is `lastAppliedCommitIndex`; `standby` and `metadata` are this node's options, used
/// for a brand-new node (which bootstraps a one-member cluster unless it is a standby).
pub fn restore(self_id: &str, state_json: &str, applied: u64, standby: bool, metadata: &Json) -> Result<Restored, LoadError> {
    let parsed: Option<StateIn> = serde_json::from_str(state_json)?;
    let fresh = || Restored { applied, bootstrap: (!standby).then(|| metadata.clone()), ..Restored::default() };
    let Some(state) = parsed else {
        return if applied == 0 { Ok(fresh()) } else { Err(LoadError::AheadOfLog { applied, last: 0 }) };
    };
    let term = state.current_term.unwrap_or(0);
    if term > MAX_SAFE || applied > MAX_SAFE {
        return Err(LoadError::TooLarge("term or applied index"));
    }
    let (meta, entries) = match state.log {
        Some(l) => (l.meta, l.entries),
        None => (None, Vec::new()),
    };
    let (snap_index, snap_term, base_members, pending, known_commit) = match meta {
        Some(m) => (m.last_included_index, m.last_included_term, m.members, m.pending_snapshot, m.known_commit),
        None => (0, 0, None, None, 0),
    };
    if known_commit > MAX_SAFE {
        return Err(LoadError::TooLarge("knownCommit"));
    }
    let install = match pending {
        Some(p) if p.last_included_index > MAX_SAFE || p.last_included_term > MAX_SAFE => {
            return Err(LoadError::TooLarge("pending snapshot position"))
        }
        Some(p) => Some(PendingInstall {
            index: p.last_included_index,
            term: p.last_included_term,
            members: membership(p.members),
        }),
        None => None,
    };
    if snap_index > MAX_SAFE || snap_term > MAX_SAFE {
        return Err(LoadError::TooLarge("log position"));
    }
    let log = RaftLog::restore(snap_index, snap_term, entries)?;
    // Entries reach the state machine only once durable here, and an install is marked here
    // before the state machine is cleared: a state machine past the log's end is vouched for
    // only by the mark of the install that put it there (finished by `Raft::new`).
    if applied > log.last_index() && install.as_ref().is_none_or(|pi| pi.index != applied) {
        return Err(LoadError::AheadOfLog { applied, last: log.last_index() });
    }
    let peers = state.peers.unwrap_or_default();
    if term == 0 && log.last_index() == 0 && peers.is_empty() && base_members.is_none() && install.is_none() {
        return Ok(fresh());
    }
    let base = match base_members {
        Some(list) => membership(list),
        None => {
            // skiff-algorithm's format: every node that saved state took part as a member.
            let mut current = membership(peers.into_iter().filter(|p| p.id != self_id).collect());
            current.insert(self_id.to_string(), metadata.clone());
            let mut base = current;
            for e in log.iter().collect::<Vec<_>>().into_iter().rev() {
                base.unapply(&e.kind);
            }
            if !base.contains(self_id) && !log.iter().any(|e| e.kind.is_membership()) {
                base.insert(self_id.to_string(), metadata.clone());
            }
            base
        }
    };
    Ok(Restored {
        hard_state: HardState { term, vote: state.voted_for },
        log,
        base,
        applied,
        bootstrap: None,
        install,
        known_commit,
    })
}

/// A view of a core's durable state that serializes in the persisted format.
pub struct PersistedState<'a>(pub &'a Raft);

/// What one save writes, in the persisted format: the delta's term, vote and entries (only
/// those from `truncate_from` on: for a runtime that keeps the earlier ones of the previous save)
/// with the log's base and membership read from the core. Serialize it when `ready()` returns.
pub struct SaveDocument<'a>(pub &'a Raft, pub &'a SaveDelta);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateOut<'a, E: Serialize> {
    current_term: u64,
    voted_for: Option<&'a str>,
    log: LogOut<'a, E>,
    peers: Peers<'a>,
}

#[derive(Serialize)]
struct LogOut<'a, E: Serialize> {
    meta: MetaOut<'a>,
    entries: E,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetaOut<'a> {
    last_included_index: u64,
    last_included_term: u64,
    members: Peers<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_snapshot: Option<PendingOut<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    known_commit: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PendingOut<'a> {
    last_included_index: u64,
    last_included_term: u64,
    members: Peers<'a>,
}

struct Peers<'a> {
    members: &'a Membership,
    except: Option<&'a str>,
}

impl Serialize for Peers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.members.peers().filter(|p| Some(p.id.as_str()) != self.except),
        )
    }
}

struct Entries<'a>(&'a RaftLog);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// The document for `raft`'s base and membership with this term, vote and entries.
fn state_out<'a, E: Serialize>(raft: &'a Raft, term: u64, vote: Option<&'a str>, entries: E) -> StateOut<'a, E> {
    StateOut {
        current_term: term,
        voted_for: vote,
        log: LogOut {
            meta: MetaOut {
                last_included_index: raft.log().snapshot_index(),
                last_included_term: raft.log().snapshot_term(),
                members: Peers { members: raft.base_members(), except: None },
                pending_snapshot: raft.pending_install().map(|pi| PendingOut {
                    last_included_index: pi.index,
                    last_included_term: pi.term,
                    members: Peers { members: &pi.members, except: None },
                }),
                known_commit: raft.known_commit(),
            },
            entries,
        },
        peers: Peers { members: raft.members(), except: Some(raft.id()) },
    }
}

impl Serialize for PersistedState<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (term, vote) = self.0.hard_state_ref();
        state_out(self.0, term, vote, Entries(self.0.log())).serialize(s)
    }
}

impl Serialize for SaveDocument<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hs = &self.1.hard_state;
        state_out(self.0, hs.term, hs.vote.as_deref(), &self.1.entries).serialize(s)
    }
}

impl SaveDocument<'_> {
    /// The document as JSON text: what its `Serialize` form writes (the tests hold the two
    /// together), without serde, as every command saves one on each node.
    pub fn to_json_text(&self) -> String {
        let raft = self.0;
        let mut out = String::with_capacity(256 + self.1.entries.iter().map(Entry::json_len_hint).sum::<usize>());
        let mut doc = Obj::begin(&mut out);
        doc.u64(key!("currentTerm"), self.1.hard_state.term).opt_str(key!("votedFor"), self.1.hard_state.vote.as_deref());
        let mut log = Obj::begin(doc.key(key!("log")));
        let mut meta = Obj::begin(log.key(key!("meta")));
        meta.u64(key!("lastIncludedIndex"), raft.log().snapshot_index()).u64(key!("lastIncludedTerm"), raft.log().snapshot_term());
        raft.base_members().write_json(meta.key(key!("members")), None);
        if let Some(pi) = raft.pending_install() {
            let mut pending = Obj::begin(meta.key(key!("pendingSnapshot")));
            pending.u64(key!("lastIncludedIndex"), pi.index).u64(key!("lastIncludedTerm"), pi.term);
            pi.members.write_json(pending.key(key!("members")), None);
            pending.end();
        }
        if raft.known_commit() != 0 {
            meta.u64(key!("knownCommit"), raft.known_commit());
        }
        meta.end();
        write_array(log.key(key!("entries")), &self.1.entries, |out, e| e.write_json(out));
        log.end();
        raft.members().write_json(doc.key(key!("peers")), Some(raft.id()));
        doc.end();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const ORIGINAL: &str = r#"{
      "currentTerm": 3, "votedFor": "node-b",
      "log": { "meta": { "lastIncludedIndex": 120, "lastIncludedTerm": 2 },
               "entries": [ { "term": 3, "index": 121, "command": "x", "uuid": "a" },
                            { "term": 3, "index": 122, "command": ["add peer", "node-d", { "zone": "b" }], "topologyChange": true, "uuid": "b" } ] },
      "peers": [ { "id": "node-b", "metadata": {} }, { "id": "node-c", "metadata": {} }, { "id": "node-d", "metadata": { "zone": "b" } } ]
    }"#;

    #[test]
    fn restores_skiff_algorithm_state() {
        let r = restore("node-a", ORIGINAL, 121, false, &Json::empty_object()).unwrap();
        assert_eq!(r.hard_state, HardState { term: 3, vote: Some("node-b".into()) });
        assert_eq!((r.log.snapshot_index(), r.log.last_index()), (120, 122));
        assert_eq!(r.base.ids().cloned().collect::<Vec<_>>(), vec!["node-a", "node-b", "node-c"]);
        assert!(r.bootstrap.is_none());
        let raft = Raft::new(Config::new("node-a"), r).unwrap();
        assert_eq!(raft.members().len(), 4);
        assert_eq!(raft.members().metadata("node-d").unwrap().as_str(), r#"{"zone":"b"}"#);
        assert_eq!(raft.commit(), 121);
    }

    #[test]
    fn our_state_round_trips_and_keeps_original_names() {
        let r = restore("node-a", ORIGINAL, 121, false, &Json::empty_object()).unwrap();
        let raft = Raft::new(Config::new("node-a"), r).unwrap();
        let text = serde_json::to_string(&PersistedState(&raft)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["currentTerm"], 3);
        assert_eq!(v["votedFor"], "node-b");
        assert_eq!(v["log"]["meta"]["lastIncludedIndex"], 120);
        assert_eq!(v["log"]["entries"][1]["topologyChange"], true);
        assert_eq!(v["peers"].as_array().unwrap().len(), 3);
        let again = restore("node-a", &text, 121, false, &Json::empty_object()).unwrap();
        let raft2 = Raft::new(Config::new("node-a"), again).unwrap();
        assert_eq!(raft2.members(), raft.members());
        assert_eq!(raft2.base_members(), raft.base_members());
    }

    /// Node `node-a` restored from `state`, and the save it asks for after a vote request of a
    /// newer term (something to save, with the log unchanged).
    fn save_after_a_newer_term(state: &str, applied: u64) -> (Raft, SaveDelta) {
        let r = restore("node-a", state, applied, false, &Json::empty_object()).unwrap();
        let mut raft = Raft::new(Config::new("node-a"), r).unwrap();
        let _ = raft.ready();
        let body = crate::message::Body::RequestVote(crate::message::RequestVote {
            term: 5,
            candidate_id: "node-c".into(),
            last_log_index: 122,
            last_log_term: 3,
            pre_vote: false,
            transfer: false,
        });
        raft.step(crate::message::Message { from: "node-c".into(), to: "node-a".into(), token: Some(1), body }).unwrap();
        let save = raft.ready().save.expect("the restored node saves once something changes");
        (raft, save)
    }

    #[test]
    fn the_first_save_after_a_restore_writes_the_whole_state() {
        let (raft, save) = save_after_a_newer_term(ORIGINAL, 121);
        assert_eq!(save.truncate_from, 121, "the wrapper holds no entries yet: all of them");
        assert_eq!(save.hard_state.term, 5);
        let doc = serde_json::to_string(&SaveDocument(&raft, &save)).unwrap();
        assert_eq!(doc, serde_json::to_string(&PersistedState(&raft)).unwrap());
        assert_eq!(SaveDocument(&raft, &save).to_json_text(), doc);
    }

    #[test]
    fn the_hand_written_document_is_the_serde_document() {
        // learners (one to promote), a pending install, a known commit, an id to escape
        let state = r#"{"currentTerm":3,"votedFor":null,
          "log":{"meta":{"lastIncludedIndex":120,"lastIncludedTerm":2,
            "members":[{"id":"node-a","metadata":{}},{"id":"n\"q","metadata":{"z":1},"voter":false,"promote":true},{"id":"node-e","metadata":{},"voter":false}],
            "pendingSnapshot":{"lastIncludedIndex":300,"lastIncludedTerm":3,"members":[{"id":"node-a","metadata":{}}]},
            "knownCommit":122},
          "entries":[{"term":3,"index":121,"command":"x","uuid":"a"},{"term":3,"index":122,"command":["add peer","node-d",{"zone":"b"},{"voter":false}],"topologyChange":true,"uuid":"b"}]},
          "peers":[]}"#;
        let (raft, save) = save_after_a_newer_term(state, 120);
        let doc = serde_json::to_string(&SaveDocument(&raft, &save)).unwrap();
        assert!(doc.contains("pendingSnapshot") && doc.contains("knownCommit") && doc.contains("promote"), "{doc}");
        assert_eq!(SaveDocument(&raft, &save).to_json_text(), doc);
    }

    #[test]
    fn null_means_fresh() {
        let meta = Json::from_text(r#"{"a":1}"#).unwrap();
        let r = restore("n", "null", 0, false, &meta).unwrap();
        assert_eq!(r.bootstrap, Some(meta.clone()));
        let r = restore("n", "null", 0, true, &meta).unwrap();
        assert_eq!(r.bootstrap, None);
    }

    #[test]
    fn junk_is_refused() {
        let m = Json::empty_object();
        assert!(restore("n", r#"{"currentTerm":"x"}"#, 0, false, &m).is_err());
        assert!(restore("n", r#"[1,2]"#, 0, false, &m).is_err());
        assert!(restore("n", r#"{"log":{"entries":[{"term":1,"index":3,"command":1}]}}"#, 0, false, &m).is_err());
        assert!(restore("n", r#"{"currentTerm":-1}"#, 0, false, &m).is_err());
    }

    /// A state machine past the log's end is taken only with the mark of the install that put
    /// it there (the restart then finishes that install); anything else is refused, not
    /// repaired, since nothing says which term its entries are of.
    #[test]
    fn a_state_machine_past_the_log_is_refused_unless_an_install_mark_vouches_for_it() {
        let m = Json::empty_object();
        let log_to_2 = r#"{"currentTerm":2,"log":{"meta":{"lastIncludedIndex":0,"lastIncludedTerm":0},
            "entries":[{"term":1,"index":1,"command":1},{"term":2,"index":2,"command":2}]},"peers":[]}"#;
        assert!(restore("n", log_to_2, 2, false, &m).is_ok());
        assert!(matches!(restore("n", log_to_2, 5, false, &m), Err(LoadError::AheadOfLog { applied: 5, last: 2 })));
        assert!(matches!(restore("n", "null", 5, false, &m), Err(LoadError::AheadOfLog { applied: 5, last: 0 })));
        let marked = |index: u64| {
            format!(
                r#"{{"currentTerm":3,"log":{{"meta":{{"lastIncludedIndex":0,"lastIncludedTerm":0,
                "pendingSnapshot":{{"lastIncludedIndex":{index},"lastIncludedTerm":3,"members":[{{"id":"n","metadata":{{}}}}]}}}},
                "entries":[]}},"peers":[]}}"#
            )
        };
        assert!(matches!(restore("n", &marked(6), 5, false, &m), Err(LoadError::AheadOfLog { .. })));
        let r = restore("n", &marked(5), 5, false, &m).unwrap();
        let raft = Raft::new(Config::new("n"), r).unwrap();
        assert_eq!((raft.log().snapshot_index(), raft.commit(), raft.applied()), (5, 5, 5), "the marked install is finished");
        assert!(raft.pending_install().is_none());
    }
}
