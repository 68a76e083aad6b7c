//! The Driver as a host sees it: ops out, inputs in, on a clock the test moves.

use super::*;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

struct NoHost;
impl Host for NoHost {
    fn wake(&self) {}
}

struct TestClock(Arc<AtomicU64>);
impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A one-node driver and the saves it asked for.
struct Harness {
    d: Driver<NoHost>,
    time: Arc<AtomicU64>,
    saves: Vec<Value>,
    pending: Vec<Value>,
    /// Every op the driver produced, in order.
    ops: Vec<Value>,
    /// Snapshot ops a test holds back, to complete them later.
    held: Vec<Value>,
}

impl Harness {
    fn new(state: &str) -> Harness {
        Harness::with_options(r#"{"id":"a"}"#, state)
    }

    /// A driver with options `opts` (JSON) that loads `state`.
    fn with_options(opts: &str, state: &str) -> Harness {
        let opts: NodeOptions = serde_json::from_str(opts).unwrap();
        let time = Arc::new(AtomicU64::new(0));
        let clock = Box::new(TestClock(time.clone()));
        let d = Driver::with_clock(opts, 7, NoHost, Arc::default(), Arc::new(Notify::new()), clock);
        let mut h = Harness { d, time, saves: Vec::new(), pending: Vec::new(), ops: Vec::new(), held: Vec::new() };
        let batch = h.d.start();
        h.take(batch);
        for op in std::mem::take(&mut h.pending) {
            let result = if op["op"] == "loadMeta" { state.to_string() } else { "0".to_string() };
            let batch = h.d.input(Input::Complete { io: io(&op), error: None, result: Some(result) }, None);
            h.take(batch);
        }
        h
    }

    fn take(&mut self, batch: Option<String>) {
        if let Some(text) = batch {
            let ops: Vec<Value> = serde_json::from_str(&text).unwrap();
            self.ops.extend(ops.iter().cloned());
            self.pending.extend(ops);
        }
    }

    /// Completes every IO op (saves, applies) until none is left.
    fn settle(&mut self) {
        self.settle_but(|_| false);
    }

    /// Completes every IO op but those `hold` picks (returned, not completed) until none is left.
    fn settle_but(&mut self, hold: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut held = Vec::new();
        while !self.pending.is_empty() {
            for op in std::mem::take(&mut self.pending) {
                if hold(&op) {
                    held.push(op);
                    continue;
                }
                let result = match op["op"].as_str() {
                    Some("saveMeta") => {
                        self.saves.push(op.clone());
                        None
                    }
                    Some("apply") => op["entries"].as_array().unwrap().last().map(|e| e["index"].to_string()),
                    _ => continue,
                };
                let batch = self.d.input(Input::Complete { io: io(&op), error: None, result }, None);
                self.take(batch);
            }
        }
        held
    }

    /// Proposes `command` (JSON text) as request `req` and completes every IO but the applies;
    /// returns those, and the apply op and item that carry the command.
    fn propose_unapplied(&mut self, req: u32, command: &str, timeout_ms: u64) -> (Vec<Value>, Value, Value) {
        let batch = self.d.input(Input::Propose { req, command: command.into(), timeout_ms, wait_for: None }, None);
        self.take(batch);
        let held = self.settle_but(|op| op["op"] == "apply");
        let wanted: Value = serde_json::from_str(command).unwrap();
        let (apply, item) = held
            .iter()
            .find_map(|op| op["entries"].as_array().unwrap().iter().find(|e| e["command"] == wanted).map(|e| (op.clone(), e.clone())))
            .expect("the command is handed to the state machine");
        (held, apply, item)
    }

    /// The `done` ops that answered `req`.
    fn dones(&self, req: u32) -> Vec<&Value> {
        self.ops.iter().filter(|op| op["op"] == "done" && op["req"] == req).collect()
    }

    fn advance(&mut self, ms: u64) {
        self.time.fetch_add(ms, Ordering::SeqCst);
        self.d.timer_round();
        let batch = self.d.drain();
        self.take(batch);
        self.settle();
    }
}

fn io(op: &Value) -> u32 {
    op["io"].as_u64().unwrap() as u32
}

fn indexes(save: &Value) -> Vec<u64> {
    save["state"]["log"]["entries"].as_array().unwrap().iter().map(|e| e["index"].as_u64().unwrap()).collect()
}

#[test]
fn each_save_carries_the_entries_new_since_the_previous_one() {
    let mut h = Harness::new("null");
    h.advance(10_000);
    assert!(h.d.raft.as_ref().unwrap().is_leader(), "a bootstrapped node elects itself");
    let first = h.saves.first().expect("saved").clone();
    assert_eq!(first["from"], 1, "the wrapper holds no entries yet: the first save has them all");
    let last = h.d.raft.as_ref().unwrap().log().last_index();
    h.saves.clear();
    let batch = h.d.input(Input::Propose { req: 1, command: "\"x\"".into(), timeout_ms: 0, wait_for: None }, None);
    h.take(batch);
    h.settle();
    let save = h.saves.first().expect("the command is saved");
    assert_eq!(save["from"], last + 1);
    assert_eq!(indexes(save), vec![last + 1], "only the new entry travels");
    assert_eq!(save["state"]["currentTerm"], h.d.raft.as_ref().unwrap().term());
}

#[test]
fn a_restarted_node_writes_its_whole_log_first() {
    let state = r#"{"currentTerm":2,"votedFor":"a","log":{"meta":{"lastIncludedIndex":3,"lastIncludedTerm":1,
        "members":[{"id":"a","metadata":{}}]},"entries":[{"term":2,"index":4,"command":1,"uuid":"u4"},
        {"term":2,"index":5,"command":2,"uuid":"u5"}]},"peers":[]}"#;
    let mut h = Harness::new(state);
    h.advance(10_000);
    let first = h.saves.first().expect("the new term is saved");
    assert_eq!(first["from"], 4, "from the log's first index");
    assert_eq!(&indexes(first)[..2], &[4, 5]);
}

