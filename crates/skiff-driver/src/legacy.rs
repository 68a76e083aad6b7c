//! Rolling upgrades from skiff-algorithm: its requests made into ours, and what we send and answer it made safe for it.

use serde_json::value::RawValue;
use skiff_core::message::{AppendEntries, AppendEntriesResponse, InstallSnapshot, RequestVote};
use skiff_core::{Body, Message, Raft};
use std::collections::BTreeSet;

/// What an AppendEntries carried: the position a reply without `matchIndex`/`rejectIndex` (one
/// from skiff-algorithm, which has no such fields) is about.
#[derive(Clone, Copy)]
pub(super) struct Sent {
    prev: u64,
    count: u64,
}

impl Sent {
    /// The position `body` is about, if it is an AppendEntries.
    pub(super) fn of(body: &Body) -> Option<Sent> {
        match body {
            Body::AppendEntries(b) => Some(Sent { prev: b.prev_log_index, count: b.entries.len() as u64 }),
            _ => None,
        }
    }
}

/// What is read of a request that may come from skiff-algorithm (`Legacy::translate`); its
/// entries stay as they came (the commands in them are carried as their exact text).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    term: u64,
    #[serde(default)]
    leader_id: Option<String>,
    #[serde(default)]
    prev_log_index: u64,
    #[serde(default)]
    leader_commit: u64,
    #[serde(borrow, default)]
    entries: Option<&'a RawValue>,
    #[serde(default)]
    candidate_id: Option<String>,
    #[serde(default)]
    last_log_index: u64,
    /// Present in our requests, absent from skiff-algorithm's.
    #[serde(default)]
    prev_log_term: Option<u64>,
    #[serde(default)]
    last_log_term: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
}

/// The position of an entry, as a skiff-algorithm leader sends it.
#[derive(serde::Deserialize)]
struct Position {
    index: u64,
    term: u64,
}

/// The newest AppendEntries from a skiff-algorithm leader that we vouched for (see
/// `Legacy::translate`): it ends with an entry of term `upto_term` at `upto`. Once our log holds
/// that entry, in the same term under the same leader, our log matches that leader's up to it.
pub(super) struct LegacyMark {
    leader: String,
    term: u64,
    upto: u64,
    upto_term: u64,
}

/// What this node knows of its peers' versions. The driver asks it to translate each request
/// before parsing it, to cap each AppendEntries before sending it, and to complete each
/// AppendEntries reply before the core sees it.
/// Invariant: `modern` holds only peers whose latest AppendEntries reply carried `matchIndex`, or
/// whose latest AppendEntries request (on their own connection) carried `prevLogTerm`; `old`
/// only peers whose latest AppendEntries reply did not (the two never share a peer); `mark` was
/// set only from a request whose connection was its sender's (see `accept`).
///
/// The sets are ordered sets of a few member ids, looked up for every message sent and every
/// AppendEntries reply: comparing an id with a handful of others costs less than hashing it.
#[derive(Default)]
pub(super) struct Legacy {
    /// Peers whose AppendEntries replies carry `matchIndex`, or whose AppendEntries requests
    /// carry `prevLogTerm`: skiff-rs nodes. The others may run
    /// skiff-algorithm (a rolling upgrade) and get AppendEntries they can take safely.
    modern: BTreeSet<String>,
    /// Peers whose AppendEntries replies lack `matchIndex`: skiff-algorithm nodes, which know
    /// nothing of learners. While one is a member, `join` adds voters at once, as it did.
    old: BTreeSet<String>,
    /// See `LegacyMark`.
    mark: Option<LegacyMark>,
}

impl Legacy {
    /// `peer` left the cluster: what was learnt of it no longer holds for whoever takes its id.
    pub(super) fn forget(&mut self, peer: &str) {
        self.modern.remove(peer);
        self.old.remove(peer);
    }

