//! Minimal reproductions of core bugs the simulation found (crates/skiff-driver/tests/sim.rs),
//! each on a small lock-step cluster of cores (`tiny::Tiny`: a perfect network with instant
//! disks) or on a single core fed by hand, so each runs in milliseconds and names its cause.
//! Ignored tests are known limitations, documented in the README.

// ------------------------------------------------------------------------------------------------
// Core bugs found by the simulation: minimal reproductions, ignored until the core is fixed.
// ------------------------------------------------------------------------------------------------

#[path = "sim/tiny.rs"]
mod tiny;

/// BUG 1 (`SIM_KNOWN_BUGS=1 SIM_SEED=15`, random_clusters: two leaders in term 10): a node added to a cluster
/// whose membership lives in the persisted `peers` (a cluster migrated from skiff-algorithm, whose
/// log does not start with the membership) catches up through AppendEntries from index 1, which
/// never tells it the leader's base membership (`Raft::base`, the membership at index 0). It
/// rebuilds the membership from the log's membership entries on an empty base (a standby's
/// `Restored::base`), so it believes it is in a one-member cluster {n4}, and elects itself
/// whenever it misses heartbeats: two leaders, and it commits alone.
#[test]
fn bug_joining_node_misses_base_membership() {
    use skiff_core::EntryKind;
    let state = |others: &[&str]| {
        let peers: Vec<String> = others.iter().map(|p| format!(r#"{{"id":"{p}","metadata":{{}}}}"#)).collect();
        format!(
            r#"{{"currentTerm":1,"votedFor":null,"log":{{"meta":{{"lastIncludedIndex":0,"lastIncludedTerm":0}},"entries":[]}},"peers":[{}]}}"#,
            peers.join(",")
        )
    };
    let (s1, s2, s3) = (state(&["n2", "n3"]), state(&["n1", "n3"]), state(&["n1", "n2"]));
    let mut c = tiny::Tiny::new(&[("n1", &s1, false), ("n2", &s2, false), ("n3", &s3, false), ("n4", "null", true)]);
    c.run(1000);
    let l = c.leader().expect("a leader among n1..n3");
    c.node(&l)
        .propose_membership(EntryKind::AddPeer { id: "n4".into(), metadata: skiff_core::Json::empty_object() })
        .unwrap();
    c.run(500);
    let want: Vec<String> = c.node(&l).members().ids().cloned().collect();
    assert_eq!(want, vec!["n1", "n2", "n3", "n4"]);
    let got: Vec<String> = c.node("n4").members().ids().cloned().collect();
    // Consequence: cut n4 off for a moment and it leads a cluster of its own.
    c.cut.insert("n4".into());
    c.run(1000);
    let split = c.node("n4").is_leader();
    assert!(
        got == want && !split,
        "n4 sees membership {got:?} while {l} sees {want:?}; cut off for 1 s, n4 elected itself alone: {split}"
    );
}

/// BUG 2 (`SIM_PROFILE=snapshots SIM_KNOWN_BUGS=2 SIM_SEED=148`: commit 269 past the log end 186): while an install is
/// pending (a crash interrupted one after `removeAllState`), `begin_install` accepts a snapshot
/// older than the log's own snapshot (`install.is_none() && index <= commit` skips the check), and
/// `finish_install` then moves `snapshot_index` backwards (RaftLog::install_snapshot clears the log
/// because `term(index)` is unknown below the snapshot) while `commit` stays above the new log
/// end. The leader, which learned `match_index` 141 from the `needs_snapshot` answers, then probes
/// at prev=141 forever (next is clamped to >= match+1) and the follower never catches up.
#[test]
fn bug_older_snapshot_moves_log_below_commit() {
    use skiff_core::message::{InstallSnapshot, PeerDesc};
    use skiff_core::{Body, Event, Json, Membership, Message};
    // Log compacted to 10, entries 11..12, commit 10, and an install of 15 interrupted after the
    // state machine was cleared (applied 0).
    let state = r#"{"currentTerm":2,"votedFor":"a","log":{"meta":{"lastIncludedIndex":10,"lastIncludedTerm":2,
        "members":[{"id":"a","metadata":{}},{"id":"f","metadata":{}}],
        "pendingSnapshot":{"lastIncludedIndex":15,"lastIncludedTerm":2,"members":[{"id":"a","metadata":{}},{"id":"f","metadata":{}}]}},
        "entries":[{"term":2,"index":11,"command":11,"uuid":"u11"},{"term":2,"index":12,"command":12,"uuid":"u12"}]},
        "peers":[{"id":"a","metadata":{}}]}"#;
    let r = skiff_core::persisted::restore("f", state, 0, false, &Json::empty_object()).unwrap();
    let mut f = skiff_core::Raft::new(skiff_core::Config::new("f"), r).unwrap();
    assert_eq!((f.commit(), f.log().snapshot_index(), f.pending_install().map(|p| p.index)), (10, 10, Some(15)));
    // A leader that has applied only up to 5 streams its snapshot.
    let peers = vec![
        PeerDesc::voter("a".into(), Json::empty_object()),
        PeerDesc::voter("f".into(), Json::empty_object()),
    ];
    let chunk = InstallSnapshot {
        term: 3,
        leader_id: "a".into(),
        last_included_index: 5,
        last_included_term: 2,
        seq: 0,
        first: true,
        done: true,
        data: Some(Json::from_text("[]").unwrap()),
        peers: Some(peers),
        transfer: 0,
    };
    f.step(Message { from: "a".into(), to: "f".into(), token: None, body: Body::InstallSnapshot(chunk) }).unwrap();
    let rd = f.ready();
    let got_chunk = rd.events.iter().any(|e| matches!(e, Event::SnapshotChunk { .. }));
    assert!(got_chunk, "the runtime is asked to install it");
    let members =
        Membership::from_members([("a".to_string(), Json::empty_object()), ("f".to_string(), Json::empty_object())]);
    // What the runtime does: begin, (save the mark, clear, write the chunks), finish.
    if f.begin_install(5, 2, members) {
        f.finish_install(5);
    }
    assert!(f.log().snapshot_index() >= 10, "the log's snapshot went back from 10 to {}", f.log().snapshot_index());
    assert!(
        f.commit() <= f.log().last_index(),
        "commit {} is past the end of the log {}",
        f.commit(),
        f.log().last_index()
    );
}