/// A follower of `L` in term 1 with an empty log.
const FOLLOWER: &str = r#"{"currentTerm":1,"votedFor":null,"log":{"meta":{"lastIncludedIndex":0,"lastIncludedTerm":0,
    "members":[{"id":"L","metadata":{}},{"id":"a","metadata":{}}]},"entries":[]},"peers":[{"id":"L","metadata":{}}]}"#;

/// What the follower did with one chunk: its answer, and the snapshot ops it issued.
struct Handled {
    reply: Value,
    resets: usize,
    writes: Vec<Value>,
    /// For each reset: the install mark (`pendingSnapshot.lastIncludedIndex`) of the newest
    /// save made durable before it, if that save recorded one.
    marks_at_reset: Vec<Option<u64>>,
}

impl Harness {
    /// Hands the follower chunk `seq` of the transfer (`transfer`, snapshot at 10 of `term`) and
    /// completes every save, reset and write it asks for.
    fn chunk(&mut self, reply: u64, transfer: u64, term: u64, seq: u64, done: bool) -> Handled {
        self.chunk_but(reply, transfer, term, seq, done, |_| false).0
    }

    /// As `chunk`, but the snapshot ops `hold` picks are returned, not completed.
    fn chunk_but(&mut self, reply: u64, transfer: u64, term: u64, seq: u64, done: bool, hold: impl Fn(&Value) -> bool) -> (Handled, Vec<Value>) {
        let args = serde_json::json!({
            "term": 2, "leaderId": "L", "lastIncludedIndex": 10, "lastIncludedTerm": term, "seq": seq,
            "first": seq == 0, "done": done, "data": [[transfer, seq]], "transfer": transfer,
            "peers": [{"id": "L", "metadata": {}}, {"id": "a", "metadata": {}}],
        });
        let input = Input::Receive { reply, kind: "InstallSnapshot".into(), args: args.to_string(), peer: Some("L".into()) };
        let batch = self.d.input(input, None);
        self.take(batch);
        let handled = self.finish_snapshot_ops(reply, hold);
        (handled, std::mem::take(&mut self.held))
    }

