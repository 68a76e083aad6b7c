//! Peer messages, with skiff-algorithm's type names and field names.
//!
//! Fields the original lacked and correct Raft needs (`prevLogTerm`, `matchIndex`, the conflict
//! hints, `preVote`) are added beside the original ones, so a trace still reads the same.

use crate::entry::{Entry, Json};
use crate::json_out::{write_array, Obj};
use crate::key;
use crate::membership::{Member, Suffrage};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendEntries {
    pub term: u64,
    pub leader_id: String,
    pub prev_log_index: u64,
    pub prev_log_term: u64,
    #[serde(default)]
    pub entries: Vec<Entry>,
    pub leader_commit: u64,
    /// With `prevLogIndex` 0: the membership before the first entry, when the log does not
    /// record it (see `Raft::base_for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerDesc>>,
    /// The leader's latest read round (ReadIndex, Raft thesis §6.4), echoed in the answer: an
    /// answer carrying it proves the follower still took this leader's word after the reads of
    /// that round arrived. Absent until the first round (with check-quorum, every heartbeat
    /// opens one, for the lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ctx: Option<u64>,
    /// The voter this leader is handing leadership to: a voter that heard it from its leader
    /// grants that candidate's `transfer` vote request even inside the leader lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendEntriesResponse {
    pub term: u64,
    pub success: bool,
    /// The follower's state machine position (the original's field; `waitForNode` uses it).
    #[serde(default)]
    pub last_applied: u64,
    /// On success, the last index known to match the leader's log.
    #[serde(default)]
    pub match_index: u64,
    /// On rejection, the `prevLogIndex` that did not match, so stale rejections can be told apart.
    #[serde(default)]
    pub reject_index: u64,
    /// On rejection, where the leader should look next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_term: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The follower's state machine is incomplete (an install was interrupted): only a
    /// snapshot can help it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_snapshot: bool,
    /// The request's `readCtx`, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ctx: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestVote {
    pub term: u64,
    pub candidate_id: String,
    pub last_log_index: u64,
    pub last_log_term: u64,
    /// A pre-vote asks "would you vote for me at `term`?" without anyone changing term.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_vote: bool,
    /// The candidate campaigns because its leader told it to (TimeoutNow). Voters that heard the
    /// same from that leader (`transferTo`) let it through their lease; others ignore the flag.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transfer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestVoteResponse {
    pub term: u64,
    pub vote_granted: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_vote: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One chunk of a snapshot stream. The state machine's chunks travel in `data` as the
/// persistence plugin's read stream produced them; the core only sees their positions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallSnapshot {
    pub term: u64,
    pub leader_id: String,
    pub last_included_index: u64,
    pub last_included_term: u64,
    /// Position of this chunk in the transfer, starting at 0. Lets the follower refuse gaps and
    /// ignore duplicates.
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub first: bool,
    #[serde(default)]
    pub done: bool,
    /// Chunks of the state machine (an array of the read stream's objects).
    #[serde(default)]
    pub data: Option<Json>,
    /// Membership at `lastIncludedIndex` (the log that described it was compacted away).
    #[serde(default)]
    pub peers: Option<Vec<PeerDesc>>,
    /// Which of this leader's transfers (in this term) the chunk belongs to. Two transfers of the
    /// same snapshot may cut the state machine into different chunks, so a follower resuming an
    /// install takes chunks only of the transfer it started with (0: a sender that does not say).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub transfer: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallSnapshotResponse {
    pub term: u64,
    /// The chunk this answers, and whether it was taken.
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub success: bool,
    /// Set on the answer to the last chunk once the snapshot is installed.
    #[serde(default)]
    pub installed_index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On a refusal: the chunk the follower's partial install of this same transfer waits for
    /// (0: it holds none), so that the leader resumes there instead of starting again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_seq: u64,
}

impl InstallSnapshotResponse {
    /// Chunk `seq` is written (or was already). The term is the sender's, filled in on sending.
    pub fn took(seq: u64) -> InstallSnapshotResponse {
        InstallSnapshotResponse { term: 0, seq, success: true, installed_index: 0, reason: None, next_seq: 0 }
    }

    /// Chunk `seq` completed the install of the snapshot at `index`.
    pub fn installed(seq: u64, index: u64) -> InstallSnapshotResponse {
        InstallSnapshotResponse { installed_index: index, ..InstallSnapshotResponse::took(seq) }
    }

    /// Chunk `seq` was not taken; the partial install of its transfer, if any, waits for
    /// `next_seq`.
    pub fn refused(seq: u64, next_seq: u64, reason: impl Into<String>) -> InstallSnapshotResponse {
        InstallSnapshotResponse { term: 0, seq, success: false, installed_index: 0, reason: Some(reason.into()), next_seq }
    }
}

