//! The rules a node keeps whatever its peers send (issue 10): each test has a three-node cluster
//! elect a leader, then a rogue peer sends one well-formed lie, and the test checks that the
//! cluster neither halts nor obeys.

use skiff_core::message::{AppendEntries, InstallSnapshot, RequestVote};
use skiff_core::persisted::restore;
use skiff_core::{Body, Config, EntryKind, Json, Message, Raft, MAX_SAFE};

#[path = "common/cluster.rs"]
mod cluster;
use cluster::{Cluster, IDS};

fn append(term: u64, leader: &str, leader_commit: u64) -> Body {
    Body::AppendEntries(AppendEntries {
        term,
        leader_id: leader.into(),
        prev_log_index: 0,
        prev_log_term: 0,
        entries: Vec::new(),
        leader_commit,
        peers: None,
        read_ctx: None,
        transfer_to: None,
    })
}

fn vote(term: u64, candidate: &str, last_log_index: u64) -> Body {
    Body::RequestVote(RequestVote {
        term,
        candidate_id: candidate.into(),
        last_log_index,
        last_log_term: term,
        pre_vote: false,
        transfer: false,
    })
}

#[test]
fn huge_leader_commit_does_not_stop_elections_even_after_restart() {
    let (mut c, _, term) = Cluster::elected();
    // A higher term, so every node takes it as its leader; a commit index nobody holds.
    for k in 0..3 {
        c.evil(k, append(term + 1, "evil", MAX_SAFE));
    }
    for r in &c.nodes {
        assert!(r.known_commit() <= r.log().last_index(), "{} keeps known commit {}", r.id(), r.known_commit());
        assert!(r.commit() <= r.log().last_index());
    }
    c.run(2000);
    c.commit_one("b");
    c.restart_all();
    c.commit_one("c");
}

#[test]
fn a_term_without_headroom_is_refused_and_nothing_changes() {
    let (mut c, _, term) = Cluster::elected();
    for body in [vote(MAX_SAFE, "evil", 1 << 40), append(MAX_SAFE - 5, "evil", 0), vote(MAX_SAFE - (1 << 19), "evil", 99)] {
        for r in &mut c.nodes {
            let before = r.term();
            let m = Message { from: "evil".into(), to: r.id().into(), token: Some(99), body: body.clone() };
            assert!(r.step(m).is_err(), "{} took a term without headroom as well-formed", r.id());
            let events = r.ready().events;
            assert!(events.iter().any(|e| matches!(e, skiff_core::Event::Rejected { .. })), "a warning is raised");
            assert_eq!(r.term(), before, "{} took the term", r.id());
        }
    }
    c.run(1000);
    c.commit_one("b");
    assert_eq!(c.nodes[c.leader().unwrap()].term(), term, "no election was needed");
    // What every node saved still loads.
    c.restart_all();
    c.commit_one("c");
}

