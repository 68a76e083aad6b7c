//! A lock-step cluster on a perfect network with instant disks, for minimal reproductions and
//! scripted scenarios (shared by `regressions.rs` and `learners.rs`, each of which uses part of it).
#![allow(dead_code)]

use skiff_core::persisted::restore;
use skiff_core::{Config, Json, Message, Raft};
use std::collections::{BTreeSet, VecDeque};

pub struct Tiny {
    pub nodes: Vec<Raft>,
    pub now: u64,
    pub net: VecDeque<Message>,
    /// Nodes whose messages (both ways) are dropped.
    pub cut: BTreeSet<String>,
    /// Links (from, to) whose messages are dropped.
    pub blocked: BTreeSet<(String, String)>,
}

/// Node `k` (0-based) times out after 150 + 100 k .. 200 + 100 k ms: the first one listed
/// campaigns first.
fn make(k: usize, id: &str, state: &str, standby: bool, tweak: &dyn Fn(&mut Config)) -> Raft {
    let mut cfg = Config::new(id);
    cfg.seed = 7 + k as u64;
    cfg.min_election_timeout = 150 + 100 * (k as u64 % 10);
    cfg.max_election_timeout = cfg.min_election_timeout + 50;
    cfg.max_entries_per_message = 1;
    cfg.max_inflight = 1;
    tweak(&mut cfg);
    let r = restore(id, state, 0, standby, &Json::empty_object()).unwrap();
    Raft::new(cfg, r).unwrap()
}

impl Tiny {
    pub fn new(states: &[(&str, &str, bool)]) -> Tiny {
        Tiny::with_config(states, |_| {})
    }

    /// Like `new`, with `tweak` applied to every node's configuration.
    pub fn with_config(states: &[(&str, &str, bool)], tweak: impl Fn(&mut Config)) -> Tiny {
        let nodes = states
            .iter()
            .enumerate()
            .map(|(k, (id, state, standby))| make(k, id, state, *standby, &tweak))
            .collect();
        Tiny { nodes, now: 0, net: VecDeque::new(), cut: BTreeSet::new(), blocked: BTreeSet::new() }
    }

    /// Restarts node `id` from what it saved (the disk is instant: everything), as after a
    /// crash: it loses its role, its leader and every message in flight to or from it.
    pub fn restart(&mut self, id: &str) {
        let k = self.nodes.iter().position(|r| r.id() == id).unwrap();
        let r = &self.nodes[k];
        let text = serde_json::to_string(&skiff_core::persisted::PersistedState(r)).unwrap();
        let restored = restore(id, &text, r.applied(), false, &Json::empty_object()).unwrap();
        self.nodes[k] = Raft::new(r.config().clone(), restored).unwrap();
        self.nodes[k].tick(self.now);
        self.net.retain(|m| m.to != id && m.from != id);
    }

    /// Replaces node `id` by a brand-new standby with the same id (its data was deleted).
    pub fn replace_with_fresh_standby(&mut self, id: &str) {
        let k = self.nodes.iter().position(|r| r.id() == id).unwrap();
        self.nodes[k] = make(k + 10, id, "null", true, &|_| {});
        self.net.retain(|m| m.to != id && m.from != id);
    }

    fn flush(&mut self) {
        for r in &mut self.nodes {
            while r.has_ready() {
                let rd = r.ready();
                // Instant disk: durable at once, then send, then advance.
                self.net.extend(rd.messages);
                self.net.extend(rd.persisted_messages);
                if let Some(save) = &rd.save {
                    r.advance(save.token);
                }
                if let Some(last) = rd.committed.last() {
                    r.applied_to(last.index);
                }
            }
        }
    }

    /// Advances time by `ms`, a millisecond at a time; a message takes one millisecond.
    pub fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            for r in &mut self.nodes {
                r.tick(self.now);
            }
            self.flush();
            let in_flight: Vec<Message> = self.net.drain(..).collect();
            for m in in_flight {
                if self.cut.contains(&m.from)
                    || self.cut.contains(&m.to)
                    || self.blocked.contains(&(m.from.clone(), m.to.clone()))
                {
                    continue;
                }
                if let Some(r) = self.nodes.iter_mut().find(|r| r.id() == m.to) {
                    r.tick(self.now);
                    r.step(m).unwrap();
                }
                self.flush();
            }
        }
    }

    /// Drops messages between `a` and `b`, both ways.
    pub fn sever(&mut self, a: &str, b: &str) {
        self.blocked.insert((a.into(), b.into()));
        self.blocked.insert((b.into(), a.into()));
    }

    pub fn node(&mut self, id: &str) -> &mut Raft {
        self.nodes.iter_mut().find(|r| r.id() == id).unwrap()
    }

    pub fn leader(&self) -> Option<String> {
        self.nodes.iter().find(|r| r.is_leader()).map(|r| r.id().to_string())
    }
}
