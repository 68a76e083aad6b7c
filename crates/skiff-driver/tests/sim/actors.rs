//! What happens to a simulated cluster from outside: clients proposing commands and hearing
//! back, an operator joining and removing nodes one change at a time, crashes, restarts and
//! re-adds, and the phases of a run (faults, then healing and the end checks).

use crate::config::{Mutation, RunConfig};
use crate::host::ErrIn;
use crate::world::{node_index, Ev, MOp, Phase, Sim, Status};
use skiff_core::Raft;
use skiff_driver::Input;

impl Sim {
    pub fn readd(&mut self, i: usize, lineage: u64, removed_at: u64) {
        if self.nodes[i].status != Status::Wiped || self.nodes[i].lineage != lineage {
            return;
        }
        // Bug 4: a node that missed the removal could win an election with the vote of the
        // re-created node. Operators wait until every node has it (durably): its saved log holds
        // the committed entry at `removed_at` (so, by log matching, the removal before it) or a
        // snapshot past it. A log merely as long does not do: it may be a stale branch.
        let removal_term = self.committed.get(removed_at as usize - 1).map(|c| c.term);
        let caught_up = RunConfig::known_bug(4)
            || self.nodes.iter().enumerate().all(|(k, n)| {
                k == i
                    || matches!(n.status, Status::Retired | Status::Wiped)
                    || n.disk.durable.snap.0 >= removed_at
                    || (removal_term.is_some() && n.disk.durable.term_at(removed_at) == removal_term)
                    // A node that is not a voter in its own view cannot campaign with a stale
                    // membership.
                    || (n.status == Status::Up && n.core().is_some_and(|r| !r.members().contains(&n.id)))
            });
        if caught_up {
            self.start(i);
            self.ops.push_back(MOp::Add(i));
        } else {
            let d = self.between((100, 300));
            self.schedule(d, Ev::Readd(i, lineage, removed_at));
        }
    }

    // ----- clients -----

