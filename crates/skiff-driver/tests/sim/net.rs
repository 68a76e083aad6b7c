//! The simulated network: delay, loss, duplication, long detours and partitions of the requests
//! a `send` op puts on a connection and of the replies that come back on it.

use crate::world::{node_index, Ev, Phase, Sim};
use skiff_driver::PluginError;

/// What a transport tells the sender when the link is down.
fn unreachable() -> PluginError {
    PluginError { message: Some("connection refused".into()), code: Some("ECONNREFUSED".into()) }
}

impl Sim {
    /// Puts a request of node `i` to `peer` on the wire. A request that is lost is never
    /// answered (the driver times it out); one that meets a partition is lost, or refused.
    pub fn transmit(&mut self, i: usize, peer: &str, io: u32, kind: &str, args: &str) {
        let inc = self.nodes[i].inc;
        let Some(to) = node_index(peer, self.nodes.len()) else {
            return self.schedule(0, Ev::Answer { from: i, to: i, inc, io, error: Some(unreachable()), result: None });
        };
        if self.blocked[i][to] {
            if self.rng.range(0, 2) == 0 {
                let d = self.delay();
                self.schedule(d, Ev::Answer { from: i, to: i, inc, io, error: Some(unreachable()), result: None });
            }
            return;
        }
        let copies = self.copies();
        for _ in 0..copies {
            let d = self.delay();
            let ev = Ev::Request { from: i, from_inc: inc, io, to, kind: kind.to_string(), args: args.to_string() };
            self.schedule(d, ev);
        }
    }

    /// Carries node `i`'s answer to the `send` io `io` of node `to` (incarnation `inc`).
    pub fn respond(
        &mut self,
        i: usize,
        to: usize,
        inc: u64,
        io: u32,
        error: Option<(String, String)>,
        result: Option<String>,
    ) {
        if self.blocked[i][to] {
            return;
        }
        let error = error.map(|(message, code)| PluginError { message: Some(message), code: Some(code) });
        for _ in 0..self.copies() {
            let d = self.delay();
            self.schedule(d, Ev::Answer { from: i, to, inc, io, error: error.clone(), result: result.clone() });
        }
    }

    /// How many copies of a message arrive: 0 (lost), 1, or 2 (duplicated), while faults are on.
    fn copies(&mut self) -> usize {
        if self.phase != Phase::Faults {
            return 1;
        }
        if self.chance(self.cfg.loss_permille) {
            return 0;
        }
        if self.chance(self.cfg.dup_permille) {
            2
        } else {
            1
        }
    }

    fn delay(&mut self) -> u64 {
        let mut d = self.between(self.cfg.delay);
        if self.phase == Phase::Faults && self.chance(self.cfg.slow_permille) {
            d += self.rng.range(50, 600);
        }
        d
    }

    /// A request arrives, unless its link was cut meanwhile or its receiver is down.
    pub fn deliver_request(&mut self, from: usize, from_inc: u64, io: u32, to: usize, kind: String, args: String) {
        if !self.nodes[to].is_up() || self.blocked[from][to] {
            return;
        }
        self.stats.delivered += 1;
        trace!(self, "deliver {} -> {} {kind}", self.nodes[from].id, self.nodes[to].id);
        self.receive(to, from, from_inc, io, kind, args);
    }

    pub fn heal(&mut self) {
        for row in &mut self.blocked {
            row.iter_mut().for_each(|b| *b = false);
        }
        self.partition_active = false;
    }

    /// Cuts `i` off from everyone, both ways.
    pub fn isolate(&mut self, i: usize) {
        for k in 0..self.nodes.len() {
            if k != i {
                self.blocked[i][k] = true;
                self.blocked[k][i] = true;
            }
        }
    }

    /// A random partition: one node isolated (often the leader), two groups, a one-way cut, or
    /// random directed links; healed after a while.
    pub fn partition(&mut self) {
        let n = self.nodes.len();
        self.partition_gen += 1;
        self.partition_active = true;
        self.stats.partitions += 1;
        let style = self.rng.range(0, 4);
        match style {
            0 => {
                let i = match self.leader() {
                    Some(l) if self.rng.range(0, 2) == 0 => l,
                    _ => self.rng.range(0, n as u64) as usize,
                };
                self.isolate(i);
            }
            1 => {
                let side: Vec<bool> = (0..n).map(|_| self.rng.range(0, 2) == 0).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.blocked[a][b] = true;
                        }
                    }
                }
            }
            2 => {
                let i = match self.leader() {
                    Some(l) if self.rng.range(0, 2) == 0 => l,
                    _ => self.rng.range(0, n as u64) as usize,
                };
                let inbound = self.rng.range(0, 2) == 0;
                for k in (0..n).filter(|&k| k != i) {
                    if inbound {
                        self.blocked[k][i] = true;
                    } else {
                        self.blocked[i][k] = true;
                    }
                }
            }
            _ => {
                for a in 0..n {
                    for b in 0..n {
                        if a != b && self.chance(300) {
                            self.blocked[a][b] = true;
                        }
                    }
                }
            }
        }
        trace!(self, "PARTITION {} style {style}: {:?}", self.partition_gen, self.blocked);
        let gen = self.partition_gen;
        let d = self.between((100, 3000));
        self.schedule(d, Ev::Heal(gen));
    }
}