/// BUG 3 (`SIM_PROFILE=membership SIM_KNOWN_BUGS=3 SIM_SEED=263`: leader completeness broken): the
/// node that bootstrapped a cluster (log entry 1 is `AddPeer(itself)`: for a while it was the only
/// member) is removed, its data deleted, and it is added back under the same id. It catches up by
/// replaying the log from index 1, so while its log is short its membership is the historical
/// `{n1}`, in which it alone is a majority: cut off (or restarted) at that point it elects itself
/// and commits on its own, overwriting committed entries in its log. Same root cause as bug 1: a
/// joining node rebuilds membership by replaying the log from index 1 on an empty base.
#[test]
fn bug_readded_bootstrap_node_elects_itself_from_old_config() {
    use skiff_core::{EntryKind, Json};
    let mut c = tiny::Tiny::new(&[("n1", "null", false), ("n2", "null", true), ("n3", "null", true)]);
    c.run(400);
    assert_eq!(c.leader().as_deref(), Some("n1"));
    for id in ["n2", "n3"] {
        c.node("n1").propose_membership(EntryKind::AddPeer { id: id.into(), metadata: Json::empty_object() }).unwrap();
        c.run(300);
    }
    // Remove the bootstrap node; it steps down once that commits.
    c.node("n1").propose_membership(EntryKind::RemovePeer { id: "n1".into() }).unwrap();
    c.run(1000);
    let l = c.leader().expect("n2 or n3 leads");
    assert_ne!(l, "n1");
    let committed = c.node(&l).commit();
    // Its data is deleted; it comes back under the same id and replays the log from index 1.
    c.replace_with_fresh_standby("n1");
    c.node(&l).propose_membership(EntryKind::AddPeer { id: "n1".into(), metadata: Json::empty_object() }).unwrap();
    while c.node("n1").log().last_index() < 1 {
        c.run(1);
    }
    c.cut.insert("n1".into()); // cut off (or crashed) one entry into its catch-up
    let view: Vec<String> = c.node("n1").members().ids().cloned().collect();
    c.run(1000);
    assert!(
        !c.node("n1").is_leader(),
        "n1, re-added and cut off after replaying entry 1, sees membership {view:?} and leads term {} \
         alone while {l} leads a cluster that committed up to {committed}",
        c.node("n1").term()
    );
}