    pub fn command(&mut self) -> String {
        self.next_cmd += 1;
        let k = self.next_cmd;
        if k.is_multiple_of(2) {
            format!("{}", 1_000_000 + k)
        } else {
            format!(r#""c{k}""#)
        }
    }

    fn new_req(&mut self) -> u32 {
        self.next_req += 1;
        self.next_req
    }

    /// Proposes a command at node `i` through `command()`. Returns whether the core took it (it
    /// is a leader), and then the index it got.
    pub fn propose(&mut self, i: usize, cmd: &str) -> Option<u64> {
        if !self.nodes[i].is_leader() {
            return None;
        }
        let req = self.new_req();
        let inc = self.nodes[i].inc;
        self.proposals.insert((i, inc, req), cmd.to_string());
        *self.pending_by_node.entry((i, inc)).or_default() += 1;
        self.proposed += 1;
        let before = self.nodes[i].raft().log().last_index();
        self.input(i, Input::Propose { req, command: cmd.to_string(), timeout_ms: 0, wait_for: None });
        self.check_all();
        // The index the command got: appended after what the log held before.
        let index = self.nodes[i].core().and_then(|r| {
            (before + 1..=r.log().last_index()).find(|&k| {
                r.log().entry(k).is_some_and(|e| matches!(&e.kind, skiff_core::EntryKind::Command(c) if c.as_str() == cmd))
            })
        });
        trace!(self, "{} PROPOSE {cmd} -> {index:?}", self.nodes[i].id);
        index
    }

    /// A `done` op: a command, join or leave finished.
    pub fn request_done(&mut self, i: usize, req: u32, error: Option<ErrIn>, index: Option<u64>) {
        let inc = self.nodes[i].inc;
        if self.member_req == Some((i, inc, req)) {
            self.member_req = None;
            return;
        }
        if let Some(floor) = self.reads.remove(&(i, inc, req)) {
            return self.read_done(i, floor, error);
        }
        // A `done` naming an index hands over (or, with an error, drops) the result kept for it.
        let kept = index.is_some_and(|k| self.nodes[i].host.kept.remove(&k));
        let Some(cmd) = self.proposals.remove(&(i, inc, req)) else { return };
        *self.pending_by_node.entry((i, inc)).or_default() -= 1;
        if error.is_some() {
            return;
        }
        let Some(index) = index else { self.violation(format!("{}: command {cmd} done without its index", self.nodes[i].id)) };
        if !kept {
            self.violation(format!(
                "{}: command {cmd} answered at index {index}, whose applied result the wrapper was not told to keep",
                self.nodes[i].id
            ));
        }
        if self.cmd_index.get(&cmd) != Some(&index) {
            self.violation(format!(
                "{}: command {cmd} acknowledged at index {index}, applied at {:?}",
                self.nodes[i].id,
                self.cmd_index.get(&cmd)
            ));
        }
        trace!(self, "ACK {cmd} at {index}");
        self.acked.push((index, cmd));
        self.max_acked = self.max_acked.max(index);
    }

    /// A `read()` at node `i` answered: a success must see every command acknowledged before it
    /// was asked (`floor`) in the node's state machine; a coded refusal is fine.
    fn read_done(&mut self, i: usize, floor: u64, error: Option<ErrIn>) {
        if let Some(e) = error {
            if e.code.is_empty() {
                self.violation(format!("{}: a read failed without a code: {}", self.nodes[i].id, e.message));
            }
            self.stats.reads_failed += 1;
            return;
        }
        let applied = self.nodes[i].disk.sm_applied;
        if applied < floor {
            self.violation(format!(
                "{}: stale read: served at applied index {applied}, but index {floor} was acknowledged before it was asked",
                self.nodes[i].id
            ));
        }
        trace!(self, "{} READ ok at {applied} (floor {floor})", self.nodes[i].id);
        self.stats.reads_ok += 1;
    }

    /// A `read()` at a running node `i` (leader or follower), now and then with the lease.
    fn read(&mut self, i: usize) {
        if self.cfg.mutation == Some(Mutation::ReadAtOnce) {
            return self.read_done(i, self.max_acked, None);
        }
        let req = self.new_req();
        let inc = self.nodes[i].inc;
        self.reads.insert((i, inc, req), self.max_acked);
        let lease = self.rng.range(0, 3) == 0;
        self.input(i, Input::Read { req, lease, timeout_ms: 0 });
        self.check_all();
    }

    /// Leader `l` is asked to hand over, to a named member or to the most up-to-date voter; its
    /// answer is not checked beyond the invariants (a refusal comes with a code).
    fn transfer(&mut self, l: usize) {
        let req = self.new_req();
        let peer = match self.rng.range(0, 2) {
            0 => None,
            _ => Some(self.nodes[self.rng.range(0, self.nodes.len() as u64) as usize].id.clone()),
        };
        self.stats.transfers += 1;
        self.input(l, Input::Transfer { req, peer });
        self.check_all();
    }

    pub fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_leader()).collect()
    }

    /// The leader with the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        self.leaders().into_iter().max_by_key(|&i| self.nodes[i].raft().term())
    }

    pub fn client(&mut self) {
        if self.phase != Phase::Faults || !self.cfg.clients {
            return;
        }
        let leaders = self.leaders();
        if !leaders.is_empty() {
            let i = leaders[self.rng.range(0, leaders.len() as u64) as usize];
            let pending = self.pending_by_node.get(&(i, self.nodes[i].inc)).copied().unwrap_or(0);
            let burst = self.rng.range(1, 4).min(self.cfg.max_pending_proposals.saturating_sub(pending) as u64);
            for _ in 0..burst {
                let cmd = self.command();
                self.propose(i, &cmd);
            }
            if self.rng.range(0, 40) == 0 && self.nodes[i].is_leader() {
                self.transfer(i);
            }
        }
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&k| self.nodes[k].driver.is_some()).collect();
        if !running.is_empty() && self.rng.range(0, 2) == 0 {
            let k = running[self.rng.range(0, running.len() as u64) as usize];
            self.read(k);
        }
        let g = self.between(self.cfg.client_gap);
        self.schedule(g, Ev::Client);
    }

    // ----- membership, as users drive it -----

    fn reflected(&self, op: &MOp, members: &skiff_core::Membership) -> bool {
        match op {
            // `join` adds a learner and is done once the core promoted it: it votes.
            MOp::Add(x) => {
                members.is_voter(&self.nodes[*x].id) && members.metadata(&self.nodes[*x].id) == Some(&self.nodes[*x].meta)
            }
            MOp::Remove(x) => !members.contains(&self.nodes[*x].id),
        }
    }

    /// Asks the leader to join or remove nodes (`join`/`leave`), one change at a time; a change
    /// is done once the leader's whole membership reflects it and is committed.
    pub fn membership(&mut self) {
        if self.ops.is_empty() {
            self.maybe_new_op();
        }
        let Some(op) = self.ops.front().cloned() else { return };
        let Some(l) = self.leader() else { return };
        let raft = self.nodes[l].raft();
        if self.reflected(&op, raft.members()) {
            if !raft.can_change_membership() {
                return;
            }
            trace!(self, "membership op {:?} committed (seen by {})", op, self.nodes[l].id);
            self.ops.pop_front();
            self.member_req = None;
            if let MOp::Remove(x) = op {
                self.stats.removals += 1;
                let removed_at = self.nodes[l].raft().commit();
                self.wipe(x);
                if self.chance(800) {
                    let lineage = self.nodes[x].lineage;
                    let d = self.between((50, 1500));
                    self.schedule(d, Ev::Readd(x, lineage, removed_at));
                } else {
                    trace!(self, "{} retired", self.nodes[x].id);
                    self.nodes[x].status = Status::Retired;
                }
            } else {
                self.stats.adds += 1;
            }
            return;
        }
        // One request at a time; one whose node crashed since will never be answered.
        if let Some((k, inc, _)) = self.member_req {
            if self.nodes[k].status == Status::Up && self.nodes[k].inc == inc {
                return;
            }
        }
        let req = self.new_req();
        self.member_req = Some((l, self.nodes[l].inc, req));
        trace!(self, "{} asked for membership {:?}", self.nodes[l].id, op);
        let input = match op {
            MOp::Add(x) => Input::Join { req, peer: self.nodes[x].id.clone(), metadata: self.nodes[x].meta.as_str().to_string() },
            MOp::Remove(x) => Input::Leave { req, peer: self.nodes[x].id.clone() },
        };
        self.input(l, input);
    }

    fn maybe_new_op(&mut self) {
        if !self.cfg.auto || !self.cfg.membership || self.phase != Phase::Faults {
            return;
        }
        if self.nodes.iter().any(|n| matches!(n.status, Status::Wiped | Status::Stopped)) {
            return;
        }
        if !self.chance(30) {
            return;
        }
        let Some(l) = self.leader() else { return };
        let members: Vec<usize> =
            self.nodes[l].raft().members().ids().filter_map(|id| node_index(id, self.nodes.len())).collect();
        if members.len() < 3 {
            return;
        }
        let target = if self.chance(300) {
            l
        } else {
            let followers: Vec<usize> = members.into_iter().filter(|&k| k != l).collect();
            followers[self.rng.range(0, followers.len() as u64) as usize]
        };
        trace!(self, "new membership op: remove {}", self.nodes[target].id);
        self.ops.push_back(MOp::Remove(target));
    }

    /// Queues a membership change (scripted scenarios).
    pub fn queue_op(&mut self, op: MOp) {
        self.ops.push_back(op);
    }

    // ----- faults -----

    pub fn fault(&mut self) {
        if self.phase != Phase::Faults || !self.cfg.auto {
            return;
        }
        let n = self.nodes.len();
        let kind = self.rng.range(0, 10);
        if kind < 5 && self.cfg.partitions && !self.partition_active && n > 1 {
            self.partition();
        } else if kind < 9 && self.cfg.crashes {
            let down = self.nodes.iter().filter(|n| n.status == Status::Crashed).count();
            let up: Vec<usize> = (0..n).filter(|&i| self.nodes[i].status == Status::Up).collect();
            if !up.is_empty() && down + 1 < n.max(2) {
                let i = match self.leader() {
                    Some(l) if self.rng.range(0, 3) == 0 => l,
                    _ => up[self.rng.range(0, up.len() as u64) as usize],
                };
                self.crash(i);
                let token = self.nodes[i].crash_token;
                let d = if self.chance(200) { 0 } else { self.between((20, 2000)) };
                self.schedule(d, Ev::Restart(i, token));
            }
        }
        let g = self.between(self.cfg.fault_gap);
        self.schedule(g, Ev::Fault);
    }

    // ----- phases -----

    /// Heals everything and stops injecting faults and client traffic.
    pub fn enter_end(&mut self) {
        trace!(self, "END PHASE: heal everything");
        self.phase = Phase::End;
        self.end_started = self.now;
        self.heal();
        for i in 0..self.nodes.len() {
            if self.nodes[i].status == Status::Crashed {
                self.start(i);
            }
        }
        self.check_all();
    }

    /// Runs a whole randomized run: faults, then healing and the liveness and durability checks.
    pub fn run(&mut self) {
        while self.phase != Phase::Done {
            if self.phase == Phase::Faults && self.steps >= self.cfg.steps {
                self.enter_end();
            }
            if !self.step_once() {
                self.violation("nothing left to do".into());
            }
            if self.phase == Phase::End {
                self.end_check();
                // Healing must not take forever in events either (the liveness bound is in
                // simulated time, which a storm of events may barely move).
                if self.steps > 50 * self.cfg.steps.max(10_000) {
                    self.violation(format!("the end phase ran to step {} without the cluster settling", self.steps));
                }
            }
        }
    }

    /// Heals everything and runs until the cluster is live again (scripted scenarios).
    pub fn finish(&mut self) {
        if self.phase == Phase::Faults {
            self.enter_end();
        }
        while self.phase != Phase::Done {
            if !self.step_once() {
                self.violation("nothing left to do".into());
            }
            self.end_check();
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        while self.next_event_at().is_some_and(|at| at <= until) {
            self.step_once();
        }
        self.set_now(until);
    }

    /// Runs until `cond` holds (checked after every event). Returns whether it did in time.
    pub fn run_until(&mut self, max_ms: u64, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let until = self.now + max_ms;
        loop {
            if cond(self) {
                return true;
            }
            if self.next_event_at().is_none_or(|at| at > until) {
                self.set_now(self.now.max(until));
                return cond(self);
            }
            self.step_once();
        }
    }

    pub fn raft(&self, i: usize) -> &Raft {
        self.nodes[i].raft()
    }

    pub fn index_of_command(&self, cmd: &str) -> Option<u64> {
        self.cmd_index.get(cmd).copied()
    }
}
