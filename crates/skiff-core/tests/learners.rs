//! Learners (issue 14): members that receive the log but never count toward a quorum, never
//! campaign, and, when joined to become voters, are promoted through the log once caught up, by
//! whichever node leads.

#[path = "sim/tiny.rs"]
mod tiny;

use skiff_core::persisted::{restore, PersistedState};
use skiff_core::{Config, EntryKind, Json, Raft, Role, Suffrage, PROMOTE_WITHIN};
use tiny::Tiny;

/// A persisted state whose base membership is `members` (`(id, voter)`), nobody elected yet.
fn state(members: &[(&str, bool)]) -> String {
    let list: Vec<String> = members
        .iter()
        .map(|(id, voter)| {
            let flag = if *voter { "" } else { r#","voter":false"# };
            format!(r#"{{"id":"{id}","metadata":{{}}{flag}}}"#)
        })
        .collect();
    format!(
        r#"{{"currentTerm":0,"votedFor":null,"log":{{"meta":{{"lastIncludedIndex":0,"lastIncludedTerm":0,"members":[{}]}},"entries":[]}},"peers":[]}}"#,
        list.join(",")
    )
}

/// n1..n3 voters, elected (n1 times out first), and a fresh standby n4. No compaction: this
/// cluster has no snapshot transfer, so learners catch up from the log.
fn three_and_a_standby() -> Tiny {
    let s = state(&[("n1", true), ("n2", true), ("n3", true)]);
    let nodes = [("n1", s.as_str(), false), ("n2", &s, false), ("n3", &s, false), ("n4", "null", true)];
    let mut c = Tiny::with_config(&nodes, |cfg| cfg.retained_log_entries = 100_000);
    c.run(600);
    assert_eq!(c.leader().as_deref(), Some("n1"));
    c
}

fn commands(c: &mut Tiny, leader: &str, n: u64) -> u64 {
    let mut last = 0;
    for k in 0..n {
        last = c.node(leader).propose(Json::from_value(&k)).expect("the leader takes commands");
    }
    last
}

fn suffrage(c: &mut Tiny, on: &str, of: &str) -> Option<Suffrage> {
    c.node(on).members().member(of).map(|m| m.suffrage)
}

fn join(id: &str) -> EntryKind {
    EntryKind::AddLearner { id: id.into(), metadata: Json::empty_object(), promote: true }
}

#[test]
fn quorum_ignores_learners() {
    // Two voters and two learners: the learners can neither commit for the leader nor elect.
    let s = state(&[("n1", true), ("n2", true), ("n3", false), ("n4", false)]);
    let mut c = Tiny::new(&[("n1", &s, false), ("n2", &s, false), ("n3", &s, false), ("n4", &s, false)]);
    c.run(600);
    assert_eq!(c.leader().as_deref(), Some("n1"));
    assert_eq!(c.node("n3").role(), Role::Standby, "a learner shows as a non-voting member");
    // With the other voter cut off, both learners answering is not a majority.
    c.cut.insert("n2".into());
    let index = c.node("n1").propose(Json::from_value(&"x")).unwrap();
    c.run(100);
    assert!(c.node("n3").log().last_index() >= index, "the leader replicates to learners");
    assert!(c.node("n1").commit() < index, "learners counted toward the commit quorum");
    // With n2 back, it commits.
    c.cut.clear();
    c.run(200);
    assert!(c.node("n1").commit() >= index);
    assert!(c.node("n4").commit() >= index, "learners learn the commit index");
}

#[test]
fn learners_never_campaign_and_their_votes_do_not_count() {
    let s = state(&[("n1", true), ("n2", true), ("n3", false)]);
    let mut c = Tiny::new(&[("n1", &s, false), ("n2", &s, false), ("n3", &s, false)]);
    c.run(600);
    let term = c.node("n1").term();
    // The leader is gone: n2 cannot win with the learner's vote alone (1 of 2 voters) and n3
    // never stands.
    c.cut.insert("n1".into());
    c.run(3000);
    assert_eq!(c.node("n3").term(), term, "a learner campaigned");
    assert!(c.leader().is_none_or(|l| l == "n1"), "a leader was elected without a majority of voters");
    assert!(!c.node("n2").is_leader());
}

#[test]
fn a_joined_learner_is_promoted_once_caught_up() {
    let mut c = three_and_a_standby();
    c.cut.insert("n4".into());
    c.node("n1").propose_membership(join("n4")).unwrap().expect("a change");
    c.run(100);
    // Writes go on while it cannot take anything: it counts toward no quorum.
    let last = commands(&mut c, "n1", 3 * PROMOTE_WITHIN);
    // One entry per round trip in this cluster.
    c.run(1000);
    assert_eq!(c.node("n1").commit(), last, "writes stalled behind a learner");
    assert_eq!(suffrage(&mut c, "n1", "n4"), Some(Suffrage::Learner { promote: true }), "promoted before it caught up");
    assert!(!c.node("n1").is_committed_voter("n4"));
    // Back: it catches up, then the leader promotes it, and it votes.
    c.cut.clear();
    c.run(3000);
    assert_eq!(suffrage(&mut c, "n1", "n4"), Some(Suffrage::Voter));
    assert!(c.node("n1").is_committed_voter("n4") && c.node("n4").is_committed_voter("n4"));
    assert_eq!(c.node("n4").role(), Role::Follower);
    // The promotion is an `add peer` of the same member, appended after the catch-up.
    let promoted_at = c
        .node("n1")
        .log()
        .iter()
        .find(|e| matches!(&e.kind, EntryKind::AddPeer { id, .. } if id == "n4"))
        .map(|e| e.index)
        .expect("a promotion entry");
    assert!(promoted_at > last, "promoted at {promoted_at}, before the {last} entries it lacked");
    // As a voter it counts: with two of four cut off, nothing commits; with one, it does.
    c.cut.insert("n2".into());
    c.cut.insert("n3".into());
    let index = c.node("n1").propose(Json::from_value(&"y")).unwrap();
    c.run(100);
    assert!(c.node("n1").commit() < index, "2 of 4 voters committed");
    c.cut.remove("n3");
    c.run(200);
    assert!(c.node("n1").commit() >= index);
}

#[test]
fn a_permanent_learner_is_never_promoted() {
    let mut c = three_and_a_standby();
    let add = EntryKind::AddLearner { id: "n4".into(), metadata: Json::empty_object(), promote: false };
    c.node("n1").propose_membership(add).unwrap().expect("a change");
    commands(&mut c, "n1", 10);
    c.run(2000);
    assert_eq!(c.node("n4").log().last_index(), c.node("n1").log().last_index(), "the learner has the log");
    assert_eq!(suffrage(&mut c, "n1", "n4"), Some(Suffrage::Learner { promote: false }));
    // Joining it (as `join` does) asks for its promotion.
    c.node("n1").propose_membership(join("n4")).unwrap().expect("a change");
    c.run(1000);
    assert!(c.node("n1").is_committed_voter("n4"));
    // Joining a voter again changes nothing: it is never demoted that way.
    assert_eq!(c.node("n1").propose_membership(join("n4")), Ok(None));
}

#[test]
fn a_new_leader_continues_a_promotion() {
    let mut c = three_and_a_standby();
    c.cut.insert("n4".into());
    c.node("n1").propose_membership(join("n4")).unwrap().expect("a change");
    let last = commands(&mut c, "n1", 3 * PROMOTE_WITHIN);
    c.run(1000);
    assert_eq!(c.node("n2").commit(), last);
    // The leader goes away before n4 caught up; the intent to promote is in the membership.
    c.cut.insert("n1".into());
    c.cut.remove("n4");
    c.run(3000);
    let l = c.leader().filter(|l| l != "n1").expect("n2 or n3 leads");
    assert!(c.node(&l).is_committed_voter("n4"), "{l} did not promote n4");
    assert!(c.node("n4").is_committed_voter("n4"));
}

#[test]
fn skiff_algorithm_state_loads_as_voters_and_learners_round_trip() {
    // skiff-algorithm's format: `peers` without flags; every member votes.
    let original = r#"{"currentTerm":3,"votedFor":null,"log":{"meta":{"lastIncludedIndex":0,"lastIncludedTerm":0},
        "entries":[{"term":3,"index":1,"command":["add peer","n3",{}],"topologyChange":true,"uuid":"a"}]},
        "peers":[{"id":"n2","metadata":{}},{"id":"n3","metadata":{}}]}"#;
    let r = restore("n1", original, 0, false, &Json::empty_object()).unwrap();
    let raft = Raft::new(Config::new("n1"), r).unwrap();
    assert_eq!(raft.members().voters().cloned().collect::<Vec<_>>(), vec!["n1", "n2", "n3"]);
    assert_eq!(raft.members().quorum(), 2);

    // Ours with a learner: the flags are written for learners only, in `peers` and in the base
    // membership, and read back as they were.
    let ours = state(&[("n1", true), ("n2", true), ("n3", false)]);
    let mut raft = Raft::new(Config::new("n1"), restore("n1", &ours, 0, false, &Json::empty_object()).unwrap()).unwrap();
    raft.tick(10_000);
    let _ = raft.ready();
    let text = serde_json::to_string(&PersistedState(&raft)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["peers"], serde_json::json!([{"id":"n2","metadata":{}},{"id":"n3","metadata":{},"voter":false}]));
    assert_eq!(v["log"]["meta"]["members"][2], serde_json::json!({"id":"n3","metadata":{},"voter":false}));
    let again = Raft::new(Config::new("n1"), restore("n1", &text, 0, false, &Json::empty_object()).unwrap()).unwrap();
    assert_eq!(again.members(), raft.members());
    assert!(!again.members().is_voter("n3"));
}