/// BUG 4 (`SIM_PROFILE=membership SIM_KNOWN_BUGS=4 SIM_SEED=653`: two leaders in term 15): a
/// removed node whose data is deleted and that runs again under the same id (to be added back)
/// has forgotten its votes. A node that missed the removal (partitioned or down) still holds a
/// configuration containing the old incarnation, campaigns with it, and the fresh node (term 0,
/// empty log, no vote) grants it: the candidate wins with a log that lacks committed entries.
/// In the simulation: two leaders in term 15; here: a second leader whose log
/// misses what the real cluster committed (it would overwrite it on any follower it reaches).
#[test]
#[ignore = "known limitation: a node whose durable state was wiped must not come back under the same id (README); Raft assumes durable votes"]
fn bug_wiped_node_with_reused_id_elects_stale_candidate() {
    use skiff_core::{EntryKind, Json};
    let mut c =
        tiny::Tiny::new(&[("n1", "null", false), ("n2", "null", true), ("n3", "null", true), ("n4", "null", true)]);
    c.run(400);
    let change = |c: &mut tiny::Tiny, kind: EntryKind| {
        c.node("n1").propose_membership(kind).unwrap();
        c.run(300);
    };
    change(&mut c, EntryKind::AddPeer { id: "n2".into(), metadata: Json::empty_object() });
    change(&mut c, EntryKind::AddPeer { id: "n3".into(), metadata: Json::empty_object() });
    // n3 is partitioned from here on, holding the configuration {n1, n2, n3}.
    c.cut.insert("n3".into());
    change(&mut c, EntryKind::AddPeer { id: "n4".into(), metadata: Json::empty_object() });
    change(&mut c, EntryKind::RemovePeer { id: "n2".into() });
    let members: Vec<String> = c.node("n1").members().ids().cloned().collect();
    assert_eq!(members, vec!["n1", "n3", "n4"]);
    assert!(c.node("n1").can_change_membership(), "the removal of n2 committed");
    // n2's data is deleted and it runs again as a fresh standby, to be added back later.
    c.replace_with_fresh_standby("n2");
    for k in 0..3 {
        c.node("n1").propose(Json::from_value(&k)).unwrap();
    }
    c.run(300);
    let committed = c.node("n1").commit();
    // n3 can now reach only n2.
    c.cut.remove("n3");
    c.sever("n3", "n1");
    c.sever("n3", "n4");
    c.run(2000);
    let n3 = c.node("n3");
    assert!(
        !n3.is_leader(),
        "n3 leads term {} with log ending at {} (membership {:?}), elected by the re-created n2, while n1 leads a \
         cluster that committed up to {committed}",
        n3.term(),
        n3.log().last_index(),
        n3.members().ids().collect::<Vec<_>>()
    );
}

