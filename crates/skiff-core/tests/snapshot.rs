//! Compaction and snapshot transfer, driven by hand through the core's API the way the runtime
//! drives it: the "state machine" of each node is a Vec of applied commands.

use skiff_core::persisted::{restore, PersistedState};
use skiff_core::{Body, Config, Entry, EntryKind, Event, Json, Membership, Message, Raft, Ready};
use std::collections::BTreeMap;

struct Node {
    raft: Raft,
    /// (index, command) applied, in order.
    sm: Vec<(u64, String)>,
    /// Everything this node durably saved last.
    saved: String,
    /// Snapshot chunks being written.
    writing: Vec<(u64, String)>,
    snapshot_installs: usize,
}

struct Cluster {
    nodes: BTreeMap<String, Node>,
    now: u64,
    /// Messages in flight.
    net: Vec<Message>,
    /// Leave snapshot transfers to the test: followers found to need one are listed in `needed`.
    manual: bool,
    needed: Vec<String>,
    /// Nodes that neither tick nor get messages (crashed, or cut off).
    silent: Vec<String>,
}

fn cfg(id: &str, retained: u64) -> Config {
    let mut c = Config::new(id);
    c.retained_log_entries = retained;
    c.seed = id.bytes().map(u64::from).sum();
    c
}

impl Cluster {
    fn new(ids: &[&str], retained: u64) -> Cluster {
        let mut nodes = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            let r = restore(id, "null", 0, i != 0, &Json::empty_object()).unwrap();
            let raft = Raft::new(cfg(id, retained), r).unwrap();
            nodes.insert(id.to_string(), Node { raft, sm: vec![], saved: "null".into(), writing: vec![], snapshot_installs: 0 });
        }
        Cluster { nodes, now: 0, net: vec![], manual: false, needed: vec![], silent: vec![] }
    }

    /// Processes one node's Ready fully (save, send, apply), as the runtime does.
    fn process(&mut self, id: &str) {
        loop {
            let node = self.nodes.get_mut(id).unwrap();
            if !node.raft.has_ready() {
                return;
            }
            let ready: Ready = node.raft.ready();
            if let Some(save) = &ready.save {
                node.saved = serde_json::to_string(&PersistedState(&node.raft)).unwrap();
                node.raft.advance(save.token);
            }
            for e in &ready.committed {
                if let EntryKind::Command(c) = &e.kind {
                    assert!(node.sm.last().is_none_or(|l| l.0 < e.index), "applied out of order");
                    node.sm.push((e.index, c.as_str().to_string()));
                }
            }
            if let Some(last) = ready.committed.last() {
                node.raft.applied_to(last.index);
            }
            let mut snapshot_work = vec![];
            for ev in ready.events {
                match ev {
                    Event::SnapshotNeeded { peer } => snapshot_work.push(peer),
                    Event::SnapshotChunk { from, token, chunk } => {
                        let node = self.nodes.get_mut(id).unwrap();
                        if chunk.first {
                            let members = Membership::from_peers(chunk.peers.clone().unwrap());
                            assert!(node.raft.begin_install(chunk.last_included_index, chunk.last_included_term, members));
                            node.writing.clear();
                        }
                        let items: Vec<(u64, String)> = serde_json::from_str(chunk.data.unwrap().as_str()).unwrap();
                        node.writing.extend(items);
                        let mut installed = 0;
                        if chunk.done {
                            node.sm = std::mem::take(&mut node.writing);
                            assert!(node.raft.finish_install(chunk.last_included_index));
                            node.snapshot_installs += 1;
                            installed = chunk.last_included_index;
                        }
                        node.raft.snapshot_reply(&from, token, skiff_core::message::InstallSnapshotResponse::installed(chunk.seq, installed));
                    }
                    Event::SnapshotAcked { .. } => panic!("single-chunk transfers only in this test"),
                    _ => {}
                }
            }
            self.net.extend(ready.messages);
            self.net.extend(ready.persisted_messages);
            if self.manual {
                self.needed.append(&mut snapshot_work);
            }
            for peer in snapshot_work {
                let node = self.nodes.get_mut(id).unwrap();
                let index = node.raft.applied();
                let meta = node.raft.begin_snapshot(&peer, index).expect("leader can snapshot");
                let upto: Vec<(u64, String)> = node.sm.iter().filter(|(i, _)| *i <= index).cloned().collect();
                let data = Json::from_value(&upto);
                assert!(node.raft.send_snapshot_chunk(&peer, &meta, 0, Some(data), true));
            }
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            let ids: Vec<String> = self.nodes.keys().filter(|id| !self.silent.contains(id)).cloned().collect();
            for id in &ids {
                self.nodes.get_mut(id).unwrap().raft.tick(self.now);
                self.process(id);
            }
            while !self.net.is_empty() {
                for m in std::mem::take(&mut self.net) {
                    let to = m.to.clone();
                    if self.silent.contains(&to) {
                        continue;
                    }
                    if let Some(n) = self.nodes.get_mut(&to) {
                        let _ = n.raft.step(m);
                        self.process(&to);
                    }
                }
            }
        }
    }

    fn leader(&self) -> Option<String> {
        self.nodes.values().find(|n| n.raft.is_leader()).map(|n| n.raft.id().to_string())
    }

    fn propose(&mut self, cmd: &str) {
        let l = self.leader().unwrap();
        self.nodes.get_mut(&l).unwrap().raft.propose(Json::from_value(cmd)).unwrap();
        self.process(&l);
    }

    fn join(&mut self, id: &str) {
        let l = self.leader().unwrap();
        let r = self.nodes.get_mut(&l).unwrap().raft.propose_membership(EntryKind::AddPeer {
            id: id.into(),
            metadata: Json::empty_object(),
        });
        assert!(matches!(r, Ok(Some(_))), "{r:?}");
        self.process(&l);
    }
}

