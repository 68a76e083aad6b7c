//! Deterministic simulation of whole skiff-core clusters under faults.
//!
//! `random_clusters` runs many seeds, each a randomized configuration chosen by the seed: 1, 3, 5
//! or 7 nodes; started the way users start a cluster (n1 bootstraps, the others join as standbys
//! through `propose_membership`) or from an original-format (skiff-algorithm) persisted state that
//! lists every member; message delay, reordering, duplication and loss; symmetric, one-way and
//! random partitions; crashes that lose unfinished saves (slow disks), unsent messages and
//! unapplied entries; compaction and snapshot transfers; removals of followers and of the leader,
//! and re-adds. Invariants are checked after every event (see `sim/harness.rs`), and every run ends
//! with healing everything and checking liveness and that no acknowledged proposal was lost.
//!
//! - `SIM_SEEDS` (default 500; 30 in unoptimized builds), `SIM_SEED_BASE` (default 0): which seeds.
//! - `SIM_SEED=<n>`: replay one seed with a trace of its last events on failure;
//!   `SIM_TRACE=all` prints every event as it happens.
//! - `SIM_STEPS`: events per run before healing (default 20000; 5000 in unoptimized builds).
//! - `SIM_PROFILE=snapshots|slowdisk|big|membership`: bias the configurations toward one area
//!   (`default`, or unset: none).
//! - `SIM_KNOWN_BUGS=4`: stop steering around the one documented limitation left (a node whose
//!   data was wiped coming back under its old id; `bug_wiped_node_with_reused_id_...` below).
//!   Nothing else is avoided: the runtime model pulls `ready()` while saving or not (the shipped
//!   driver does not), removed nodes are re-added in every start mode.
//!
//! A failure prints the seed, the configuration and the command that replays it, e.g.
//! `SIM_PROFILE=slowdisk SIM_SEED=123 cargo test -p skiff-core --profile ci --test sim -- --nocapture random_clusters`.
//! `scripts/sim-explore.sh` runs long explorations over every profile and prints such commands.
//! The other tests are scripted scenarios on the same harness, minimal reproductions of core bugs
//! (`#[ignore]`d until fixed) and a check that the checker catches broken runtimes.

#[path = "sim/harness.rs"]
mod harness;

use harness::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

fn run_seed(seed: u64, trace: bool) -> (Stats, usize, usize) {
    let mut sim = Sim::new_traced(RunConfig::random(seed), trace);
    let r = catch_unwind(AssertUnwindSafe(|| sim.run()));
    if let Err(e) = r {
        if trace {
            eprintln!("---- last events of seed {seed} ----\n{}\n---- end of trace ----", sim.trace_tail());
        }
        std::panic::resume_unwind(e);
    }
    (sim.stats.clone(), sim.steps, sim.acked.len())
}