    /// Whether one of `members` answered as skiff-algorithm does (a rolling upgrade under way).
    /// A member never heard from (down) does not count: it would hold up every join's catch-up.
    pub(super) fn any_old<'a>(&self, mut members: impl Iterator<Item = &'a String>) -> bool {
        members.any(|id| self.old.contains(id))
    }

    /// Whether `peer` is known to run skiff-rs: only such a peer gets the messages
    /// skiff-algorithm lacks (ReadIndex, TimeoutNow).
    pub(super) fn is_modern(&self, peer: &str) -> bool {
        self.modern.contains(peer)
    }

    /// `peer` runs skiff-rs. Every AppendEntries and every reply to one says so again: the usual
    /// case finds it recorded already and neither allocates its id nor touches `old`.
    fn mark_modern(&mut self, peer: &str) {
        if !self.modern.contains(peer) {
            self.modern.insert(peer.to_string());
            self.old.remove(peer);
        }
    }

    /// An AppendEntries came from `leader` (its connection's peer), in our format (`ours`,
    /// with `prevLogTerm`) or skiff-algorithm's: how a follower learns what its leader runs.
    pub(super) fn heard_leader(&mut self, leader: &str, ours: bool) {
        if ours {
            self.mark_modern(leader);
        } else {
            self.modern.remove(leader);
        }
    }

    /// Makes an AppendEntries to a peer that may run skiff-algorithm safe for it. Such a
    /// follower sets its commit index to `leaderCommit` whatever its log holds past the entries
    /// this message checked; Raft only lets it commit what this message vouches for (§5.3).
    pub(super) fn cap_commit(&self, m: &mut Message) {
        if let Body::AppendEntries(a) = &mut m.body {
            if !self.modern.contains(&m.to) {
                a.leader_commit = a.leader_commit.min(a.prev_log_index + a.entries.len() as u64);
            }
        }
    }

    /// A skiff-algorithm node answers AppendEntries with `{term, success, lastApplied}` only: its
    /// reply is about the request it answers (one at a time on its connection), so the positions
    /// come from that request. A success acknowledges the entries sent after `prevLogIndex`; a
    /// refusal is about `prevLogIndex`, and everything up to the follower's `lastApplied` is
    /// committed there, so the leader may look again from just after it.
    pub(super) fn position_reply(&mut self, peer: &str, text: &str, sent: Sent, r: &mut AppendEntriesResponse) {
        if text.contains("\"matchIndex\"") {
            self.mark_modern(peer);
            return;
        }
        self.old.insert(peer.to_string());
        self.modern.remove(peer);
        if r.success {
            r.match_index = sent.prev + sent.count;
        } else {
            r.reject_index = sent.prev;
            if r.conflict_index.is_none() {
                r.conflict_index = Some(r.last_applied.saturating_add(1).min(sent.prev.max(1)));
            }
        }
    }

    /// Records the mark `translate` gave a request, once its connection was found to be its
    /// sender's: a message refused there must leave no trace.
    pub(super) fn accept(&mut self, mark: Option<LegacyMark>) {
        if mark.is_some() {
            self.mark = mark;
        }
    }

    /// A request from a skiff-algorithm node (a rolling upgrade), made into one the core takes;
    /// `None` when `args` need nothing, an error for one that cannot be taken.
    ///
    /// Its InstallSnapshot chunks carry no `seq`: every chunk would read as the first of a new
    /// transfer, and the last one (no data) would install an empty state machine. Refused.
    ///
    /// Its RequestVote lacks `lastLogTerm` when its log holds no entry: 0 then, or less than the
    /// truth (a log it compacted whole), which only makes its candidate look less up to date.
    ///
    /// Its AppendEntries has no `prevLogTerm`: nothing says that our entry at `prevLogIndex` is
    /// the leader's. We vouch for it ourselves where we can: at or below our commit index (every
    /// leader holds those entries), or up to what this same leader sent us in this term after a
    /// prefix we vouched for (a leader's log only grows within its term). Anything else is made
    /// into a probe past our log, which the core refuses; the refusal carries our `lastApplied`,
    /// from which skiff-algorithm's leader sends again, one entry at a time.
    pub(super) fn translate(
        &self,
        raft: Option<&Raft>,
        kind: &str,
        args: &str,
    ) -> Result<Option<(String, Option<LegacyMark>)>, String> {
        match kind {
            AppendEntries::TYPE => {
                // Ours put `prevLogTerm` before the entries: a quick look settles the usual case.
                if prev_log_term_first(args) {
                    return Ok(None);
                }
            }
            RequestVote::TYPE | InstallSnapshot::TYPE => {}
            _ => return Ok(None),
        }
        // Malformed requests are left to the parse that follows, which says what is wrong.
        let Ok(v) = serde_json::from_str::<Request>(args) else { return Ok(None) };
        match kind {
            InstallSnapshot::TYPE if v.seq.is_none() => Err("a snapshot chunk without seq (skiff-algorithm's format) cannot be \
                 installed: its chunks cannot be told apart; keep followers within the leader's retained log"
                .into()),
            RequestVote::TYPE if v.last_log_term.is_none() => Ok(v.candidate_id.map(|c| {
                let text = format!(r#"{{"term":{},"candidateId":{},"lastLogIndex":{},"lastLogTerm":0}}"#, v.term, json_text(&c), v.last_log_index);
                (text, None)
            })),
            AppendEntries::TYPE if v.prev_log_term.is_none() => Ok(raft.and_then(|raft| self.append(raft, v))),
            _ => Ok(None),
        }
    }

    /// skiff-algorithm's AppendEntries with the `prevLogTerm` we vouch for (see `translate`), and
    /// the mark it earns once `accept`ed.
    fn append(&self, raft: &Raft, v: Request) -> Option<(String, Option<LegacyMark>)> {
        let (term, prev) = (v.term, v.prev_log_index);
        let leader = v.leader_id?;
        let log = raft.log();
        let verified = match &self.mark {
            Some(m) if m.leader == leader && m.term == term && raft.term() == term && log.term(m.upto) == Some(m.upto_term) => m.upto,
            _ => 0,
        };
        let prev_term = if prev <= raft.commit().max(verified) {
            if prev <= log.snapshot_index() { Some(log.snapshot_term()) } else { log.term(prev) }
        } else {
            None
        };
        let Some(prev_term) = prev_term.filter(|t| *t <= term) else {
            return Some((append_text(term, &leader, log.last_index() + 1, 0, "[]", v.leader_commit), None));
        };
        let entries = v.entries.map_or("[]", |e| e.get());
        let last = serde_json::from_str::<Vec<Position>>(entries).ok().and_then(|p| p.last().map(|p| (p.index, p.term)));
        let (upto, upto_term) = last.unwrap_or((prev, prev_term));
        let newer = match &self.mark {
            Some(m) if m.leader == leader && m.term == term => upto >= m.upto,
            _ => true,
        };
        let out = append_text(term, &leader, prev, prev_term, entries, v.leader_commit);
        Some((out, newer.then_some(LegacyMark { leader, term, upto, upto_term })))
    }
}