    /// Completes every save, reset and write under way but those `hold` picks (kept in `held`),
    /// and what they lead to; returns what was done, with the answer to `reply`.
    fn finish_snapshot_ops(&mut self, reply: u64, hold: impl Fn(&Value) -> bool) -> Handled {
        let mut handled = Handled { reply: Value::Null, resets: 0, writes: vec![], marks_at_reset: vec![] };
        let mut durable_mark = None;
        while !self.pending.is_empty() {
            for op in std::mem::take(&mut self.pending) {
                let result = match op["op"].as_str() {
                    Some("reply") if op["id"] == reply => {
                        handled.reply = op["result"].clone();
                        continue;
                    }
                    Some("snapshotReset" | "snapshotWrite") if hold(&op) => {
                        self.held.push(op);
                        continue;
                    }
                    Some("saveMeta") => {
                        // the ops that wait for the save run once it is durable
                        self.pending.extend(op["after"].as_array().cloned().unwrap_or_default());
                        durable_mark = op["state"]["log"]["meta"]["pendingSnapshot"]["lastIncludedIndex"].as_u64();
                        None
                    }
                    Some("snapshotReset") => {
                        handled.resets += 1;
                        handled.marks_at_reset.push(durable_mark);
                        None
                    }
                    Some("snapshotWrite") => {
                        handled.writes.push(op.clone());
                        None
                    }
                    _ => continue,
                };
                let batch = self.d.input(Input::Complete { io: io(&op), error: None, result }, None);
                self.take(batch);
            }
        }
        handled
    }

    /// Completes held op `op` (with `error`, if any), then what follows as `finish_snapshot_ops`.
    fn complete_held(&mut self, op: &Value, error: Option<&str>) -> Handled {
        // `u64::MAX`: no reply is waited for
        let error = error.map(|m| PluginError { message: Some(m.into()), code: Some("EIO".into()) });
        let batch = self.d.input(Input::Complete { io: io(op), error, result: None }, None);
        self.take(batch);
        self.finish_snapshot_ops(u64::MAX, |_| false)
    }
}

#[test]
fn a_follower_resumes_an_install_only_with_chunks_of_the_transfer_it_began() {
    let mut h = Harness::new(FOLLOWER);
    let c0 = h.chunk(1, 7, 2, 0, false);
    assert_eq!((c0.reply["success"].as_bool(), c0.reply["seq"].as_u64()), (Some(true), Some(0)), "{:?}", c0.reply);
    assert_eq!((c0.resets, c0.writes.len()), (1, 1));
    let sid = c0.writes[0]["sid"].clone();
    let c1 = h.chunk(2, 7, 2, 1, false);
    assert_eq!(c1.reply["success"], true);
    assert_eq!(c1.writes.len(), 1);
    // the leader lost its connection and resends the chunk it had in flight: already written
    let again = h.chunk(3, 7, 2, 1, false);
    assert_eq!((again.reply["success"].as_bool(), again.writes.len()), (Some(true), 0));
    // chunks that claim the next position but belong to another read of the snapshot, or to
    // another snapshot, are refused and say nothing of this install; nothing is written
    for (transfer, term) in [(8, 2), (7, 1)] {
        let other = h.chunk(4, transfer, term, 2, true);
        assert_eq!(other.reply["success"], false, "{:?}", other.reply);
        assert_eq!(other.reply.get("nextSeq"), None);
        assert_eq!((other.resets, other.writes.len()), (0, 0));
    }
    // a gap is refused with where the install stands
    let gap = h.chunk(5, 7, 2, 3, true);
    assert_eq!((gap.reply["success"].as_bool(), gap.reply["nextSeq"].as_u64()), (Some(false), Some(2)));
    // the transfer goes on where it stopped, into the same stream, and completes
    let last = h.chunk(6, 7, 2, 2, true);
    assert_eq!(last.reply["installedIndex"], 10, "{:?}", last.reply);
    assert_eq!(last.writes.len(), 1);
    assert_eq!(last.writes[0]["sid"], sid);
    assert_eq!(last.writes[0]["end"], true);
    assert_eq!(last.writes[0]["chunks"], serde_json::json!([[7, 2]]));
}

