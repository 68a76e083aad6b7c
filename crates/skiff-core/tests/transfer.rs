//! Leadership transfer (issue 14): TimeoutNow, the pause of proposals, the abort, and the
//! `transfer` vote flag that only the leader's named target may use.

use skiff_core::message::RequestVote;
use skiff_core::{Body, Json, Message, ProposeError, TransferError};

#[path = "common/cluster.rs"]
mod cluster;
use cluster::{Cluster, IDS};

/// Runs until node `k` leads; returns the milliseconds it took, or `None` within `max_ms`.
fn until_leads(c: &mut Cluster, k: usize, max_ms: u64) -> Option<u64> {
    for ms in 0..max_ms {
        if c.nodes[k].is_leader() {
            return Some(ms);
        }
        c.run(1);
    }
    None
}

#[test]
fn a_named_voter_takes_over_well_within_an_election_timeout() {
    let (mut c, l, term) = Cluster::elected();
    let t = (l + 2) % 3;
    assert_eq!(c.nodes[l].transfer_leader(Some(IDS[t])), Ok(IDS[t].to_string()));
    c.flush();
    let ms = until_leads(&mut c, t, 300).expect("the target leads");
    assert!(ms < 50, "took {ms} ms; minElectionTimeout is 150");
    assert!(!c.nodes[l].is_leader());
    assert_eq!(c.nodes[t].term(), term + 1, "one election");
    c.commit_one("after");
}

#[test]
fn without_a_target_the_most_up_to_date_voter_takes_over() {
    let (mut c, l, _) = Cluster::elected();
    let behind = (l + 1) % 3;
    let best = (l + 2) % 3;
    c.isolate(behind);
    let index = c.nodes[l].propose(Json::from_value(&"b")).expect("leader");
    c.run(10);
    assert!(c.nodes[best].log().last_index() >= index && c.nodes[behind].log().last_index() < index);
    c.heal();
    c.cut.insert((IDS[l].to_string(), IDS[behind].to_string()));
    c.run(5);
    assert_eq!(c.nodes[l].transfer_leader(None), Ok(IDS[best].to_string()));
    c.flush();
    assert!(until_leads(&mut c, best, 300).is_some());
}

#[test]
fn proposals_pause_during_the_transfer_and_resume_when_it_is_abandoned() {
    let (mut c, l, term) = Cluster::elected();
    let t = (l + 1) % 3;
    // The target hears the leader but its answers (and votes) are lost: it can never take over.
    c.cut.insert((IDS[t].to_string(), IDS[l].to_string()));
    c.cut.insert((IDS[t].to_string(), IDS[(l + 2) % 3].to_string()));
    c.nodes[l].transfer_leader(Some(IDS[t])).expect("the target answered recently");
    assert_eq!(
        c.nodes[l].propose(Json::from_value(&"x")),
        Err(ProposeError::Transferring { target: IDS[t].to_string() })
    );
    c.run(310);
    assert!(c.nodes[l].is_leader(), "the old leader resumes");
    assert_eq!(c.nodes[l].transferring(), None);
    assert_eq!(c.nodes[l].term(), term);
    assert!(c.nodes[l].propose(Json::from_value(&"y")).is_ok());
}

#[test]
fn a_leader_refuses_impossible_targets() {
    let (mut c, l, _) = Cluster::elected();
    assert!(matches!(c.nodes[l].transfer_leader(Some(IDS[l])), Err(TransferError::NoTarget(_))));
    assert!(matches!(c.nodes[l].transfer_leader(Some("n9")), Err(TransferError::NoTarget(_))));
    let f = (l + 1) % 3;
    assert!(matches!(c.nodes[f].transfer_leader(None), Err(TransferError::NotLeader { .. })));
    c.run(1);
}

/// A member the leader did not name sends vote requests with the `transfer` flag: the voters,
/// in their lease, refuse them without changing term, and the leader stays.
#[test]
fn a_forged_transfer_flag_deposes_no_one() {
    let (mut c, l, term) = Cluster::elected();
    let named = (l + 1) % 3;
    let forger = (l + 2) % 3;
    c.run(20);
    // Once with no transfer under way, once while the leader hands over to someone else.
    for round in 0..2 {
        if round == 1 {
            // The named voter never hears of it, so it does not campaign during the test.
            c.cut.insert((IDS[l].to_string(), IDS[named].to_string()));
            c.nodes[l].transfer_leader(Some(IDS[named])).expect("named");
            c.run(3);
        }
        for to in [l, named] {
            let rv = RequestVote {
                term: term + 1,
                candidate_id: IDS[forger].into(),
                last_log_index: c.nodes[forger].log().last_index(),
                last_log_term: c.nodes[forger].log().last_term(),
                pre_vote: false,
                transfer: true,
            };
            let m = Message { from: IDS[forger].into(), to: IDS[to].into(), token: None, body: Body::RequestVote(rv) };
            c.nodes[to].step(m).expect("well formed");
            assert_eq!(c.nodes[to].term(), term, "round {round}: {} moved to the forger's term", IDS[to]);
        }
        assert!(c.nodes[l].is_leader());
    }
}

/// A leader that removes itself names a successor and sends it TimeoutNow as the removal
/// commits: the others do not wait out an election timeout.
#[test]
fn a_leader_that_removes_itself_hands_over_at_once() {
    let (mut c, l, _) = Cluster::elected();
    c.run(20);
    c.nodes[l].propose_membership(skiff_core::EntryKind::RemovePeer { id: IDS[l].into() }).expect("leader");
    c.flush();
    let mut ms = 0;
    while c.nodes.iter().enumerate().all(|(k, r)| k == l || !r.is_leader()) {
        assert!(ms < 300, "no new leader");
        c.run(1);
        ms += 1;
    }
    assert!(!c.nodes[l].is_leader());
    assert!(ms < 50, "took {ms} ms; minElectionTimeout is 150");
}