/// Whether `"prevLogTerm"` occurs in `args` before (and not overlapping) the first `"entries"`:
/// an AppendEntries of ours. Looks only at the quotes up to the first of the two, where a
/// substring search set up a searcher over the whole text for every AppendEntries.
fn prev_log_term_first(args: &str) -> bool {
    const PREV: &str = "\"prevLogTerm\"";
    const ENTRIES: &str = "\"entries\"";
    for (i, _) in args.match_indices('"') {
        let rest = &args[i..];
        if rest.starts_with(ENTRIES) {
            return false;
        }
        if rest.starts_with(PREV) {
            // The one quote inside it, its last, may begin `"entries"`: then no `"prevLogTerm"`
            // lies wholly before the first `"entries"`.
            return !rest[PREV.len() - 1..].starts_with(ENTRIES);
        }
    }
    false
}

/// skiff-algorithm's AppendEntries made into ours, as JSON text: its `entries` (already JSON text)
/// go through untouched, so they are not parsed and written again.
fn append_text(term: u64, leader: &str, prev: u64, prev_term: u64, entries: &str, commit: u64) -> String {
    format!(
        r#"{{"term":{term},"leaderId":{},"prevLogIndex":{prev},"prevLogTerm":{prev_term},"entries":{entries},"leaderCommit":{commit}}}"#,
        json_text(leader)
    )
}