/// BUG 5 (`SIM_PROFILE=membership SIM_KNOWN_BUGS=5 SIM_SEED=300251`: durability at send):
/// acknowledgements wait in the core's outbox until the next `ready()`. When a later input in the
/// same round truncates the log (an AppendEntries from a newer leader conflicting with entries an
/// older one sent), the Ready still carries the earlier "success, matchIndex 79" for entries that
/// its own state to save no longer holds: the runtime saves, then sends an acknowledgement for
/// entries that are on no disk. A stale leader counting such acknowledgements can commit entries
/// that a newer leader already erased. skiff-rs's runtime steps every input of a round before
/// calling `ready()` and does not call it while a save is in flight, so it is exposed.
#[test]
fn bug_ready_acknowledges_truncated_entries() {
    use skiff_core::message::AppendEntries;
    use skiff_core::{Body, Entry, EntryKind, Json, Message};
    let e = |index: u64, term: u64| Entry {
        term,
        index,
        kind: EntryKind::Command(Json::from_value(&index)),
        uuid: format!("{index}-{term}"),
    };
    let ae = |from: &str, term: u64, prev: (u64, u64), entries: Vec<Entry>| Message {
        from: from.into(),
        to: "f".into(),
        token: None,
        body: Body::AppendEntries(AppendEntries {
            term,
            leader_id: from.into(),
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: 0,
            peers: None,
            read_ctx: None,
            transfer_to: None,
        }),
    };
    let state = r#"{"currentTerm":2,"votedFor":null,"log":{"meta":{"lastIncludedIndex":0,"lastIncludedTerm":0,
        "members":[{"id":"a","metadata":{}},{"id":"b","metadata":{}},{"id":"f","metadata":{}}]},
        "entries":[{"term":1,"index":1,"command":1,"uuid":"1-1"},{"term":1,"index":2,"command":2,"uuid":"2-1"}]},
        "peers":[{"id":"a","metadata":{}},{"id":"b","metadata":{}}]}"#;
    let r = skiff_core::persisted::restore("f", state, 0, false, &Json::empty_object()).unwrap();
    let mut f = skiff_core::Raft::new(skiff_core::Config::new("f"), r).unwrap();
    let _ = f.ready();
    // The leader of term 2 sends entries 3 and 4; the leader of term 3 then overwrites 3.
    f.step(ae("a", 2, (2, 1), vec![e(3, 2), e(4, 2)])).unwrap();
    f.step(ae("b", 3, (2, 1), vec![e(3, 3)])).unwrap();
    let rd = f.ready();
    assert!(rd.save.is_some());
    // What this Ready asks to save holds the log up to (3, term 3); every acknowledgement it sends
    // must be about entries in it.
    for m in rd.messages.iter().chain(&rd.persisted_messages) {
        if let Body::AppendEntriesResponse(r) = &m.body {
            if r.success {
                let held = f.log().term(r.match_index).is_some() && (m.to != "a" || r.match_index < 3);
                assert!(
                    held,
                    "the Ready that saves a log ending at {} tells {} (term {}) that entries up to {} match",
                    f.log().last_index(),
                    m.to,
                    r.term,
                    r.match_index
                );
            }
        }
    }
}

/// BUG 6 (`SIM_PROFILE=membership SIM_KNOWN_BUGS=4 SIM_SEED=604`: liveness after healing; no
/// re-add is involved): a node whose snapshot install is pending may not campaign ("must not
/// lead", `tick`), yet it keeps accepting entries, and a crash mid-install keeps its log. When it
/// holds the most up-to-date log among the nodes that must form a majority, it rightly refuses to
/// vote for the others and cannot be elected itself: no leader, forever. In the simulation the
/// leader removed itself while streaming a snapshot to n2, leaving {n1, n2} with n2 ahead.
/// Fixed: a node that refuses its vote to a candidate whose log is behind while its install is
/// pending campaigns after all, leads only until its barrier commits (a majority then holds its
/// whole log), taking no proposals, and steps down for a node that can apply.
#[test]
fn bug_pending_install_on_most_up_to_date_node_deadlocks() {
    let entries = |n: u64| {
        (1..=n)
            .map(|i| format!(r#"{{"term":2,"index":{i},"command":{i},"uuid":"u{i}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    };
    let members = r#"[{"id":"n1","metadata":{}},{"id":"n2","metadata":{}}]"#;
    // n1 holds entries 1..8; n2 holds 1..10 and was installing a snapshot at 5 when it stopped.
    let s1 = format!(
        r#"{{"currentTerm":3,"votedFor":null,"log":{{"meta":{{"lastIncludedIndex":0,"lastIncludedTerm":0,"members":{members}}},"entries":[{}]}},"peers":[{{"id":"n2","metadata":{{}}}}]}}"#,
        entries(8)
    );
    let s2 = format!(
        r#"{{"currentTerm":3,"votedFor":null,"log":{{"meta":{{"lastIncludedIndex":0,"lastIncludedTerm":0,"members":{members},
            "pendingSnapshot":{{"lastIncludedIndex":5,"lastIncludedTerm":2,"members":{members}}}}},"entries":[{}]}},"peers":[{{"id":"n1","metadata":{{}}}}]}}"#,
        entries(10)
    );
    let mut c = tiny::Tiny::new(&[("n1", &s1, false), ("n2", &s2, false)]);
    assert!(c.node("n2").pending_install().is_some());
    c.run(10_000);
    assert!(
        c.leader().is_some(),
        "no leader after 10 s: n1 (log ..8) campaigned up to term {}, n2 (log ..10, install pending) never campaigns",
        c.node("n1").term()
    );
}

