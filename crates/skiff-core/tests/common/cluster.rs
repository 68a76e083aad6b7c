//! A scripted three-node cluster for tests: instant disks, a one-millisecond network that can
//! drop chosen links, a rogue peer "evil" whose answers are kept, and the reads each node
//! answered. Used by `rules.rs`, `reads.rs` and `transfer.rs`.

#![allow(dead_code)]

use skiff_core::persisted::{restore, PersistedState};
use skiff_core::{Body, Config, Json, Message, Raft, ReadFailure, ReadState};
use std::collections::{BTreeSet, VecDeque};

pub const IDS: [&str; 3] = ["n1", "n2", "n3"];

pub struct Cluster {
    pub nodes: Vec<Raft>,
    pub now: u64,
    pub net: VecDeque<Message>,
    /// Answers addressed to the rogue peer "evil".
    pub to_evil: Vec<Message>,
    /// Links (from, to) whose messages are lost.
    pub cut: BTreeSet<(String, String)>,
    /// Reads each node answered, as (node, read).
    pub reads: Vec<(usize, ReadState)>,
    pub read_failures: Vec<(usize, ReadFailure)>,
}

/// The persisted state of a cluster of `IDS` that has not elected anyone yet.
pub fn members_state() -> String {
    let peers: Vec<String> = IDS.iter().map(|id| format!(r#"{{"id":"{id}","metadata":{{}}}}"#)).collect();
    format!(r#"{{"currentTerm":0,"votedFor":null,"log":{{"meta":{{"lastIncludedIndex":0,"lastIncludedTerm":0,"members":[{}]}},"entries":[]}},"peers":[]}}"#, peers.join(","))
}

pub fn node(k: usize, state: &str) -> Raft {
    let id = IDS[k];
    let mut cfg = Config::new(id);
    cfg.seed = 11 + k as u64;
    let r = restore(id, state, 0, false, &Json::empty_object()).expect("state loads");
    Raft::new(cfg, r).expect("valid config")
}

impl Cluster {
    pub fn new() -> Cluster {
        let state = members_state();
        Cluster {
            nodes: (0..3).map(|k| node(k, &state)).collect(),
            now: 0,
            net: VecDeque::new(),
            to_evil: Vec::new(),
            cut: BTreeSet::new(),
            reads: Vec::new(),
            read_failures: Vec::new(),
        }
    }

    /// Restarts every node from what it persisted (instant disk: the last `Ready` is durable).
    pub fn restart_all(&mut self) {
        let states: Vec<String> =
            self.nodes.iter().map(|r| serde_json::to_string(&PersistedState(r)).expect("serializes")).collect();
        self.nodes = states.iter().enumerate().map(|(k, s)| node(k, s)).collect();
        self.net.clear();
        self.now = 0;
    }

    pub fn flush(&mut self) {
        for (k, r) in self.nodes.iter_mut().enumerate() {
            while r.has_ready() {
                let mut rd = r.ready();
                self.reads.extend(rd.reads.drain(..).map(|x| (k, x)));
                self.read_failures.extend(rd.read_failures.drain(..).map(|x| (k, x)));
                // Instant disk: the save is durable at once, so every message may go.
                let token = rd.save.as_ref().map(|s| s.token);
                let committed = rd.committed.clone();
                for m in rd.all_messages() {
                    if m.to == "evil" {
                        self.to_evil.push(m);
                    } else if self.cut.contains(&(m.from.clone(), m.to.clone())) {
                        continue;
                    } else {
                        self.net.push_back(m);
                    }
                }
                if let Some(token) = token {
                    r.advance(token);
                }
                if let Some(last) = committed.last() {
                    r.applied_to(last.index);
                }
            }
        }
    }

    pub fn deliver(&mut self, m: Message) {
        let now = self.now;
        if let Some(r) = self.nodes.iter_mut().find(|r| r.id() == m.to) {
            r.tick(now);
            let _ = r.step(m);
        }
        self.flush();
    }

    /// Advances time by `ms`, a millisecond at a time; a message takes one millisecond.
    pub fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            let now = self.now;
            for r in &mut self.nodes {
                r.tick(now);
            }
            self.flush();
            let batch: Vec<Message> = self.net.drain(..).collect();
            for m in batch {
                self.deliver(m);
            }
        }
    }

    pub fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|r| r.is_leader())
    }

    pub fn wait_leader(&mut self, max_ms: u64) -> usize {
        for _ in 0..max_ms {
            if let Some(k) = self.leader() {
                return k;
            }
            self.run(1);
        }
        panic!("no leader within {max_ms} ms")
    }

    /// Proposes a command at the leader and runs until every node applied it.
    pub fn commit_one(&mut self, what: &str) {
        let k = self.wait_leader(5000);
        let index = self.nodes[k].propose(Json::from_value(&what)).expect("leader takes it");
        for _ in 0..3000 {
            if self.nodes.iter().all(|r| r.applied() >= index) {
                return;
            }
            self.run(1);
        }
        panic!("{what} (index {index}) was not applied everywhere");
    }

    /// A cluster that committed "a": returns it, its leader and the term.
    pub fn elected() -> (Cluster, usize, u64) {
        let mut c = Cluster::new();
        c.commit_one("a");
        let leader = c.leader().expect("a leader committed");
        let term = c.nodes[leader].term();
        (c, leader, term)
    }

    /// The rogue peer sends `body` to node `k`, as a request with a reply token.
    pub fn evil(&mut self, k: usize, body: Body) {
        let to = IDS[k].to_string();
        self.deliver(Message { from: "evil".into(), to, token: Some(99), body });
    }

    /// Cuts node `k` off from the others, both ways.
    pub fn isolate(&mut self, k: usize) {
        for other in IDS {
            if other != IDS[k] {
                self.cut.insert((IDS[k].to_string(), other.to_string()));
                self.cut.insert((other.to_string(), IDS[k].to_string()));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }
}