/// `s` as a JSON string.
fn json_text(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_core::message::AppendEntries;
    use skiff_core::persisted::restore;
    use skiff_core::{Config, Json};

    fn reply(success: bool, last_applied: u64) -> AppendEntriesResponse {
        let text = format!(r#"{{"term":2,"success":{success},"lastApplied":{last_applied}}}"#);
        match super::super::wire::response("AppendEntries", &text) {
            Ok(Body::AppendEntriesResponse(r)) => r,
            other => panic!("not a reply: {:?}", other.err()),
        }
    }

    /// A follower of term 2 whose log is a snapshot at 5 (term 2), then entries 6 and 7 of term 2,
    /// committed up to 5.
    fn follower() -> Raft {
        let state = r#"{"currentTerm":2,"votedFor":null,"peers":[],"log":{"meta":{"lastIncludedIndex":5,"lastIncludedTerm":2},
            "entries":[{"term":2,"index":6,"command":6,"uuid":"a"},{"term":2,"index":7,"command":7,"uuid":"b"}]}}"#;
        let restored = restore("n", state, 5, false, &Json::empty_object()).expect("state");
        Raft::new(Config::new("n"), restored).expect("raft")
    }

    fn prev_log(text: &str) -> (u64, u64) {
        let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
        (v["prevLogIndex"].as_u64().unwrap_or(u64::MAX), v["prevLogTerm"].as_u64().unwrap_or(u64::MAX))
    }

    #[test]
    fn prev_log_term_must_come_before_the_entries() {
        let old = |args: &str| {
            let head = args.find("\"entries\"").map_or(args, |i| &args[..i]);
            head.contains("\"prevLogTerm\"")
        };
        for args in [
            r#"{"term":1,"leaderId":"a","prevLogIndex":1,"prevLogTerm":1,"entries":[],"leaderCommit":0}"#,
            r#"{"term":1,"entries":[{"prevLogTerm":1}],"prevLogTerm":1}"#,
            r#"{"term":1,"leaderId":"a","prevLogIndex":1,"entries":[]}"#,
            r#"{"prevLogTerm"entries":1}"#,
            r#"{"x":"\"prevLogTerm\"","entries":[]}"#,
            r#""prevLogTerm""#,
            "",
            "\"",
        ] {
            assert_eq!(prev_log_term_first(args), old(args), "{args}");
        }
        assert!(prev_log_term_first(r#"{"prevLogTerm":1,"entries":[]}"#));
        assert!(!prev_log_term_first(r#"{"entries":[],"prevLogTerm":1}"#));
    }

    #[test]
    fn a_reply_without_positions_takes_them_from_the_request_it_answers() {
        let mut legacy = Legacy::default();
        let sent = Sent { prev: 4, count: 3 };
        let mut r = reply(true, 0);
        legacy.position_reply("b", "{}", sent, &mut r);
        assert_eq!(r.match_index, 7);
        let mut r = reply(false, 2);
        legacy.position_reply("b", "{}", sent, &mut r);
        assert_eq!((r.reject_index, r.conflict_index), (4, Some(3)));
        // a refusal never points past the entry it was about
        let mut r = reply(false, 9);
        legacy.position_reply("b", "{}", sent, &mut r);
        assert_eq!(r.conflict_index, Some(4));
    }

    #[test]
    fn only_peers_that_sent_match_index_get_the_full_commit_index() {
        let mut legacy = Legacy::default();
        let mut m = Message {
            from: "a".into(),
            to: "b".into(),
            token: None,
            body: Body::AppendEntries(AppendEntries {
                term: 2,
                leader_id: "a".into(),
                prev_log_index: 3,
                prev_log_term: 2,
                entries: vec![],
                leader_commit: 9,
                peers: None,
                read_ctx: None,
                transfer_to: None,
            }),
        };
        let commit = |m: &Message| match &m.body {
            Body::AppendEntries(a) => a.leader_commit,
            _ => unreachable!(),
        };
        let mut capped = m.clone();
        legacy.cap_commit(&mut capped);
        assert_eq!(commit(&capped), 3);
        let mut r = reply(true, 0);
        legacy.position_reply("b", r#"{"matchIndex":3}"#, Sent { prev: 3, count: 0 }, &mut r);
        legacy.cap_commit(&mut m);
        assert_eq!(commit(&m), 9);
        legacy.forget("b");
        legacy.cap_commit(&mut m);
        assert_eq!(commit(&m), 3);
    }

    #[test]
    fn requests_that_need_no_translation_pass_and_unusable_ones_are_refused() {
        let legacy = Legacy::default();
        let ours = r#"{"term":2,"leaderId":"a","prevLogIndex":1,"prevLogTerm":1,"entries":[],"leaderCommit":0}"#;
        assert!(matches!(legacy.translate(None, "AppendEntries", ours), Ok(None)));
        assert!(matches!(legacy.translate(None, "Other", "{}"), Ok(None)));
        assert!(matches!(legacy.translate(None, "RequestVote", "not JSON"), Ok(None)));
        assert!(legacy.translate(None, "InstallSnapshot", r#"{"term":2,"leaderId":"a"}"#).is_err());
        let vote = legacy.translate(None, "RequestVote", r#"{"term":3,"candidateId":"c\"d","lastLogIndex":4}"#);
        let (text, mark) = vote.expect("taken").expect("translated");
        assert!(mark.is_none());
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!((v["candidateId"].as_str(), v["lastLogTerm"].as_u64(), v["lastLogIndex"].as_u64()), (Some("c\"d"), Some(0), Some(4)));
    }

    #[test]
    fn an_append_is_vouched_for_only_within_the_commit_index_or_a_mark_of_the_same_leader() {
        let raft = follower();
        let mut legacy = Legacy::default();
        let append = |prev: u64, entries: &str| {
            format!(r#"{{"term":2,"leaderId":"a","prevLogIndex":{prev},"entries":{entries},"leaderCommit":5}}"#)
        };
        // past the commit index, with no mark: a probe past our log
        let (text, mark) = legacy.translate(Some(&raft), "AppendEntries", &append(7, "[]")).expect("taken").expect("translated");
        assert_eq!(prev_log(&text), (8, 0));
        assert!(mark.is_none());
        // at the commit index (the snapshot): vouched for, and it earns a mark up to its last entry
        let entries = r#"[{"term":2,"index":6,"command":6,"uuid":"a"},{"term":2,"index":7,"command":7,"uuid":"b"}]"#;
        let (text, mark) = legacy.translate(Some(&raft), "AppendEntries", &append(5, entries)).expect("taken").expect("translated");
        assert_eq!(prev_log(&text), (5, 2));
        assert!(text.contains(entries));
        legacy.accept(mark);
        // now up to the mark is vouched for
        let (text, _) = legacy.translate(Some(&raft), "AppendEntries", &append(7, "[]")).expect("taken").expect("translated");
        assert_eq!(prev_log(&text), (7, 2));
        // ...but not for another leader
        let other = r#"{"term":2,"leaderId":"z","prevLogIndex":7,"entries":[],"leaderCommit":5}"#;
        let (text, _) = legacy.translate(Some(&raft), "AppendEntries", other).expect("taken").expect("translated");
        assert_eq!(prev_log(&text), (8, 0));
    }
}