fn commands(n: &Node) -> Vec<String> {
    n.sm.iter().map(|(_, c)| c.clone()).collect()
}

#[test]
fn a_new_member_catches_up_from_a_snapshot_and_then_from_the_log() {
    let mut c = Cluster::new(&["a", "b"], 10);
    c.run(400);
    assert_eq!(c.leader().as_deref(), Some("a"));
    for i in 0..100 {
        c.propose(&format!("c{i}"));
    }
    c.run(50);
    let a = &c.nodes["a"];
    assert!(a.raft.log().snapshot_index() > 50, "leader compacted: {}", a.raft.log().snapshot_index());
    assert!(a.raft.log().len() <= 10 + 1);
    c.join("b");
    c.run(500);
    for i in 100..120 {
        c.propose(&format!("c{i}"));
    }
    c.run(200);
    let expected: Vec<String> = (0..120).map(|i| format!("\"c{i}\"")).collect();
    assert_eq!(commands(&c.nodes["a"]), expected);
    assert_eq!(commands(&c.nodes["b"]), expected, "every command exactly once, in order");
    assert_eq!(c.nodes["b"].snapshot_installs, 1);
    assert!(c.nodes["b"].raft.members().contains("a") && c.nodes["b"].raft.members().contains("b"));
}

#[test]
fn a_crash_in_the_middle_of_an_install_applies_nothing_until_a_snapshot_completes() {
    let mut c = Cluster::new(&["a", "b"], 5);
    c.run(400);
    for i in 0..30 {
        c.propose(&format!("c{i}"));
    }
    c.run(50);
    // b starts an install, saves the mark, and crashes before the state machine is written.
    let b = c.nodes.get_mut("b").unwrap();
    let members = Membership::from_members([("a".to_string(), Json::empty_object())]);
    b.raft.begin_install(31, 1, members);
    let _ = b.raft.ready();
    let saved = serde_json::to_string(&PersistedState(&b.raft)).unwrap();
    assert!(saved.contains("pendingSnapshot"));
    let restored = restore("b", &saved, 0, true, &Json::empty_object()).unwrap();
    let mut raft = Raft::new(cfg("b", 5), restored).unwrap();
    assert!(raft.pending_install().is_some());
    // Nothing is handed out for applying while the mark stands.
    let entry = Entry { term: 1, index: 1, kind: EntryKind::Command(Json::from_value("x")), uuid: String::new() };
    let _ = raft.step(Message {
        from: "a".into(),
        to: "b".into(),
        token: None,
        body: Body::AppendEntries(skiff_core::message::AppendEntries {
            term: raft.term().max(1),
            leader_id: "a".into(),
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![entry],
            leader_commit: 1,
            peers: None,
            read_ctx: None,
            transfer_to: None,
        }),
    });
    let ready = raft.ready();
    assert!(ready.committed.is_empty(), "an untrusted state machine must not apply");
    let needs = ready.messages.iter().chain(&ready.persisted_messages).any(|m| {
        matches!(&m.body, Body::AppendEntriesResponse(r) if !r.success && r.needs_snapshot)
    });
    assert!(needs, "the follower asks for a snapshot: {:?}", ready.messages);
    if let Some(save) = &ready.save {
        raft.advance(save.token);
    }
    assert_eq!(raft.log().last_index(), 0, "no entries are taken while only a snapshot can help");
    let ready = raft.ready();
    assert!(ready.committed.is_empty(), "still nothing applied after the entry is durable");
    // It never campaigns with an incomplete state machine.
    raft.tick(100_000);
    assert!(!raft.is_leader());
    assert_ne!(raft.role(), skiff_core::Role::Candidate);
}