// ------------------------------------------------------------------------------------------------
// Causes of the slowdisk failures of issue 16, scripted
// ------------------------------------------------------------------------------------------------

/// An original-format persisted state of `me` in a cluster of `ids`, at `term`, whose log holds
/// one entry per element of `terms` (its term), from index 1.
fn original_state(me: &str, ids: &[&str], term: u64, terms: &[u64]) -> String {
    let entries: Vec<String> = terms
        .iter()
        .enumerate()
        .map(|(k, t)| format!(r#"{{"term":{t},"index":{},"command":{k},"uuid":"u{}-{t}"}}"#, k + 1, k + 1))
        .collect();
    let peers: Vec<String> =
        ids.iter().filter(|id| **id != me).map(|id| format!(r#"{{"id":"{id}","metadata":{{}}}}"#)).collect();
    format!(
        r#"{{"currentTerm":{term},"votedFor":null,"log":{{"meta":{{"lastIncludedIndex":0,"lastIncludedTerm":0}},"entries":[{}]}},"peers":[{}]}}"#,
        entries.join(","),
        peers.join(",")
    )
}

/// Seed 57003 (`SIM_PROFILE=slowdisk`, base 50000): no leader for a minute after healing. n3, a
/// candidate whose log is behind, could not win; n1 could, but each of n3's vote requests (a new
/// term each time) restarted n1's election timer, and n3's timer kept firing first. Raft restarts
/// the timer only for the current leader's AppendEntries or a granted vote; a higher term alone
/// does not. Here: n1 has the older log and the shortest timeout, n2 the newer log; without
/// pre-vote n1 campaigns again and again, and n2 must still get to campaign and win.
#[test]
fn candidate_with_older_log_does_not_hold_back_one_that_can_win() {
    let ids = ["n1", "n2", "n3"];
    let (s1, s2, s3) =
        (original_state("n1", &ids, 2, &[1, 1]), original_state("n2", &ids, 2, &[1, 1, 2]), original_state("n3", &ids, 2, &[1]));
    let mut c = tiny::Tiny::with_config(&[("n1", &s1, false), ("n2", &s2, false), ("n3", &s3, false)], |cfg| {
        cfg.pre_vote = false
    });
    c.cut.insert("n3".into()); // down: n1 and n2 must agree
    c.run(3000);
    assert!(c.node("n1").term() > 3, "n1 campaigned (term {})", c.node("n1").term());
    assert_eq!(
        c.leader().as_deref(),
        Some("n2"),
        "after 3 s n2 (log ending at term 2) has not won; n1 (log behind) is at term {}, n2 at term {}",
        c.node("n1").term(),
        c.node("n2").term()
    );
}

/// Seed 56021 (`SIM_PROFILE=slowdisk`, base 50000, once the timer rule above was fixed): no leader
/// after healing. n1 was removed while it could not hear the leader, so it never learned of it
/// (the leader no longer replicates to it) and, without pre-vote, campaigned with its old
/// membership: each vote request with a higher term made the leader n2 step down, which also
/// abandoned the snapshot transfer n3 needed, again and again. A leader that heard from a
/// majority within the minimum election timeout keeps its job (Raft thesis §4.2.3), as its
/// followers already refuse to help depose it.
#[test]
fn removed_member_that_missed_its_removal_does_not_depose_the_leader() {
    use skiff_core::EntryKind;
    let ids = ["n1", "n2", "n3"];
    let states: Vec<String> = ids.iter().map(|id| original_state(id, &ids, 1, &[1])).collect();
    let mut c = tiny::Tiny::with_config(
        &[("n1", &states[0], false), ("n2", &states[1], false), ("n3", &states[2], false)],
        |cfg| cfg.pre_vote = false,
    );
    c.run(1000);
    assert_eq!(c.leader().as_deref(), Some("n1"));
    c.cut.insert("n3".into());
    c.node("n1").propose_membership(EntryKind::RemovePeer { id: "n3".into() }).unwrap();
    c.run(500);
    assert!(c.node("n1").can_change_membership(), "the removal of n3 committed");
    let term = c.node("n1").term();
    c.cut.remove("n3");
    c.run(3000);
    assert!(c.node("n3").term() > term + 3, "n3 kept campaigning (term {})", c.node("n3").term());
    assert!(
        c.node("n1").is_leader() && c.node("n1").term() == term,
        "the removed n3 deposed the leader: n1 is {:?} at term {} (was leader at {term})",
        c.node("n1").role(),
        c.node("n1").term()
    );
}

/// Seeds 9000364 and 9020738 (default profile, third exploration): commit stuck for good. A
/// follower's stale "needs a snapshot" answer (sent before the snapshot it was installing
/// finished) put the leader back into snapshot state for it; the follower's next answers said
/// "success, matchIndex 3", which the leader recorded without counting it toward commitment,
/// and answers repeating the same matchIndex are no progress, so nothing counted it later.
#[test]
fn success_from_a_follower_in_snapshot_state_commits() {
    use skiff_core::message::{AppendEntriesResponse, RequestVoteResponse};
    use skiff_core::{Body, Json, Message};
    let ids = ["a", "f"];
    let state = original_state("a", &ids, 1, &[1, 1]);
    let r = skiff_core::persisted::restore("a", &state, 0, false, &Json::empty_object()).unwrap();
    let mut a = skiff_core::Raft::new(skiff_core::Config::new("a"), r).unwrap();
    let from_f = |body: Body| Message { from: "f".into(), to: "a".into(), token: None, body };
    // a wins the pre-vote and the vote of f, and appends its barrier at 3.
    a.tick(1000);
    let term = a.term() + 1;
    a.step(from_f(Body::RequestVoteResponse(RequestVoteResponse { term, vote_granted: true, pre_vote: true, reason: None })))
        .unwrap();
    a.step(from_f(Body::RequestVoteResponse(RequestVoteResponse { term, vote_granted: true, pre_vote: false, reason: None })))
        .unwrap();
    assert!(a.is_leader());
    let barrier = a.log().last_index();
    let rd = a.ready();
    a.advance(rd.save.expect("the barrier is saved").token);
    let answer = |success: bool, match_index: u64, needs_snapshot: bool| {
        Body::AppendEntriesResponse(AppendEntriesResponse {
            term,
            success,
            last_applied: 0,
            match_index,
            reject_index: 0,
            conflict_index: None,
            conflict_term: None,
            reason: None,
            needs_snapshot,
            read_ctx: None,
        })
    };
    a.step(from_f(answer(false, 0, true))).unwrap(); // stale: f has installed its snapshot since
    a.step(from_f(answer(true, barrier, false))).unwrap();
    a.step(from_f(answer(true, barrier, false))).unwrap();
    assert_eq!(a.commit(), barrier, "f holds the barrier (index {barrier}) and a has saved it: it is committed");
}

/// Raft paper, Figure 8: a leader must not commit an entry of an earlier term by counting
/// replicas, because a later leader may still overwrite it. (Moved here from the simulation,
/// whose driver always batches entries and runs check-quorum: the scenario needs one entry per
/// message.)
#[test]
fn figure8_old_term_entry_is_not_committed_by_counting_replicas() {
    let ids = ["n1", "n2", "n3", "n4", "n5"];
    let states: Vec<String> = ids.iter().map(|id| original_state(id, &ids, 1, &[])).collect();
    let nodes: Vec<(&str, &str, bool)> = ids.iter().zip(&states).map(|(id, s)| (*id, s.as_str(), false)).collect();
    let mut c = tiny::Tiny::with_config(&nodes, |cfg| {
        cfg.check_quorum = false;
        let (lo, hi) = match cfg.id.as_str() {
            "n1" => (150, 160),   // S1 wins first and again in (c)
            "n2" => (2000, 2100), // S2 never campaigns
            "n5" => (200, 210),   // S5
            _ => (400, 450),
        };
        cfg.min_election_timeout = lo;
        cfg.max_election_timeout = hi;
    });
    c.run(1000);
    assert_eq!(c.leader().as_deref(), Some("n1"));
    let t1 = c.node("n1").term();

    // (a) S1 replicates an entry of its term to S2 only.
    for k in ["n3", "n4", "n5"] {
        c.sever("n1", k);
    }
    let xi = c.node("n1").propose(skiff_core::Json::from_text(r#""x""#).unwrap()).unwrap();
    c.run(50);
    assert_eq!(c.node("n2").log().term(xi), Some(t1));

    // (b) S1 crashes; S5 wins the next term with S3 and S4, appends its barrier at the same
    // index, and crashes before replicating it.
    c.cut.insert("n1".into());
    c.cut.insert("n2".into());
    c.blocked.clear();
    c.sever("n3", "n4"); // neither can gather a majority: only S5 can win this term
    while !c.node("n5").is_leader() {
        assert!(c.now < 10_000, "S5 did not win: {:?}", c.nodes.iter().map(|r| (r.id().to_string(), r.role(), r.term(), r.log().last_index(), r.log().last_term(), r.leader().map(str::to_string))).collect::<Vec<_>>());
        c.run(1);
    }
    c.cut.insert("n5".into());
    c.blocked.clear();
    let t2 = c.node("n5").term();
    assert_eq!(c.node("n5").log().term(xi), Some(t2));

    // (c) S1 restarts and wins a later term with S2 and S3, and copies its old entry to S3: now a
    // majority (S1, S2, S3) holds it, but it is from an earlier term.
    c.restart("n1");
    c.cut.clear();
    c.cut.insert("n4".into());
    c.cut.insert("n5".into());
    while !c.node("n1").is_leader() || c.node("n3").log().term(xi) != Some(t1) {
        assert!(c.now < 20_000, "S1 did not win again and copy its entry to S3");
        c.run(1);
    }
    let t3 = c.node("n1").term();
    c.blocked.insert(("n1".into(), "n3".into())); // S3 must not get S1's current-term barrier
    c.run(300);
    assert!(c.node("n1").is_leader());
    assert!(c.node("n1").commit() < xi, "leader of term {t3} committed entry {xi} of term {t1} by counting replicas");

    // (d) S1 crashes; S5 restarts and wins with S3 and S4, and overwrites the entry everywhere.
    c.cut.insert("n1".into());
    c.cut.remove("n4");
    c.cut.remove("n5");
    c.blocked.clear();
    c.restart("n5");
    c.run(5000);
    assert!(c.node("n5").is_leader(), "S5 did not win again");
    c.cut.clear();
    c.restart("n1");
    c.run(3000);
    for id in ids {
        assert_eq!(c.node(id).log().term(xi), Some(t2), "{id} did not take S5's entry");
    }
}