/// A follower read: the follower asks its leader for a read index (skiff-rs peers only; a
/// skiff-algorithm node never gets one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadIndex {
    pub term: u64,
    pub follower_id: String,
    /// The follower's id for this read, echoed in the answer.
    pub id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadIndexResponse {
    pub term: u64,
    pub id: u64,
    #[serde(default)]
    pub success: bool,
    /// On success: the follower may serve the read once it applied this index.
    #[serde(default)]
    pub index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Leadership transfer (etcd's MsgTimeoutNow, Raft thesis §3.10): the leader tells a caught-up
/// voter to campaign at once, without pre-vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutNow {
    pub term: u64,
    pub leader_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutNowResponse {
    pub term: u64,
    #[serde(default)]
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// The two messages every command sends, written without serde (see `crate::json_out`); the
// tests hold each to its `Serialize` form.
impl AppendEntries {
    pub fn write_json(&self, out: &mut String) {
        let mut o = Obj::begin(out);
        o.u64(key!("term"), self.term).str(key!("leaderId"), &self.leader_id);
        o.u64(key!("prevLogIndex"), self.prev_log_index).u64(key!("prevLogTerm"), self.prev_log_term);
        write_array(o.key(key!("entries")), &self.entries, |out, e| e.write_json(out));
        o.u64(key!("leaderCommit"), self.leader_commit);
        if let Some(peers) = &self.peers {
            write_array(o.key(key!("peers")), peers, |out, p| p.write_json(out));
        }
        if let Some(ctx) = self.read_ctx {
            o.u64(key!("readCtx"), ctx);
        }
        if let Some(to) = &self.transfer_to {
            o.str(key!("transferTo"), to);
        }
        o.end();
    }
}

impl AppendEntriesResponse {
    pub fn write_json(&self, out: &mut String) {
        let mut o = Obj::begin(out);
        o.u64(key!("term"), self.term).bool(key!("success"), self.success).u64(key!("lastApplied"), self.last_applied);
        o.u64(key!("matchIndex"), self.match_index).u64(key!("rejectIndex"), self.reject_index);
        if let Some(i) = self.conflict_index {
            o.u64(key!("conflictIndex"), i);
        }
        if let Some(t) = self.conflict_term {
            o.u64(key!("conflictTerm"), t);
        }
        if let Some(r) = &self.reason {
            o.str(key!("reason"), r);
        }
        if self.needs_snapshot {
            o.bool(key!("needsSnapshot"), true);
        }
        if let Some(ctx) = self.read_ctx {
            o.u64(key!("readCtx"), ctx);
        }
        o.end();
    }
}

impl PeerDesc {
    fn write_json(&self, out: &mut String) {
        write_member(out, &self.id, &self.metadata, self.voter, self.promote);
    }
}

/// One member as a peer list holds it (`PeerDesc`'s `Serialize` form): the one writer for
/// AppendEntries' `peers` and the saved document's member lists, which write from a
/// `Membership` without making a `PeerDesc` of each member.
pub(crate) fn write_member(out: &mut String, id: &str, metadata: &Json, voter: bool, promote: bool) {
    let mut o = Obj::begin(out);
    o.str(key!("id"), id).json(key!("metadata"), metadata);
    if !voter {
        o.bool(key!("voter"), false);
    }
    if promote {
        o.bool(key!("promote"), true);
    }
    o.end();
}

// The wire names of the requests (skiff-algorithm's): the one table of them. A response
// travels as the reply to its request, under the request's name.
impl AppendEntries {
    pub const TYPE: &'static str = "AppendEntries";
}
impl RequestVote {
    pub const TYPE: &'static str = "RequestVote";
}
impl InstallSnapshot {
    pub const TYPE: &'static str = "InstallSnapshot";
}
impl ReadIndex {
    pub const TYPE: &'static str = "ReadIndex";
}
impl TimeoutNow {
    pub const TYPE: &'static str = "TimeoutNow";
}

/// A member as persisted and sent: `{id, metadata}`, plus `voter: false` (and `promote: true`
/// when it is to become a voter) for a learner. The flags are written for learners only: a
/// member without them is a voter, which is how skiff-algorithm's lists read, and
/// skiff-algorithm ignores them when it reads ours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDesc {
    pub id: String,
    #[serde(default = "Json::empty_object")]
    pub metadata: Json,
    #[serde(default = "voter_default", skip_serializing_if = "is_voter")]
    pub voter: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote: bool,
}

fn voter_default() -> bool {
    true
}

fn is_voter(voter: &bool) -> bool {
    *voter
}

impl PeerDesc {
    pub fn new(id: String, member: &Member) -> PeerDesc {
        let (voter, promote) = member.suffrage.flags();
        PeerDesc { id, metadata: member.metadata.clone(), voter, promote }
    }

    /// A voter with this metadata.
    pub fn voter(id: String, metadata: Json) -> PeerDesc {
        PeerDesc { id, metadata, voter: true, promote: false }
    }

    /// The member described (`promote` means nothing for a voter).
    pub fn member(&self) -> Member {
        let suffrage = if self.voter { Suffrage::Voter } else { Suffrage::Learner { promote: self.promote } };
        Member { metadata: self.metadata.clone(), suffrage }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    AppendEntries(AppendEntries),
    AppendEntriesResponse(AppendEntriesResponse),
    RequestVote(RequestVote),
    RequestVoteResponse(RequestVoteResponse),
    InstallSnapshot(InstallSnapshot),
    InstallSnapshotResponse(InstallSnapshotResponse),
    ReadIndex(ReadIndex),
    ReadIndexResponse(ReadIndexResponse),
    TimeoutNow(TimeoutNow),
    TimeoutNowResponse(TimeoutNowResponse),
}

impl Body {
    pub fn term(&self) -> u64 {
        match self {
            Body::AppendEntries(m) => m.term,
            Body::AppendEntriesResponse(m) => m.term,
            Body::RequestVote(m) => m.term,
            Body::RequestVoteResponse(m) => m.term,
            Body::InstallSnapshot(m) => m.term,
            Body::InstallSnapshotResponse(m) => m.term,
            Body::ReadIndex(m) => m.term,
            Body::ReadIndexResponse(m) => m.term,
            Body::TimeoutNow(m) => m.term,
            Body::TimeoutNowResponse(m) => m.term,
        }
    }

    /// The wire name of a request (responses travel as the reply to their request).
    pub fn type_name(&self) -> &'static str {
        match self {
            Body::AppendEntries(_) | Body::AppendEntriesResponse(_) => AppendEntries::TYPE,
            Body::RequestVote(_) | Body::RequestVoteResponse(_) => RequestVote::TYPE,
            Body::InstallSnapshot(_) | Body::InstallSnapshotResponse(_) => InstallSnapshot::TYPE,
            Body::ReadIndex(_) | Body::ReadIndexResponse(_) => ReadIndex::TYPE,
            Body::TimeoutNow(_) | Body::TimeoutNowResponse(_) => TimeoutNow::TYPE,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Body::AppendEntries(_) | Body::RequestVote(_) | Body::InstallSnapshot(_) | Body::ReadIndex(_) | Body::TimeoutNow(_)
        )
    }
}

/// A message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: String,
    pub to: String,
    /// Opaque to the core: a response carries the token of the request it answers, so a
    /// runtime whose transport pairs requests with replies (skiff's callbacks) can route it.
    pub token: Option<u64>,
    pub body: Body,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(write: impl Fn(&mut String)) -> String {
        let mut out = String::new();
        write(&mut out);
        out
    }

    #[test]
    fn the_hand_written_append_exchange_is_the_serde_form() {
        let requests = [
            r#"{"term":2,"leaderId":"a","prevLogIndex":1,"prevLogTerm":1,"entries":[],"leaderCommit":1}"#,
            r#"{"term":2,"leaderId":"a\"b","prevLogIndex":0,"prevLogTerm":0,"entries":[{"term":2,"index":1,"command":{"x":[1]},"uuid":"u"}],"leaderCommit":0,"peers":[{"id":"a","metadata":{}},{"id":"l","metadata":{"m":1},"voter":false,"promote":true}],"readCtx":7,"transferTo":"c"}"#,
        ];
        for text in requests {
            let m: AppendEntries = serde_json::from_str(text).unwrap();
            assert_eq!(written(|out| m.write_json(out)), serde_json::to_string(&m).unwrap());
        }
        let replies = [
            r#"{"term":2,"success":true,"lastApplied":3,"matchIndex":4,"rejectIndex":0}"#,
            r#"{"term":2,"success":false,"lastApplied":3,"matchIndex":0,"rejectIndex":9,"conflictIndex":5,"conflictTerm":1,"reason":"no \"match\"","needsSnapshot":true,"readCtx":2}"#,
        ];
        for text in replies {
            let r: AppendEntriesResponse = serde_json::from_str(text).unwrap();
            assert_eq!(written(|out| r.write_json(out)), serde_json::to_string(&r).unwrap());
            assert_eq!(written(|out| r.write_json(out)), text);
        }
    }
}