#[test]
fn finishing_an_install_that_was_recorded_but_not_saved() {
    // The plugin recorded the snapshot index (saveCommitIndex) but the node stopped before it
    // saved the reset log: restarting completes the install instead of applying old entries.
    let state = r#"{"currentTerm":2,"votedFor":null,"log":{"meta":{"lastIncludedIndex":0,"lastIncludedTerm":0,"members":[{"id":"a","metadata":{}},{"id":"b","metadata":{}}],
      "pendingSnapshot":{"lastIncludedIndex":40,"lastIncludedTerm":2,"members":[{"id":"a","metadata":{}},{"id":"b","metadata":{}}]}},
      "entries":[{"term":1,"index":1,"command":"old","uuid":"x"}]},"peers":[{"id":"a","metadata":{}}]}"#;
    let restored = restore("b", state, 40, true, &Json::empty_object()).unwrap();
    let mut raft = Raft::new(cfg("b", 5), restored).unwrap();
    assert!(raft.pending_install().is_none());
    assert_eq!(raft.log().snapshot_index(), 40);
    assert_eq!(raft.commit(), 40);
    let ready = raft.ready();
    assert!(ready.save.is_some_and(|s| s.base_changed), "the finished install is saved");
    assert!(ready.committed.is_empty());
}

/// Three nodes with snapshot transfers left to the test: a and c commit 100 commands (c0..c99)
/// without b, so the leader compacts, then b joins and needs a snapshot.
fn b_joins_behind() -> Cluster {
    let mut c = Cluster::new(&["a", "b", "c"], 10);
    c.manual = true;
    c.run(400);
    c.join("c");
    c.run(50);
    for i in 0..100 {
        c.propose(&format!("c{i}"));
    }
    c.run(50);
    c.join("b");
    c.run(50);
    assert!(c.needed.contains(&"b".to_string()), "b needs a snapshot");
    c
}

/// The leader side of resuming: a transfer's snapshot must still be one the leader can vouch for
/// (a committed index it has not compacted away, with the term it had), under an id this leader
/// gave out in this term; the follower's refusal says where its install stands.
#[test]
fn a_transfer_resumes_only_with_a_snapshot_the_leader_still_vouches_for() {
    let mut c = b_joins_behind();
    let a = &mut c.nodes.get_mut("a").unwrap().raft;
    let (commit, first) = (a.commit(), a.log().snapshot_index());
    // an index from the plugin that is not committed, or compacted away, is no snapshot
    assert!(a.begin_snapshot("b", commit + 1).is_none());
    assert!(a.begin_snapshot("b", first - 1).is_none());
    let meta = a.begin_snapshot("b", commit).expect("a snapshot at the commit index");
    assert_eq!((meta.index, meta.transfer), (commit, 1));
    // the follower refuses chunk 3 and says its install waits for chunk 3
    let refusal = skiff_core::message::InstallSnapshotResponse::refused(3, 3, "out of order");
    let body = Body::InstallSnapshotResponse(skiff_core::message::InstallSnapshotResponse { term: a.term(), ..refusal });
    a.step(Message { from: "b".into(), to: "a".into(), token: None, body }).unwrap();
    let events = a.ready().events;
    assert!(events.contains(&Event::SnapshotFailed { peer: "b".into(), next_seq: 3 }), "{events:?}");
    // not resumed until the follower is found to need a snapshot again
    assert!(!a.resume_snapshot("b", &meta));
    c.needed.clear();
    c.run(50);
    assert!(c.needed.contains(&"b".to_string()));
    let a = &mut c.nodes.get_mut("a").unwrap().raft;
    for forged in [
        skiff_core::SnapshotMeta { transfer: 0, ..meta.clone() },
        skiff_core::SnapshotMeta { transfer: 2, ..meta.clone() },
        skiff_core::SnapshotMeta { term: meta.term + 1, ..meta.clone() },
        skiff_core::SnapshotMeta { index: commit + 1, ..meta.clone() },
    ] {
        assert!(!a.resume_snapshot("b", &forged), "{forged:?}");
    }
    assert!(a.resume_snapshot("b", &meta));
    // while the transfer runs, commands commit and apply, but the log is kept from the snapshot's
    // index on, for b to go on from once it is installed
    for i in 100..130 {
        c.propose(&format!("c{i}"));
    }
    c.run(50);
    let a = &mut c.nodes.get_mut("a").unwrap().raft;
    assert!(a.applied() > meta.index + 20, "applying went on");
    assert!(a.log().snapshot_index() <= meta.index, "not compacted past a snapshot being sent");
    // a transfer that stopped keeps the log held while its follower answers, so it can resume
    a.snapshot_aborted("b");
    for i in 130..180 {
        c.propose(&format!("c{i}"));
    }
    c.needed.clear();
    c.run(50);
    assert!(c.needed.contains(&"b".to_string()));
    let a = &mut c.nodes.get_mut("a").unwrap().raft;
    assert!(a.log().snapshot_index() <= meta.index, "held for the stopped transfer of a follower that answers");
    assert!(a.resume_snapshot("b", &meta));
    // once b falls silent and the leader compacts past the snapshot, the transfer cannot
    // resume: a new one begins
    a.snapshot_aborted("b");
    c.silent.push("b".into());
    c.run(700);
    for i in 180..230 {
        c.propose(&format!("c{i}"));
    }
    c.run(50);
    c.silent.clear();
    c.needed.clear();
    c.run(50);
    assert!(c.needed.contains(&"b".to_string()));
    let a = &mut c.nodes.get_mut("a").unwrap().raft;
    assert!(a.log().snapshot_index() > meta.index, "compacted past the snapshot");
    assert!(!a.resume_snapshot("b", &meta));
    let next = a.begin_snapshot("b", a.commit()).expect("a new transfer");
    assert_eq!(next.transfer, 2, "each transfer of a term gets its own id");
}