/// An install abandoned while its `removeAllState` was under way (a newer transfer began) must
/// not have that call's late completion taken for the newer install's: neither its success (the
/// newer install would write before its own reset) nor its failure (it would abort the newer one).
/// The same holds for a chunk write of the abandoned install.
#[test]
fn a_late_completion_of_an_abandoned_install_does_not_complete_the_next_one() {
    let is_reset = |op: &Value| op["op"] == "snapshotReset";
    for error in [Some("disk gone"), None] {
        let mut h = Harness::new(FOLLOWER);
        let (old, held) = h.chunk_but(1, 7, 2, 0, false, is_reset);
        assert_eq!((old.resets, old.writes.len(), held.len()), (0, 0, 1), "the first install waits for its reset");
        let old_reset = held[0].clone();
        // a newer transfer begins; its own reset is held too
        let (new, held) = h.chunk_but(2, 8, 2, 0, false, is_reset);
        assert_eq!((new.writes.len(), held.len()), (0, 1));
        let new_reset = held[0].clone();
        // the abandoned install's reset calls back: the newer install neither fails nor writes
        let late = h.complete_held(&old_reset, error);
        assert_eq!(late.writes.len(), 0, "{error:?}");
        assert!(h.d.install.is_active(), "the newer install goes on ({error:?})");
        // its own reset completes: its first chunk is written, and the transfer goes on
        let own = h.complete_held(&new_reset, None);
        assert_eq!(own.writes.len(), 1);
        let c1 = h.chunk(3, 8, 2, 1, false);
        assert_eq!(c1.reply["success"], true, "{:?}", c1.reply);
    }
    // a chunk write of an abandoned install: a newer transfer begins while chunk 1 of the older
    // is being written; that write's late completion does not count as the newer one's
    let is_write = |op: &Value| op["op"] == "snapshotWrite";
    let mut h = Harness::new(FOLLOWER);
    h.chunk(1, 7, 2, 0, false);
    let (_, held) = h.chunk_but(2, 7, 2, 1, false, is_write);
    let old_write = held[0].clone();
    let newer = h.chunk(3, 8, 2, 0, false);
    assert_eq!(newer.writes.len(), 1);
    let (_, held) = h.chunk_but(4, 8, 2, 1, true, is_write);
    let last_write = held[0].clone();
    h.complete_held(&old_write, None);
    assert!(h.d.install.is_active(), "the newer install is not finished by the older one's write");
    assert!(!h.ops.iter().any(|op| op["op"] == "reply" && op["id"] == 4), "its last chunk is not answered before it is written");
    let batch = h.d.input(Input::Complete { io: io(&last_write), error: None, result: None }, None);
    h.take(batch);
    let done = h.finish_snapshot_ops(4, |_| false);
    assert_eq!(done.reply["installedIndex"], 10, "{:?}", done.reply);
}

/// The state machine is cleared for an install only once a save that records the install mark
/// is durable. A first chunk from a leader of a newer term arrives in a round whose save (the
/// new term) was built before the install began; that save must not count as the mark, or a
/// crash after the install leaves a state machine at the snapshot over a log that never heard
/// of it (simulation seeds snapshots 3360 and 7361: a restart with commit past the log's end).
#[test]
fn a_follower_clears_its_state_machine_only_after_the_install_mark_is_durable() {
    let mut h = Harness::new(FOLLOWER);
    assert_eq!(h.d.raft.as_ref().unwrap().term(), 1, "the chunk's term 2 is new to this follower");
    let c0 = h.chunk(1, 7, 2, 0, true);
    assert_eq!(c0.marks_at_reset, vec![Some(10)], "the reset waited for a save recording the mark");
    assert_eq!(c0.reply["installedIndex"], 10, "{:?}", c0.reply);
}

/// The engine alone completes a command: its apply item is marked `want` (the wrapper keeps the
/// result) and one `done` names that index once it is applied.
#[test]
fn a_command_is_answered_by_one_done_naming_its_applied_index() {
    let mut h = Harness::new("null");
    h.advance(10_000);
    let (_, apply, item) = h.propose_unapplied(1, "\"x\"", 0);
    assert_eq!(item["want"], true, "the wrapper keeps its result");
    assert!(item.get("req").is_none(), "the wrapper answers nothing by itself");
    assert!(h.dones(1).is_empty(), "not answered before it is applied");
    let index = item["index"].as_u64().unwrap();
    let batch = h.d.input(Input::ApplyProgress { io: io(&apply), index }, None);
    h.take(batch);
    let dones = h.dones(1);
    assert_eq!(dones.len(), 1);
    assert_eq!((dones[0]["error"].clone(), dones[0]["index"].as_u64()), (Value::Null, Some(index)));
    h.settle();
    assert_eq!(h.dones(1).len(), 1, "and answered once");
}

