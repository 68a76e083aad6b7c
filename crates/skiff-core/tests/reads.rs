//! Linearizable reads without log writes (issue 14): ReadIndex on the leader, the lease, and
//! follower reads, on a scripted three-node cluster.

use skiff_core::message::{AppendEntries, ReadIndex};
use skiff_core::{Body, Json, Message, ReadError, MAX_PENDING_READS};

#[path = "common/cluster.rs"]
mod cluster;
use cluster::{Cluster, IDS};

/// The read `id` node `k` answered, if any.
fn served(c: &Cluster, k: usize, id: u64) -> Option<u64> {
    c.reads.iter().find(|(n, r)| *n == k && r.id == id).map(|(_, r)| r.index)
}

fn failed(c: &Cluster, k: usize, id: u64) -> Option<ReadError> {
    c.read_failures.iter().find(|(n, f)| *n == k && f.id == id).map(|(_, f)| f.error.clone())
}

/// A follower of `leader`.
fn follower(leader: usize) -> usize {
    (leader + 1) % 3
}

#[test]
fn a_leader_read_is_served_after_a_quorum_round_and_writes_nothing() {
    let (mut c, l, _) = Cluster::elected();
    let last = c.nodes[l].log().last_index();
    let commit = c.nodes[l].commit();
    for id in 1..=50 {
        c.nodes[l].read_index(id, false).expect("the leader takes reads");
    }
    c.flush();
    assert_eq!(served(&c, l, 1), None, "served before any follower echoed the round");
    c.run(5);
    for id in 1..=50 {
        assert_eq!(served(&c, l, id), Some(commit), "read {id}");
    }
    assert_eq!(c.nodes[l].log().last_index(), last, "a read appended to the log");
}

#[test]
fn a_leader_cut_off_from_the_majority_serves_no_read_and_fails_it_when_it_steps_down() {
    let (mut c, l, _) = Cluster::elected();
    c.isolate(l);
    c.nodes[l].read_index(1, false).expect("still leads for now");
    c.run(20);
    assert_eq!(served(&c, l, 1), None, "an isolated leader confirmed a read");
    // The others elect a new leader and commit; the old one steps down (check-quorum).
    c.run(700);
    assert!(!c.nodes[l].is_leader());
    assert_eq!(served(&c, l, 1), None);
    assert!(matches!(failed(&c, l, 1), Some(ReadError::NotLeader { .. })), "{:?}", c.read_failures);
}

#[test]
fn a_follower_read_waits_for_the_leader_s_index_to_be_applied_locally() {
    let (mut c, l, _) = Cluster::elected();
    let f = follower(l);
    // A command the follower has not yet applied when it asks.
    let index = c.nodes[l].propose(Json::from_value(&"b")).expect("leader");
    c.flush();
    c.run(1);
    c.nodes[f].read_index(7, false).expect("a follower that knows its leader takes reads");
    c.run(10);
    let read = served(&c, f, 7).expect("served");
    assert!(read >= index, "read index {read} is behind the committed {index}");
    assert!(c.nodes[f].applied() >= read);
    assert_eq!(failed(&c, f, 7), None);
}

#[test]
fn a_follower_read_fails_when_its_leader_changes() {
    let (mut c, l, _) = Cluster::elected();
    let f = follower(l);
    c.cut.insert((IDS[f].to_string(), IDS[l].to_string()));
    c.nodes[f].read_index(3, false).expect("taken");
    c.flush();
    c.isolate(l);
    c.run(1000);
    assert_eq!(served(&c, f, 3), None);
    assert!(matches!(failed(&c, f, 3), Some(ReadError::NotLeader { .. })), "{:?}", c.read_failures);
}

#[test]
fn a_lease_read_needs_no_round_while_the_lease_holds_and_a_round_after() {
    let (mut c, l, _) = Cluster::elected();
    c.run(60);
    c.nodes[l].read_index(1, true).expect("taken");
    c.flush();
    assert!(served(&c, l, 1).is_some(), "a lease read waited for a round");
    c.isolate(l);
    c.run(140);
    c.nodes[l].read_index(2, true).expect("taken");
    c.run(5);
    assert_eq!(served(&c, l, 2), None, "a lease read was served after the lease ran out");
}

#[test]
fn a_node_without_a_leader_refuses_and_pending_reads_are_bounded() {
    let mut c = Cluster::new();
    assert_eq!(c.nodes[0].read_index(1, false), Err(ReadError::NotLeader { leader: None }));
    let (mut c2, l, _) = Cluster::elected();
    c2.isolate(l);
    for id in 0..MAX_PENDING_READS as u64 {
        c2.nodes[l].read_index(id, false).expect("within the bound");
    }
    assert_eq!(c2.nodes[l].read_index(u64::MAX, false), Err(ReadError::Busy));
    c.run(1);
}