/// `n` more commands, `per_ms` of them each millisecond, the cluster running meanwhile: steady
/// writes at the leader.
fn steady(c: &mut Cluster, from: usize, n: usize, per_ms: usize) {
    for i in from..from + n {
        c.propose(&format!("c{i}"));
        if (i + 1) % per_ms == 0 {
            c.run(1);
        }
    }
}

/// Issue 14 (learners under load): a follower that is sent a point-in-time snapshot while
/// commands go on must find, once it installed it, the entries after the snapshot still in the
/// leader's log, even when its transfer stopped midway and resumed, and when it later misses a
/// few messages: it goes on from the log (Replicate) and is never sent a second snapshot.
#[test]
fn a_follower_goes_on_from_the_log_after_its_snapshot_under_steady_writes() {
    let mut c = b_joins_behind();
    c.needed.clear();

    // A point-in-time read at the applied index; applying goes on while it streams.
    let a = c.nodes.get_mut("a").unwrap();
    let index = a.raft.applied();
    let data: Vec<(u64, String)> = a.sm.iter().filter(|(i, _)| *i <= index).cloned().collect();
    let meta = a.raft.begin_snapshot("b", index).expect("a snapshot");
    steady(&mut c, 100, 300, 5);
    let a = &c.nodes["a"].raft;
    assert!(a.applied() > index + 200, "applying went on while the snapshot streamed");
    assert_eq!(a.log().snapshot_index(), index, "the log is kept from the snapshot's index on");

    // The transfer stops (a chunk got no answer); b still answers heartbeats, writes go on, and
    // the stopped transfer stays resumable.
    c.nodes.get_mut("a").unwrap().raft.snapshot_aborted("b");
    steady(&mut c, 400, 300, 5);
    assert!(c.needed.contains(&"b".to_string()), "b is found to need its snapshot again");
    c.needed.clear();
    let a = &mut c.nodes.get_mut("a").unwrap().raft;
    assert_eq!(a.log().snapshot_index(), index, "still kept for the stopped transfer");
    assert!(a.resume_snapshot("b", &meta), "the transfer resumes");
    assert!(a.send_snapshot_chunk("b", &meta, 0, Some(Json::from_value(&data)), true));
    c.process("a");
    steady(&mut c, 700, 300, 5);
    c.run(50);
    assert_eq!(c.nodes["b"].snapshot_installs, 1);
    let a = &c.nodes["a"].raft;
    assert_eq!(a.progress()["b"].state, skiff_core::progress::ProgressState::Replicate, "b goes on from the log");
    assert!(a.log().snapshot_index() > index, "the hold ended with the install");
    assert!(a.log().len() < 100, "and the log is compacted again: {}", a.log().len());
    assert!(c.needed.is_empty(), "no second snapshot: {:?}", c.needed);

    // b misses messages for a moment (less than two election timeouts): it is probed, and the
    // leader keeps the entries after what it holds instead of sending it a snapshot.
    c.silent.push("b".into());
    c.nodes.get_mut("a").unwrap().raft.report_unreachable("b");
    steady(&mut c, 1000, 300, 5);
    assert_eq!(c.nodes["a"].raft.progress()["b"].state, skiff_core::progress::ProgressState::Probe);
    c.silent.clear();
    steady(&mut c, 1300, 100, 5);
    c.run(50);
    let a = &c.nodes["a"];
    assert_eq!(a.raft.progress()["b"].state, skiff_core::progress::ProgressState::Replicate);
    assert!(c.needed.is_empty(), "no second snapshot: {:?}", c.needed);
    assert_eq!(c.nodes["b"].snapshot_installs, 1);
    assert_eq!(commands(&c.nodes["b"]), commands(a), "b holds every command, in order");
    assert_eq!(commands(a).len(), 1400);
}
