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
}

impl Harness {
    fn new(state: &str) -> Harness {
        let opts: NodeOptions = serde_json::from_str(r#"{"id":"a"}"#).unwrap();
        let time = Arc::new(AtomicU64::new(0));
        let clock = Box::new(TestClock(time.clone()));
        let d = Driver::with_clock(opts, 7, NoHost, Arc::default(), Arc::new(Notify::new()), clock);
        let mut h = Harness { d, time, saves: Vec::new(), pending: Vec::new() };
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
            self.pending.extend(ops);
        }
    }

    /// Completes every IO op (saves, applies) until none is left.
    fn settle(&mut self) {
        while !self.pending.is_empty() {
            for op in std::mem::take(&mut self.pending) {
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