/// A command that times out while its entry is being applied names the index in its failure, so
/// the wrapper drops a result kept for it; the apply that finishes later answers nothing.
#[test]
fn a_command_that_times_out_before_its_apply_names_the_index_once() {
    let mut h = Harness::new("null");
    h.advance(10_000);
    let (held, _, item) = h.propose_unapplied(2, "\"y\"", 50);
    let index = item["index"].as_u64().unwrap();
    h.time.fetch_add(100, Ordering::SeqCst);
    h.d.timer_round();
    let batch = h.d.drain();
    h.take(batch);
    let dones = h.dones(2);
    assert_eq!(dones.len(), 1);
    assert_eq!(dones[0]["error"]["code"], code::ETIMEDOUT);
    assert_eq!(dones[0]["index"].as_u64(), Some(index));
    h.pending.extend(held);
    h.settle();
    assert_eq!(h.dones(2).len(), 1, "the late apply answers nothing more");
}

/// An empty AppendEntries from `leader` in `term`.
fn heartbeat(term: u64, leader: &str) -> String {
    serde_json::json!({"term": term, "leaderId": leader, "prevLogIndex": 0, "prevLogTerm": 0, "entries": [], "leaderCommit": 0})
        .to_string()
}

/// The connection a request opens is the driver's own state, not something that waits for a
/// save: when the request waits for a save (it was made in a round that changed the term) and
/// that save fails, the request is lost but the connection must still be opened, or every later
/// request to that peer finds none. Over a pipelining transport nothing else reopens it
/// (simulation seed big 169: a standby's read forwarded to a new leader, not yet a member it
/// knew, in the round that saved the leader's term; the save failed, and the standby never
/// reached that leader again).
#[test]
fn a_connection_opened_for_requests_that_wait_for_a_failed_save_is_still_opened() {
    let mut h = Harness::with_options(r#"{"id":"a","standby":true,"pipelining":true}"#, "null");
    h.pending.clear();
    let receive = |h: &mut Harness, reply: u64, term: u64, leader: &str| {
        let input = Input::Receive { reply, kind: "AppendEntries".into(), args: heartbeat(term, leader), peer: Some(leader.into()) };
        let batch = h.d.input(input, None);
        h.take(batch);
    };
    receive(&mut h, 1, 1, "L");
    h.settle();
    // one read goes to L; the next waits for it, and goes to M when M leads in term 2
    for req in [1, 2] {
        let batch = h.d.input(Input::Read { req, lease: false, timeout_ms: 0 }, None);
        h.take(batch);
    }
    receive(&mut h, 2, 2, "M");
    let save = h.pending.iter().find(|op| op["op"] == "saveMeta").expect("term 2 is saved").clone();
    let to_m = |op: &Value, kind: &str| op["op"] == kind && op["peer"] == "M";
    assert!(save["after"].as_array().unwrap().iter().any(|op| to_m(op, "send")), "the read to M waits for the save");
    // What runs from here: every op as it comes, a save's `after` once that save is durable;
    // the first save fails (its `after` never runs), later ones succeed; sends get no answer.
    let mut ran: Vec<Value> = h.ops.iter().filter(|op| op["op"] != "saveMeta").cloned().collect();
    let mut failed = false;
    for round in 0..40 {
        if round == 20 {
            let batch = h.d.input(Input::Read { req: 3, lease: false, timeout_ms: 0 }, None);
            h.take(batch);
        }
        while !h.pending.is_empty() {
            for op in std::mem::take(&mut h.pending) {
                if op["op"] != "saveMeta" {
                    ran.push(op);
                    continue;
                }
                let error = (!failed).then(|| PluginError { message: Some("disk full".into()), code: Some("EIO".into()) });
                if error.is_none() {
                    ran.extend(op["after"].as_array().cloned().unwrap_or_default());
                }
                failed = true;
                let batch = h.d.input(Input::Complete { io: io(&op), error, result: None }, None);
                h.take(batch);
            }
        }
        h.time.fetch_add(50, Ordering::SeqCst);
        h.d.timer_round();
        let batch = h.d.drain();
        h.take(batch);
    }
    let first_send = ran.iter().position(|op| to_m(op, "send")).expect("a request to M went after the failed save");
    assert!(ran[..first_send].iter().any(|op| to_m(op, "connect")), "the connection to M was opened before it");
}