#[test]
fn a_stranger_s_read_index_is_answered_with_a_refusal_and_a_huge_read_ctx_is_malformed() {
    let (mut c, l, term) = Cluster::elected();
    c.evil(l, Body::ReadIndex(ReadIndex { term, follower_id: "evil".into(), id: 9 }));
    let answer = c.to_evil.iter().find_map(|m| match &m.body {
        Body::ReadIndexResponse(r) => Some(r.clone()),
        _ => None,
    });
    let answer = answer.expect("the refused request is answered");
    assert!(!answer.success && answer.id == 9 && answer.reason.is_some());
    let f = follower(l);
    let body = Body::AppendEntries(AppendEntries {
        term,
        leader_id: IDS[l].into(),
        prev_log_index: 0,
        prev_log_term: 0,
        entries: Vec::new(),
        leader_commit: 0,
        peers: None,
        read_ctx: Some(u64::MAX),
        transfer_to: None,
    });
    let m = Message { from: IDS[l].into(), to: IDS[f].into(), token: None, body };
    assert!(c.nodes[f].step(m).is_err(), "a readCtx past 2^53 was taken");
}

#[test]
fn a_follower_asks_for_many_reads_with_one_read_index_and_a_lost_one_fails_its_reads() {
    let (mut c, l, _) = Cluster::elected();
    let f = follower(l);
    for id in 1..=100 {
        c.nodes[f].read_index(id, false).expect("taken");
    }
    c.flush();
    let asked = c.net.iter().filter(|m| matches!(m.body, Body::ReadIndex(_))).count();
    assert_eq!(asked, 1, "one ReadIndex for every waiting read");
    c.run(10);
    assert!((1..=100).all(|id| served(&c, f, id).is_some()));
    // The next one is lost: its reads fail within maxElectionTimeout (the runtime asks again).
    c.cut.insert((IDS[f].to_string(), IDS[l].to_string()));
    c.nodes[f].read_index(200, false).expect("taken");
    c.run(310);
    assert_eq!(served(&c, f, 200), None);
    assert!(matches!(failed(&c, f, 200), Some(ReadError::NotLeader { .. })), "{:?}", c.read_failures);
}

/// The lease runs from when the leader sent what a majority answered, not from when the answers
/// arrived: answers delayed in the network must not stretch it past the followers' promise not
/// to vote (the driver simulation's seed 57 had a deposed leader serve a stale lease read).
#[test]
fn a_delayed_answer_does_not_stretch_the_lease() {
    let (mut c, l, term) = Cluster::elected();
    c.run(60);
    // Hold back the followers' next answers to the leader, as a slow network would.
    let mut held = Vec::new();
    for _ in 0..200 {
        c.run(1);
        held.extend(c.net.iter().filter(|m| m.to == IDS[l] && matches!(m.body, Body::AppendEntriesResponse(_))).cloned());
        if held.len() >= 2 {
            break;
        }
    }
    assert!(held.len() >= 2, "the followers answered no heartbeat");
    c.isolate(l);
    c.net.clear();
    // The followers last heard from the leader before now; the lease is 135 ms of their 150.
    c.run(120);
    for m in held {
        c.deliver(m);
    }
    c.run(20);
    assert!(c.nodes[l].is_leader() && c.nodes[l].term() == term, "the leader stepped down before the check");
    c.nodes[l].read_index(1, true).expect("still leads");
    c.flush();
    assert_eq!(served(&c, l, 1), None, "a lease read was served on answers that arrived late");
}

/// The read round rides on broadcasts only: the AppendEntries a proposal sends and their answers
/// carry no `readCtx` (the field cost every message bytes and parsing at one client), a heartbeat
/// does, and a read waiting meanwhile is still confirmed by the next broadcast's answers.
#[test]
fn only_broadcast_append_entries_carry_the_read_round() {
    let (mut c, l, _) = Cluster::elected();
    c.run(200); // heartbeats under check-quorum: the rounds have started
    c.nodes[l].propose(Json::from_value(&"b")).expect("the leader takes it");
    c.flush();
    let proposal: Vec<&Message> = c.net.iter().filter(|m| m.from == IDS[l]).collect();
    assert_eq!(proposal.len(), 2, "one AppendEntries per follower: {proposal:?}");
    for m in &proposal {
        match &m.body {
            Body::AppendEntries(a) => {
                assert_eq!(a.entries.len(), 1);
                assert_eq!(a.read_ctx, None, "a proposal's AppendEntries carried the read round");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    c.net.clear();
    // A read: the leader broadcasts at once, and every AppendEntries of that broadcast carries it.
    c.nodes[l].read_index(7, false).expect("the leader takes reads");
    c.flush();
    let round: Vec<Option<u64>> = c
        .net
        .iter()
        .filter_map(|m| match &m.body {
            Body::AppendEntries(a) if m.from == IDS[l] => Some(a.read_ctx),
            _ => None,
        })
        .collect();
    assert_eq!(round.len(), 2, "the read's broadcast: {round:?}");
    assert!(round.iter().all(|r| r.is_some()), "a broadcast AppendEntries without the round: {round:?}");
    c.run(5);
    assert!(served(&c, l, 7).is_some(), "the read was not served: {:?}", c.read_failures);
}