#[test]
fn higher_term_votes_do_not_depose_a_healthy_leader() {
    let (mut c, leader, term) = Cluster::elected();
    // 5 times a second for 3 seconds, to every node, with a log that looks up to date.
    for round in 0..15 {
        for (k, id) in IDS.iter().enumerate() {
            c.to_evil.clear();
            c.evil(k, vote(term + 1 + round, "evil", 1 << 30));
            let answers: Vec<&Message> = c.to_evil.iter().collect();
            assert_eq!(answers.len(), 1, "one answer to each vote request");
            match &answers[0].body {
                Body::RequestVoteResponse(r) => {
                    assert!(!r.vote_granted, "{id} granted a vote to a stranger");
                    assert_eq!(r.term, term, "refused at the current term");
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
        c.run(200);
        assert_eq!(c.leader(), Some(leader), "round {round}: the leader was deposed");
        assert!(c.nodes.iter().all(|r| r.term() == term), "round {round}: a term moved");
    }
    c.commit_one("b");
}

#[test]
fn elections_still_happen_when_the_leader_fails() {
    let (mut c, old, _) = Cluster::elected();
    // The leader goes silent: drop everything to and from it.
    let old_id = IDS[old];
    for _ in 0..2000 {
        c.now += 1;
        let now = c.now;
        for (k, r) in c.nodes.iter_mut().enumerate() {
            if k != old {
                r.tick(now);
            }
        }
        c.flush();
        let batch: Vec<Message> = c.net.drain(..).filter(|m| m.to != old_id && m.from != old_id).collect();
        for m in batch {
            c.deliver(m);
        }
        if c.nodes.iter().enumerate().any(|(k, r)| k != old && r.is_leader()) {
            return;
        }
    }
    panic!("no new leader after the old one fell silent");
}

#[test]
fn a_second_leader_in_the_same_term_is_refused() {
    let (mut c, leader, term) = Cluster::elected();
    let leader_id = IDS[leader].to_string();
    for (k, id) in IDS.iter().enumerate() {
        for body in [
            append(term, "evil", 0),
            Body::InstallSnapshot(InstallSnapshot {
                term,
                leader_id: "evil".into(),
                last_included_index: 500,
                last_included_term: term,
                seq: 0,
                first: true,
                done: true,
                data: None,
                peers: None,
                transfer: 0,
            }),
        ] {
            c.to_evil.clear();
            c.evil(k, body);
            assert_eq!(c.to_evil.len(), 1, "{id} answered the second leader");
            let refused = match &c.to_evil[0].body {
                Body::AppendEntriesResponse(r) => !r.success,
                Body::InstallSnapshotResponse(r) => !r.success,
                other => panic!("unexpected answer {other:?}"),
            };
            assert!(refused, "{id} obeyed a second leader");
            assert!(c.nodes[k].pending_install().is_none(), "no install started");
            assert_eq!(c.nodes[k].term(), term);
            if k != leader {
                assert_eq!(c.nodes[k].leader(), Some(leader_id.as_str()), "still follows the real leader");
            } else {
                assert!(c.nodes[k].is_leader());
            }
        }
    }
    c.commit_one("b");
    assert_eq!(c.leader(), Some(leader));
}

#[test]
fn a_request_conflicting_with_committed_entries_is_answered() {
    let (mut c, leader, _) = Cluster::elected();
    let follower = (leader + 1) % 3;
    let term = c.nodes[follower].term() + 1;
    let committed = c.nodes[follower].commit();
    // Pretend to be the real leader at a new term, rewriting committed entry 1.
    let body = Body::AppendEntries(AppendEntries {
        term,
        leader_id: IDS[leader].into(),
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![skiff_core::Entry { term, index: 1, kind: EntryKind::Command(Json::from_value(&"x")), uuid: "u".into() }],
        leader_commit: 0,
        peers: None,
        read_ctx: None,
        transfer_to: None,
    });
    let from = IDS[leader].to_string();
    let mut answered = Vec::new();
    c.nodes[follower].step(Message { from: from.clone(), to: IDS[follower].into(), token: Some(7), body }).unwrap();
    while c.nodes[follower].has_ready() {
        answered.extend(c.nodes[follower].ready().all_messages().filter(|m| m.token == Some(7)));
    }
    assert_eq!(answered.len(), 1, "the refused request got its answer");
    assert!(matches!(&answered[0].body, Body::AppendEntriesResponse(r) if !r.success));
    assert_eq!(c.nodes[follower].commit(), committed);
    assert_ne!(c.nodes[follower].log().term(1), Some(term), "committed entry 1 kept");
}

#[test]
fn batches_stay_within_the_byte_budget() {
    let (mut c, k, _) = Cluster::elected();
    let budget = c.nodes[k].config().max_bytes_per_message;
    // Entries of a third of the budget each: never three in one message.
    let big = "x".repeat(budget / 3);
    for _ in 0..6 {
        c.nodes[k].propose(Json::from_value(&big)).unwrap();
    }
    let rd = c.nodes[k].ready();
    let mut seen = 0;
    for m in rd.messages.iter().chain(&rd.persisted_messages) {
        if let Body::AppendEntries(a) = &m.body {
            let size: usize = a.entries.iter().map(|e| e.kind.size_hint()).sum();
            assert!(size <= budget, "an AppendEntries carries {size} bytes of commands");
            seen += a.entries.len();
        }
    }
    assert!(seen > 0);
}

#[test]
fn a_standby_told_a_huge_commit_while_joining_settles_once_caught_up() {
    let (mut c, _, term) = Cluster::elected();
    let mut cfg = Config::new("n4");
    cfg.seed = 44;
    let fresh = restore("n4", "null", 0, true, &Json::empty_object()).expect("fresh state");
    c.nodes.push(Raft::new(cfg, fresh).expect("valid config"));
    // While it waits to be added, a stranger tells it about a commit index nobody holds.
    c.deliver(Message { from: "evil".into(), to: "n4".into(), token: Some(1), body: append(term + 1, "evil", MAX_SAFE) });
    assert_eq!(c.nodes[3].known_commit(), MAX_SAFE, "a joining node cannot tell a stranger from its leader");
    let add = EntryKind::AddPeer { id: "n4".into(), metadata: Json::empty_object() };
    let k = c.wait_leader(5000);
    c.nodes[k].propose_membership(add).expect("the leader takes the change");
    c.commit_one("b");
    c.run(1000);
    let n4 = &c.nodes[3];
    assert!(n4.members().contains("n4"), "n4 joined");
    assert!(n4.known_commit() <= n4.log().last_index(), "n4 still holds known commit {}", n4.known_commit());
}

#[test]
fn a_ready_says_what_to_save_and_which_messages_wait_for_it() {
    let (mut c, k, term) = Cluster::elected();
    let last = c.nodes[k].log().last_index();
    let index = c.nodes[k].propose(Json::from_value(&"b")).unwrap();
    assert_eq!(index, last + 1);
    let rd = c.nodes[k].ready();
    let save = rd.save.as_ref().expect("a new entry is saved");
    assert_eq!((save.truncate_from, save.entries.len()), (index, 1), "only the new entry is in the delta");
    assert_eq!(save.entries[0].index, index);
    assert_eq!(save.hard_state.term, term);
    assert!(!save.base_changed);
    assert_eq!(save.token.last, (index, term));
    // The leader's term is durable: its AppendEntries go while it saves (Raft thesis §10.2.1).
    assert!(rd.messages.iter().any(|m| matches!(m.body, Body::AppendEntries(_))));
    assert!(rd.persisted_messages.iter().all(|m| !matches!(m.body, Body::AppendEntries(_))));

    // A follower's acknowledgement promises the entries it saves: it waits for the save.
    let follower = (k + 1) % IDS.len();
    let f = &mut c.nodes[follower];
    let body = Body::AppendEntries(AppendEntries {
        term,
        leader_id: IDS[k].into(),
        prev_log_index: last,
        prev_log_term: term,
        entries: save.entries.clone(),
        leader_commit: 0,
        peers: None,
        read_ctx: None,
        transfer_to: None,
    });
    f.step(Message { from: IDS[k].into(), to: IDS[follower].into(), token: Some(3), body }).unwrap();
    let rd = f.ready();
    let fsave = rd.save.as_ref().expect("the follower saves the entry");
    assert_eq!(fsave.truncate_from, index);
    assert!(rd.messages.is_empty(), "nothing may go before the save: {:?}", rd.messages);
    assert!(rd.persisted_messages.iter().any(|m| m.token == Some(3)));

    // Through a whole election, a Ready that saves a new term sends nothing before the save:
    // no vote request or vote may go out for a term that is not yet on disk.
    let mut c = Cluster::new();
    let mut checked = 0;
    for now in 1..5000 {
        for r in &mut c.nodes {
            r.tick(now);
            while r.has_ready() {
                let rd = r.ready();
                if let Some(s) = &rd.save {
                    if s.hard_state.term > r.durable_term() {
                        checked += 1;
                        assert!(rd.messages.is_empty(), "sent before the new term is durable: {:?}", rd.messages);
                    }
                    r.advance(s.token);
                }
                c.net.extend(rd.messages);
                c.net.extend(rd.persisted_messages);
            }
        }
        let batch: Vec<Message> = c.net.drain(..).collect();
        for m in batch {
            if let Some(r) = c.nodes.iter_mut().find(|r| r.id() == m.to) {
                r.tick(now);
                let _ = r.step(m);
            }
        }
        if c.leader().is_some() && checked > 0 {
            return;
        }
    }
    panic!("no election ({checked} term changes checked)");
}