#[test]
fn random_clusters() {
    if let Some(seed) = env_u64("SIM_SEED") {
        eprintln!("replaying {}", RunConfig::random(seed).summary());
        let (stats, steps, acked) = run_seed(seed, true);
        eprintln!("seed {seed} ok: {steps} steps, {acked} acknowledged, {stats:?}");
        return;
    }
    // Release builds run the full default; unoptimized builds (plain `cargo test`) a smaller one.
    let count = env_u64("SIM_SEEDS").unwrap_or(if cfg!(debug_assertions) { 30 } else { 500 });
    let base = env_u64("SIM_SEED_BASE").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(count.max(1) as usize);
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let totals: Mutex<[u64; 8]> = Mutex::new([0; 8]);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as u64;
                if k >= count {
                    break;
                }
                let seed = base + k;
                match catch_unwind(|| run_seed(seed, false)) {
                    Ok((st, steps, acked)) => {
                        let mut t = totals.lock().unwrap();
                        for (k, v) in [
                            steps as u64,
                            acked as u64,
                            st.crashes,
                            st.partitions,
                            st.removals,
                            st.removed_self,
                            st.snapshots_installed,
                            st.elections,
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            t[k] += v;
                        }
                    }
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.lock().unwrap().push((seed, msg));
                    }
                }
            });
        }
    });
    let t = totals.into_inner().unwrap();
    eprintln!(
        "simulated {count} seeds x {} steps in {:.1?} on {threads} threads: {} events, {} acknowledged proposals, {} crashes, \
         {} partitions, {} removals ({} of the leader itself), {} snapshots installed, {} elections",
        RunConfig::random(base).steps,
        started.elapsed(),
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]
    );
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    if let Some((seed, _)) = failures.first() {
        // Deterministic: run the first failure again with a trace.
        let _ = catch_unwind(|| run_seed(*seed, true));
        let list: Vec<String> =
            failures.iter().map(|(s, m)| format!("seed {s}: {}", m.lines().next().unwrap_or(""))).collect();
        panic!(
            "{} of {count} seeds failed:\n{}\nreplay: {}",
            failures.len(),
            list.join("\n"),
            RunConfig::random(*seed).replay_command()
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Scripted scenarios (same harness, same invariant checks after every event)
// ------------------------------------------------------------------------------------------------

/// A quiet cluster whose nodes all start from an original-format state listing every member.
fn cluster(nodes: usize, seed: u64, tweak: impl FnOnce(&mut RunConfig)) -> Sim {
    let mut cfg = RunConfig::manual(nodes, Start::Persisted, seed);
    tweak(&mut cfg);
    Sim::new(cfg)
}

fn wait_leader(sim: &mut Sim, max_ms: u64) -> usize {
    assert!(sim.run_until(max_ms, |s| s.leader().is_some()), "no leader within {max_ms} ms\n{}", sim.describe());
    sim.leader().unwrap()
}

/// Raft paper, Figure 8: a leader must not commit an entry of an earlier term by counting
/// replicas, because a later leader may still overwrite it.
#[test]
fn figure8_old_term_entry_is_not_committed_by_counting_replicas() {
    let mut sim = cluster(5, 8, |c| {
        c.max_entries = 1; // one entry per AppendEntries, so replication can be stopped between two
        c.check_quorum = false;
        c.election_override = vec![
            Some((150, 160)),   // n1 (S1) wins first and again in (c)
            Some((2000, 2100)), // n2 (S2) never campaigns
            Some((400, 450)),   // n3
            Some((400, 450)),   // n4
            Some((200, 210)),   // n5 (S5)
        ];
    });
    let (s1, s2, s3, s4, s5) = (0, 1, 2, 3, 4);
    assert_eq!(wait_leader(&mut sim, 3000), s1);
    sim.run_for(300);
    let base = sim.raft(s1).log().last_index();
    let t1 = sim.raft(s1).term();

    // (a) S1 replicates an entry of its term to S2 only.
    for k in [s3, s4, s5] {
        sim.block(s1, k);
        sim.block(k, s1);
    }
    let x = sim.command();
    let xi = sim.propose(s1, &x).unwrap();
    assert_eq!(xi, base + 1);
    assert!(sim.run_until(1000, |s| s.nodes[s2].durable.term_at(xi) == Some(t1)));

    // (b) S1 crashes; S5 wins the next term with S3 and S4, appends (its barrier) at the same
    // index, and crashes before replicating it.
    sim.crash(s1);
    sim.isolate(s2);
    assert!(sim.run_until(5000, |s| s.nodes[s5].is_leader()), "S5 did not win\n{}", sim.describe());
    sim.isolate(s5);
    let t2 = sim.raft(s5).term();
    assert!(t2 > t1);
    assert!(sim.run_until(1000, |s| s.nodes[s5].durable.term_at(xi) == Some(t2)));
    sim.crash(s5);

    // (c) S1 restarts and wins a later term with S2 and S3, and copies its old entry to S3: now a
    // majority (S1, S2, S3) holds it, but it is from an earlier term.
    sim.heal();
    sim.isolate(s4);
    sim.isolate(s5);
    sim.start(s1);
    assert!(sim.run_until(5000, |s| s.nodes[s1].is_leader()), "S1 did not win again\n{}", sim.describe());
    let t3 = sim.raft(s1).term();
    assert!(sim.run_until(2000, |s| s.nodes[s3].raft().log().term(xi) == Some(t1)), "S3 never got the old entry");
    sim.block(s1, s3); // S3 must not get S1's current-term barrier
    sim.capture = true;
    // S3 acknowledges the old entry to S1 in S1's term: S1 knows a majority holds it.
    let acked = |s: &Sim| {
        s.sent.iter().any(|m| {
            m.from == "n3"
                && m.to == "n1"
                && matches!(&m.body, skiff_core::Body::AppendEntriesResponse(r) if r.success && r.term == t3 && r.match_index >= xi)
        })
    };
    assert!(sim.run_until(2000, acked), "S3 never acknowledged the old entry");
    let committed = sim.run_until(300, |s| s.nodes[s1].raft().commit() >= xi);
    assert!(!committed, "leader of term {t3} committed entry {xi} of term {t1} by counting replicas");
    assert!(sim.nodes[s1].is_leader());

    // (d) S1 crashes; S5 wins with S3 and S4 and overwrites the entry everywhere.
    sim.crash(s1);
    sim.heal();
    sim.isolate(s1);
    sim.start(s5);
    assert!(sim.run_until(5000, |s| s.nodes[s5].is_leader()), "S5 did not win again\n{}", sim.describe());
    sim.heal();
    sim.start(s1);
    sim.finish();
    for n in &sim.nodes {
        assert_eq!(n.raft().log().term(xi), Some(t2), "{} did not take S5's entry", n.id);
        assert!(!n.has_command(&x));
    }
    assert_eq!(sim.index_of_command(&x), None, "the uncommitted entry was applied somewhere");
}

/// An isolated leader keeps accepting proposals; a new leader elsewhere commits other entries
/// at the same indexes; after healing, the old leader's uncommitted entries are overwritten and
/// never applied, and everything acknowledged survives.
#[test]
fn partitioned_old_leader_entries_are_overwritten() {
    let mut sim = cluster(5, 2, |c| c.check_quorum = false);
    let old = wait_leader(&mut sim, 3000);
    sim.run_for(300);
    let first = sim.raft(old).log().last_index() + 1;
    sim.isolate(old);
    let stale: Vec<String> = (0..3).map(|_| sim.command()).collect();
    for c in &stale {
        sim.propose(old, c).unwrap();
    }
    assert!(sim.run_until(5000, |s| s.leaders().iter().any(|&l| l != old)), "no new leader\n{}", sim.describe());
    let new = *sim.leaders().iter().find(|&&l| l != old).unwrap();
    assert!(sim.raft(new).term() > sim.raft(old).term());
    let fresh: Vec<String> = (0..3).map(|_| sim.command()).collect();
    for c in &fresh {
        sim.propose(new, c).unwrap();
    }
    assert!(sim.run_until(3000, |s| fresh.iter().all(|c| s.nodes[new].has_command(c))));
    assert!(sim.nodes[old].is_leader(), "without check-quorum the isolated leader keeps leading");
    assert!(sim.raft(old).commit() < first, "the isolated leader committed alone");

    sim.heal();
    assert!(sim.run_until(3000, |s| !s.nodes[old].is_leader()));
    sim.finish();
    for c in &stale {
        assert_eq!(sim.index_of_command(c), None, "stale entry {c} was applied");
    }
    for n in &sim.nodes {
        for c in &fresh {
            assert!(n.has_command(c), "{} lost {c}", n.id);
        }
        assert_eq!(n.raft().log().entry(first), sim.raft(new).log().entry(first), "{} kept a stale entry", n.id);
    }
}

/// A node that granted its vote, crashed and restarted must not grant it again to someone else
/// in the same term; a grant whose save never completed was never sent, so it may vote anew.
#[test]
fn vote_survives_crash_restart() {
    use skiff_core::message::RequestVote;
    use skiff_core::{Body, Message};
    let ask = |term: u64, candidate: &str| Message {
        from: candidate.into(),
        to: "n3".into(),
        token: None,
        body: Body::RequestVote(RequestVote {
            term,
            candidate_id: candidate.into(),
            last_log_index: 100,
            last_log_term: term,
            pre_vote: false,
            transfer: false,
        }),
    };
    let answers = |sim: &Sim, to: &str| -> Vec<(u64, bool)> {
        sim.sent
            .iter()
            .filter(|m| m.from == "n3" && m.to == to)
            .filter_map(|m| match &m.body {
                Body::RequestVoteResponse(r) => Some((r.term, r.vote_granted)),
                _ => None,
            })
            .collect()
    };
    let mut sim = cluster(3, 3, |c| c.disk_delay = (10, 10));
    sim.capture = true;
    // Only n3 runs: the candidates are played by injected messages.
    sim.crash(0);
    sim.crash(1);
    let t = sim.raft(2).term() + 5;

    // Granted and saved, then a crash: the vote must survive.
    sim.inject(ask(t, "n1"));
    sim.run_for(50);
    assert_eq!(answers(&sim, "n1"), vec![(t, true)]);
    sim.crash(2);
    sim.start(2);
    assert_eq!(sim.raft(2).hard_state_ref(), (t, Some("n1")));
    sim.inject(ask(t, "n2"));
    sim.run_for(50);
    assert_eq!(answers(&sim, "n2"), vec![(t, false)], "voted twice in term {t}");

    // Granted but the crash comes before the save completes: nothing was promised.
    let t2 = t + 1;
    sim.inject(ask(t2, "n1"));
    sim.run_for(5); // the save takes 10 ms
    sim.crash(2);
    assert!(!answers(&sim, "n1").contains(&(t2, true)), "a grant left before its vote was saved");
    sim.start(2);
    sim.inject(ask(t2, "n2"));
    sim.run_for(50);
    assert_eq!(answers(&sim, "n2").last(), Some(&(t2, true)));
}

/// Pre-vote: a follower cut off for many election timeouts does not raise its term, and when it
/// comes back the stable leader keeps its term. Without pre-vote it does disrupt (control).
#[test]
fn prevote_keeps_rejoining_node_from_disrupting() {
    for pre_vote in [true, false] {
        let mut sim = cluster(5, 4, |c| c.pre_vote = pre_vote);
        let leader = wait_leader(&mut sim, 3000);
        sim.run_for(500);
        let term = sim.raft(leader).term();
        let f = (leader + 1) % 5;
        sim.isolate(f);
        sim.run_for(3000);
        let isolated_term = sim.raft(f).term();
        sim.heal();
        sim.run_for(2000);
        if pre_vote {
            assert_eq!(isolated_term, term, "pre-vote: the isolated node raised its term");
            assert!(sim.nodes[leader].is_leader(), "pre-vote: the stable leader lost its job");
            assert_eq!(sim.raft(leader).term(), term, "pre-vote: the leader's term changed");
            for n in &sim.nodes {
                assert_eq!(n.raft().term(), term);
                assert_eq!(n.raft().leader(), Some(sim.nodes[leader].id.as_str()));
            }
        } else {
            assert!(isolated_term > term, "control: without pre-vote the isolated node campaigns");
            assert!(sim.raft(leader).term() > term, "control: without pre-vote the rejoining node disrupts");
        }
        sim.finish();
    }
}

/// Check-quorum: a leader that hears from no majority steps down by itself (same term), and the
/// majority elects another.
#[test]
fn check_quorum_isolated_leader_steps_down() {
    let mut sim = cluster(3, 5, |_| {});
    let leader = wait_leader(&mut sim, 3000);
    sim.run_for(300);
    let term = sim.raft(leader).term();
    sim.isolate(leader);
    let max_election = sim.cfg.election.1;
    assert!(
        sim.run_until(2 * max_election + 100, |s| !s.nodes[leader].is_leader()),
        "isolated leader still leads after {} ms",
        2 * max_election + 100
    );
    assert_eq!(sim.raft(leader).term(), term, "stepped down because of check-quorum, not a higher term");
    assert!(sim.run_until(3000, |s| s.leaders().iter().any(|&l| l != leader)));
    sim.finish();
}

/// A cluster built the way users build it: one node bootstraps, the others join one at a time;
/// then a follower and the leader itself are removed and the leader steps down (RemovedSelf).
#[test]
fn bootstrap_join_and_remove_leader() {
    let mut sim = Sim::new(RunConfig::manual(3, Start::Bootstrap, 6));
    assert!(sim.run_until(10_000, |s| s.ops.is_empty() && s.leader().is_some_and(|l| s.raft(l).members().len() == 3)));
    let leader = sim.leader().unwrap();
    sim.queue_op(MOp::Remove(leader));
    assert!(sim.run_until(5000, |s| s.nodes[leader].removed_self_seen), "leader never reported RemovedSelf");
    assert!(sim.run_until(5000, |s| s.ops.is_empty()));
    sim.finish();
    assert_eq!(sim.stats.removals, 1);
}

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

/// The checker itself: a runtime that breaks the `Ready` rules, or a disk that loses saves, must
/// be caught within a few seeds.
#[test]
fn checker_catches_broken_runtimes() {
    for mutation in [Mutation::SendBeforeSave, Mutation::AdvanceBeforeSave, Mutation::LoseLastSave] {
        let mut caught = None;
        for seed in 0..300 {
            let mut cfg = RunConfig::random(seed);
            cfg.mutation = Some(mutation);
            cfg.steps = 3000;
            let r = catch_unwind(AssertUnwindSafe(|| Sim::new(cfg).run()));
            if let Err(e) = r {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                caught = Some((seed, msg.lines().next().unwrap_or("").to_string()));
                break;
            }
        }
        let (seed, what) = caught.unwrap_or_else(|| panic!("{mutation:?} went unnoticed for 300 seeds"));
        eprintln!("{mutation:?} caught at seed {seed}: {what}");
    }
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
// Seeds that once failed, replayed in the configuration they failed in
// ------------------------------------------------------------------------------------------------

/// Runs `seed` of `profile` for `steps` events, the way `random_clusters` would with `SIM_PROFILE`
/// and `SIM_STEPS` set, after `pin` fixes what has changed in the harness since (so the run stays
/// the one that failed as far as the core's own behaviour allows).
fn replay_seed(profile: &str, seed: u64, steps: usize, pin: impl FnOnce(&mut RunConfig)) {
    let mut cfg = RunConfig::random_in(seed, Some(profile));
    cfg.steps = steps;
    pin(&mut cfg);
    let mut sim = Sim::new_traced(cfg, true);
    if catch_unwind(AssertUnwindSafe(|| sim.run())).is_err() {
        panic!("seed {seed} ({profile}) failed; last events:\n{}", sim.trace_tail());
    }
}

/// For seeds found before bug 5 stopped being avoided: the harness then forced
/// `pull_while_saving` on.
fn pulled_while_saving(cfg: &mut RunConfig) {
    cfg.pull_while_saving = true;
}

/// For seeds found since: the configuration as the seed draws it.
fn as_drawn(_: &mut RunConfig) {}

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

/// Seeds 5355 and 6327 (`SIM_PROFILE=slowdisk`, base 0) and 55111: "installed a snapshot at 0
/// that does not match the committed entry None". Not an inconsistency (see the comment of the
/// harness's `check_installed`): a follower whose install was interrupted (install pending, state
/// machine cleared) asks for a snapshot, and a leader that has applied nothing yet streams its
/// state machine at index 0, the empty state. The follower installs it, keeps its log (the entry
/// at 0 matches) and goes on from there. Here the leader cannot commit anything before the
/// follower is caught up (the third node is cut off), so the snapshot is at 0 for sure.
#[test]
fn snapshot_at_index_zero_is_the_empty_state() {
    let mut sim = cluster(3, 16, |_| {});
    let (n1, n2, n3) = (0, 1, 2);
    sim.isolate(n2);
    // n3 was installing a snapshot at 2 (of an earlier incarnation of the cluster) when it stopped.
    sim.restart_installing(n3, 2, 1);
    assert!(sim.raft(n3).pending_install().is_some());
    let leader = wait_leader(&mut sim, 3000);
    assert_eq!(leader, n1, "n3 may not campaign and n2 is cut off");
    assert!(sim.run_until(3000, |s| s.nodes[n3].installs > 0), "n3 never installed a snapshot\n{}", sim.describe());
    assert_eq!(sim.raft(n3).log().snapshot_index(), 0, "the snapshot n3 got is at 0");
    assert!(sim.raft(n3).pending_install().is_none());
    // n3 now takes entries and, with n1, commits.
    let c = sim.command();
    sim.propose(n1, &c).unwrap();
    assert!(sim.run_until(3000, |s| s.nodes[n3].has_command(&c)), "n3 did not apply after the install\n{}", sim.describe());
    sim.heal();
    sim.finish();
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

/// One named test per seed: `name: profile seed, pin;` replays `seed` of `profile` for 5,000
/// steps, with the configuration pinned as it was when the seed failed.
macro_rules! failed_seeds {
    ($($(#[$doc:meta])* $name:ident: $profile:literal $seed:literal, $pin:ident;)*) => {$(
        $(#[$doc])*
        #[test]
        fn $name() {
            replay_seed($profile, $seed, 5000, $pin);
        }
    )*};
}

failed_seeds! {
    /// Issue 16: "n3 installed a snapshot at 0 that does not match the committed entry None", a
    /// state the check now accepts (`snapshot_at_index_zero_is_the_empty_state`).
    seed_slowdisk_5355: "slowdisk" 5355, pulled_while_saving;
    /// Issue 16: the same, on n3.
    seed_slowdisk_6327: "slowdisk" 6327, pulled_while_saving;
    /// Issue 16: the same, on n1, while the leader n2 was removing itself.
    seed_slowdisk_55111: "slowdisk" 55111, pulled_while_saving;
    /// Issue 16: no leader after healing (`candidate_with_older_log_does_not_hold_back_one_that_can_win`).
    seed_slowdisk_57003: "slowdisk" 57003, pulled_while_saving;
    /// Found with the fix of 57003: acknowledgements sent after a merged save that had truncated
    /// their entries (a harness bug in group commit).
    seed_slowdisk_2611: "slowdisk" 2611, pulled_while_saving;
    /// Found with the fix of 57003: the same harness bug.
    seed_slowdisk_51734: "slowdisk" 51734, pulled_while_saving;
    /// Found with the fix of 57003: no leader after healing
    /// (`removed_member_that_missed_its_removal_does_not_depose_the_leader`).
    seed_slowdisk_56021: "slowdisk" 56021, pulled_while_saving;
    /// Found by the first 50,000-seed exploration: bug 6 in a random run (the leader removed
    /// itself while streaming a snapshot to n2, which then crashed mid-install holding committed
    /// entries n1 lacked; `bug_pending_install_on_most_up_to_date_node_deadlocks`).
    seed_snapshots_7039117: "snapshots" 7039117, as_drawn;
    /// Found by the second exploration: a re-added node (wiped, same id) voted for a node whose
    /// log was as long as the removal's index but a stale branch without it: the documented
    /// limitation, which the harness's `Readd` precondition now waits out properly.
    seed_snapshots_8001216: "snapshots" 8001216, as_drawn;
    /// Found by the third exploration: commit stuck after a stale "needs a snapshot" answer
    /// (`success_from_a_follower_in_snapshot_state_commits`).
    seed_default_9000364: "default" 9000364, as_drawn;
    /// Found by the third exploration: the same.
    seed_default_9020738: "default" 9020738, as_drawn;
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
