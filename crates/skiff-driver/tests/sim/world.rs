//! The simulated world: one logical clock (ms) that every driver reads, one event queue ordered
//! by (time, sequence), one generator; nodes that are real `skiff_driver::Driver`s, started,
//! crashed (dropping the driver and all the host held in memory), restarted from their fake
//! disk, removed and re-added; clients, membership changes and faults as users and networks
//! make them. The same `RunConfig` always produces the same run.

use crate::config::{Mutation, RunConfig, Start};
use crate::disk::{Disk, Saved};
use crate::host::HostState;
use parking_lot::Mutex;
use skiff_core::rng::Rng;
use skiff_core::{Json, Message, Raft};
use skiff_driver::{Clock, Driver, Host, Input, NodeOptions, PluginError, Status as DriverStatus};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use tokio::sync::Notify;

/// The host's wake-up: the world drains every driver after each timer round anyway.
pub struct Quiet;

impl Host for Quiet {
    fn wake(&self) {}
}

/// The world's clock as one node reads it: milliseconds since that node's driver was made, as
/// `SystemClock` counts them.
struct SimClock {
    now: Arc<AtomicU64>,
    start: u64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.now.load(AtomicOrdering::Relaxed) - self.start
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Up,
    /// Crashed; restarts from its disk.
    Crashed,
    /// Stopped by itself after its removal (the driver's `stopped` op); wiped once the world sees
    /// the removal committed.
    Stopped,
    /// Removed from the cluster and its data deleted; comes back as a fresh standby.
    Wiped,
    /// Removed for good.
    Retired,
}

pub struct Node {
    pub id: String,
    pub meta: Json,
    pub standby: bool,
    pub driver: Option<Driver<Quiet>>,
    pub status: Status,
    /// Bumped at every start: events of an older incarnation are ignored.
    pub inc: u64,
    /// Bumped when the node's data is deleted: its votes before and after are unrelated.
    pub lineage: u64,
    /// When the timer event of this incarnation is due (`u64::MAX`: none), and its token.
    tick_at: u64,
    tick_token: u64,
    pub crash_token: u64,
    pub disk: Disk,
    pub host: HostState,
    /// The post-load checks ran for this incarnation.
    loaded: bool,
    // Checker state for the current incarnation (see check.rs).
    pub mirror: VecDeque<(u64, String)>,
    pub mirror_first: u64,
    pub last_snap: u64,
    pub commit_cursor: u64,
    pub lc: (u64, u64),
    pub last_term: u64,
    pub last_commit: u64,
    pub removed_self_seen: bool,
    pub installs: u64,
}

impl Node {
    /// The core inside the driver, once it has loaded.
    pub fn core(&self) -> Option<&Raft> {
        self.driver.as_ref().and_then(|d| d.core())
    }
    pub fn raft(&self) -> &Raft {
        self.core().unwrap_or_else(|| panic!("{} is not running", self.id))
    }
    pub fn is_up(&self) -> bool {
        self.status == Status::Up
    }
    pub fn is_leader(&self) -> bool {
        self.core().is_some_and(|r| r.is_leader())
    }
    pub fn has_command(&self, cmd: &str) -> bool {
        self.disk.has_command(cmd)
    }
}

pub fn node_id(i: usize) -> String {
    format!("n{}", i + 1)
}

pub fn node_index(id: &str, n: usize) -> Option<usize> {
    let k: usize = id.strip_prefix('n')?.parse().ok()?;
    (k >= 1 && k <= n).then(|| k - 1)
}

fn node_meta(i: usize) -> Json {
    Json::from_text(&format!(r#"{{"zone":"z{}"}}"#, i + 1)).expect("metadata is JSON")
}

pub enum Ev {
    /// A request on the wire, from the `send` io `io` of incarnation `from_inc` of `from`.
    Request { from: usize, from_inc: u64, io: u32, to: usize, kind: String, args: String },
    /// The outcome of the `send` io `io` of incarnation `inc` of node `to`, from node `from`.
    Answer { from: usize, to: usize, inc: u64, io: u32, error: Option<PluginError>, result: Option<String> },
    /// A plugin call of an incarnation calls back.
    Io(usize, u64, Input),
    SaveDone(usize, u64),
    ApplyStep(usize, u64, u32),
    SnapRead(usize, u64, u32, u32, usize),
    /// The running job of the state-machine lane (`removeAllState`, a snapshot write) is done.
    SmDone(usize, u64),
    Tick(usize, u64, u64),
    Restart(usize, u64),
    /// Add a removed node back (node, lineage, index every other node must hold durably first).
    Readd(usize, u64, u64),
    Client,
    Fault,
    Heal(u64),
    Membership,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // BinaryHeap is a max-heap: earliest first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MOp {
    Add(usize),
    Remove(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Faults,
    End,
    Done,
}

pub struct Committed {
    pub term: u64,
    pub uuid: String,
    /// Lowest term of any node that knew this index committed (the committing leader's term).
    pub commit_term: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub delivered: u64,
    pub saves: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub elections: u64,
    pub max_term: u64,
    pub removals: u64,
    pub adds: u64,
    pub applied: u64,
    pub snapshots_installed: u64,
    pub removed_self: u64,
    pub end_ms: u64,
    pub reads_ok: u64,
    pub reads_failed: u64,
    pub transfers: u64,
}

pub struct Sim {
    pub cfg: RunConfig,
    pub rng: Rng,
    pub now: u64,
    clock: Arc<AtomicU64>,
    pub nodes: Vec<Node>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub steps: usize,
    /// Events in a row at the current instant (see `step_once`).
    same_instant: u64,
    pub phase: Phase,
    /// blocked[a][b]: messages from a to b are dropped.
    pub blocked: Vec<Vec<bool>>,
    pub partition_gen: u64,
    pub partition_active: bool,
    pub ops: VecDeque<MOp>,
    /// The `join`/`leave` request under way for `ops.front()`: (node, incarnation, req).
    pub member_req: Option<(usize, u64, u32)>,
    pub touched: Vec<usize>,
    pub next_req: u32,
    // Checker (see check.rs).
    pub leaders: HashMap<u64, String>,
    pub index_term: HashMap<(u64, u64), (String, String, u64)>,
    /// (index, term) of entries that ever left their node (sent in an AppendEntries).
    pub escaped: HashSet<(u64, u64)>,
    pub committed: Vec<Committed>,
    pub cmd_index: HashMap<String, u64>,
    /// Commands proposed and not answered: (node, incarnation, req) → command.
    pub proposals: HashMap<(usize, u64, u32), String>,
    pub pending_by_node: HashMap<(usize, u64), usize>,
    pub acked: Vec<(u64, String)>,
    /// The highest index of `acked`.
    pub max_acked: u64,
    /// Reads asked and not answered: (node, incarnation, req) → `max_acked` when asked, which a
    /// successful answer's state machine must have applied.
    pub reads: HashMap<(usize, u64, u32), u64>,
    pub proposed: usize,
    pub votes: HashMap<(usize, u64, u64), String>,
    pub next_cmd: u64,
    pub final_cmds: Vec<String>,
    pub final_proposed_in: Option<(usize, u64, u64)>,
    pub end_started: u64,
    // Diagnostics.
    pub trace_on: bool,
    trace_all: bool,
    trace: VecDeque<String>,
    /// Every message sent, when `capture` is set (scripted scenarios).
    pub capture: bool,
    pub sent: Vec<Message>,
    pub stats: Stats,
}

impl Sim {
    pub fn new(cfg: RunConfig) -> Sim {
        Sim::new_traced(cfg, false)
    }

    /// `trace` keeps the last few hundred events for a failure report (slower).
    pub fn new_traced(cfg: RunConfig, trace: bool) -> Sim {
        let n = cfg.nodes;
        let mut sim = Sim {
            rng: Rng::new(cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03),
            now: 0,
            clock: Arc::new(AtomicU64::new(0)),
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            steps: 0,
            same_instant: 0,
            phase: Phase::Faults,
            blocked: vec![vec![false; n]; n],
            partition_gen: 0,
            partition_active: false,
            ops: VecDeque::new(),
            member_req: None,
            touched: Vec::new(),
            next_req: 0,
            leaders: HashMap::new(),
            index_term: HashMap::new(),
            escaped: HashSet::new(),
            committed: Vec::new(),
            cmd_index: HashMap::new(),
            proposals: HashMap::new(),
            pending_by_node: HashMap::new(),
            acked: Vec::new(),
            max_acked: 0,
            reads: HashMap::new(),
            proposed: 0,
            votes: HashMap::new(),
            next_cmd: 0,
            final_cmds: Vec::new(),
            final_proposed_in: None,
            end_started: 0,
            trace_on: false,
            trace_all: std::env::var("SIM_TRACE").is_ok_and(|v| v == "all"),
            trace: VecDeque::new(),
            capture: false,
            sent: Vec::new(),
            stats: Stats::default(),
            cfg,
        };
        sim.trace_on = sim.trace_all || trace;
        let preload: Vec<String> = (1..=sim.cfg.preloaded_entries)
            .map(|j| format!(r#"{{"term":1,"index":{j},"command":"pre-{j}","uuid":"pre-{j}"}}"#))
            .collect();
        for i in 0..n {
            let (standby, durable) = match sim.cfg.start {
                Start::Bootstrap => (i != 0, Saved::null()),
                Start::Persisted => {
                    let peers: Vec<String> = (0..n)
                        .filter(|&k| k != i)
                        .map(|k| format!(r#"{{"id":"{}","metadata":{}}}"#, node_id(k), node_meta(k).as_str()))
                        .collect();
                    let len = if preload.is_empty() { 0 } else { sim.rng.range(0, preload.len() as u64 + 1) as usize };
                    let term = if preload.is_empty() { sim.rng.range(0, 2) } else { 1 };
                    let vote = if term > 0 && sim.rng.range(0, 2) == 0 {
                        format!(r#""{}""#, node_id(sim.rng.range(0, n as u64) as usize))
                    } else {
                        "null".into()
                    };
                    let text = format!(
                        r#"{{"currentTerm":{term},"votedFor":{vote},"log":{{"meta":{{"lastIncludedIndex":0,"lastIncludedTerm":0}},"entries":[{}]}},"peers":[{}]}}"#,
                        preload[..len].join(","),
                        peers.join(",")
                    );
                    (false, Saved::original(&text).expect("original-format state parses"))
                }
            };
            sim.nodes.push(Node {
                id: node_id(i),
                meta: node_meta(i),
                standby,
                driver: None,
                status: Status::Crashed,
                inc: 0,
                lineage: 0,
                tick_at: u64::MAX,
                tick_token: 0,
                crash_token: 0,
                disk: Disk::new(durable),
                host: HostState::default(),
                loaded: false,
                mirror: VecDeque::new(),
                mirror_first: 1,
                last_snap: 0,
                commit_cursor: 0,
                lc: (0, 0),
                last_term: 0,
                last_commit: 0,
                removed_self_seen: false,
                installs: 0,
            });
        }
        for i in 0..n {
            sim.start(i);
        }
        if sim.cfg.start == Start::Bootstrap {
            for i in 1..n {
                sim.ops.push_back(MOp::Add(i));
            }
        }
        sim.schedule(0, Ev::Membership);
        if sim.cfg.auto {
            let g = sim.between(sim.cfg.client_gap);
            sim.schedule(g, Ev::Client);
            let g = sim.between(sim.cfg.fault_gap);
            sim.schedule(g, Ev::Fault);
        }
        sim.check_all();
        sim
    }

    // ----- small helpers -----

    pub fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        self.rng.range(lo, hi + 1)
    }

    pub fn chance(&mut self, permille: u64) -> bool {
        permille > 0 && self.rng.range(0, 1000) < permille
    }

    pub fn schedule(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled { at: self.now + delay, seq: self.seq, ev });
    }

    pub fn push_trace(&mut self, line: String) {
        if self.trace_all {
            eprintln!("{line}");
        }
        self.trace.push_back(line);
        if self.trace.len() > 600 {
            self.trace.pop_front();
        }
    }

    pub fn trace_tail(&self) -> String {
        self.trace.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn node_options(&self, i: usize) -> NodeOptions {
        let (lo, hi) = self.cfg.election_override.get(i).copied().flatten().unwrap_or(self.cfg.election);
        let node = &self.nodes[i];
        NodeOptions {
            id: node.id.clone(),
            standby: node.standby,
            cluster_id: None,
            metadata: node.meta.clone(),
            heartbeat_interval: self.cfg.heartbeat,
            min_election_timeout: lo,
            max_election_timeout: hi,
            command_timeout: 3000,
            retained_log_entries: self.cfg.retained,
            pipelining: self.cfg.pipelining,
            max_command_bytes: 1 << 20,
            // The sim keeps the quiesce path: a snapshot is read while the state machine is still.
            point_in_time_snapshots: false,
            // Nodes only crash in the sim, they are never stopped; a hand-off comes from clients.
            transfer_on_stop: false,
        }
    }

    pub fn describe(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            match n.core() {
                Some(r) => s.push_str(&format!(
                    "  {} {:?} inc={} role={} term={} vote={:?} leader={:?} commit={} applied={} log={}..{}/t{} members={:?} sm_applied={} saved={}..{}/t{} install={:?}\n",
                    n.id, n.status, n.inc, r.role().name(), r.term(), r.hard_state_ref().1, r.leader(), r.commit(), r.applied(),
                    r.log().snapshot_index(), r.log().last_index(), r.log().last_term(), r.members().ids().collect::<Vec<_>>(),
                    n.disk.sm_applied, n.disk.durable.snap.0, n.disk.durable.last_index(), n.disk.durable.term,
                    r.pending_install().map(|p| p.index),
                )),
                None => s.push_str(&format!(
                    "  {} {:?} inc={} durable_term={} sm_applied={}\n",
                    n.id, n.status, n.inc, n.disk.durable.term, n.disk.sm_applied
                )),
            }
        }
        s
    }

    #[track_caller]
    pub fn violation(&self, what: String) -> ! {
        panic!(
            "SIMULATION INVARIANT VIOLATED: {what}\n  at t={}ms step={} phase={:?}\n  config: {}\n  replay: {}\n{}",
            self.now,
            self.steps,
            self.phase,
            self.cfg.summary(),
            self.cfg.replay_command(),
            self.describe()
        );
    }

    /// When the next event is due.
    pub fn next_event_at(&self) -> Option<u64> {
        self.queue.peek().map(|s| s.at)
    }

    /// Moves the world's clock, which every driver reads.
    pub fn set_now(&mut self, t: u64) {
        self.now = t;
        self.clock.store(t, AtomicOrdering::Relaxed);
    }

    // ----- talking to a driver -----

    /// Hands `input` to node `i`'s driver and runs the batch it returns.
    pub fn input(&mut self, i: usize, input: Input) {
        if !matches!(input, Input::Receive { .. }) {
            trace!(self, "{} input {}", self.nodes[i].id, format!("{input:?}").chars().take(160).collect::<String>());
        }
        let node = &mut self.nodes[i];
        let applied = node.disk.sm_applied;
        let Some(d) = node.driver.as_mut() else { return };
        let batch = d.input(input, Some(applied));
        self.after_driver(i, batch);
    }

    fn after_driver(&mut self, i: usize, batch: Option<String>) {
        self.touched.push(i);
        if let Some(b) = batch {
            self.run_batch(i, &b);
        }
        if !self.nodes[i].loaded && self.nodes[i].core().is_some() {
            self.nodes[i].loaded = true;
            self.check_loaded(i);
        }
        self.arm(i);
    }

    /// Schedules the timer of node `i` for the driver's next deadline (a little late, as real
    /// timers are), unless an earlier one is already due.
    fn arm(&mut self, i: usize) {
        let jitter = self.rng.range(0, 3);
        let now = self.now;
        let node = &mut self.nodes[i];
        let Some(d) = node.driver.as_mut() else { return };
        if d.is_finished() {
            return;
        }
        let at = now + d.arm_timer().max(1) + jitter;
        if at < node.tick_at {
            node.tick_token += 1;
            node.tick_at = at;
            let (inc, token) = (node.inc, node.tick_token);
            self.schedule(at - now, Ev::Tick(i, inc, token));
        }
    }

    fn timer(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.tick_at = u64::MAX;
        let Some(d) = node.driver.as_mut() else { return };
        d.timer_round();
        let batch = d.drain();
        self.after_driver(i, batch);
    }

    // ----- node lifecycle -----

    /// Starts node `i` from its disk: a new driver, which asks for `loadMeta` first.
    pub fn start(&mut self, i: usize) {
        let opts = self.node_options(i);
        let now = self.now;
        let node = &mut self.nodes[i];
        node.inc += 1;
        let seed = self.cfg.seed.wrapping_mul(1_000_003) ^ ((i as u64) << 40) ^ (node.inc << 20) ^ 0xabcdef;
        let clock = SimClock { now: self.clock.clone(), start: now };
        let status = Arc::new(Mutex::new(DriverStatus::default()));
        let mut d = Driver::with_clock(opts, seed, Quiet, status, Arc::new(Notify::new()), Box::new(clock));
        d.input(Input::SetListened(vec!["snapshot installed".into()]), None);
        let batch = d.start();
        node.driver = Some(d);
        node.host = HostState::default();
        node.status = Status::Up;
        node.loaded = false;
        node.tick_at = u64::MAX;
        node.mirror.clear();
        node.mirror_first = 1;
        node.last_snap = 0;
        node.commit_cursor = 0;
        node.lc = (0, 0);
        node.last_term = 0;
        node.last_commit = 0;
        trace!(self, "{} start inc={} durable term={} applied={}", self.nodes[i].id, self.nodes[i].inc, self.nodes[i].disk.durable.term, self.nodes[i].disk.sm_applied);
        self.after_driver(i, batch);
    }

    /// Node `i` stops in the middle of installing a snapshot at (`index`, `term`) listing every
    /// node: the install mark is saved and the state machine cleared (what a crash between
    /// `removeAllState` and the end of the stream leaves), then it starts again.
    pub fn restart_installing(&mut self, i: usize, index: u64, term: u64) {
        self.crash(i);
        let members: Vec<serde_json::Value> = (0..self.nodes.len())
            .map(|k| {
                let meta: serde_json::Value = serde_json::from_str(node_meta(k).as_str()).expect("metadata is JSON");
                serde_json::json!({ "id": node_id(k), "metadata": meta })
            })
            .collect();
        let node = &mut self.nodes[i];
        let mut state: serde_json::Value = serde_json::from_str(&node.disk.durable.text()).expect("the save is JSON");
        state["log"]["meta"]["pendingSnapshot"] =
            serde_json::json!({ "lastIncludedIndex": index, "lastIncludedTerm": term, "members": members });
        node.disk.durable = Saved::parse(&state.to_string(), None, &[]).expect("the edited save parses");
        node.disk.clear_state_machine();
        self.start(i);
    }

    /// Loses everything not on the disk: the driver, unfinished saves, unsent messages, the
    /// apply chain, snapshot streams, connections.
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].status != Status::Up {
            return;
        }
        trace!(self, "{} CRASH", self.nodes[i].id);
        self.stats.crashes += 1;
        // Entries that never reached the disk nor left the node vanish with it: a lone node that
        // won a term and crashed before saving it may win that same term again and append other
        // entries at the same positions.
        let mirror = std::mem::take(&mut self.nodes[i].mirror);
        let first = self.nodes[i].mirror_first;
        for (k, (term, uuid)) in mirror.iter().enumerate() {
            let key = (first + k as u64, *term);
            if self.nodes[i].disk.durable.term_at(key.0) != Some(key.1)
                && !self.escaped.contains(&key)
                && self.index_term.get(&key).is_some_and(|v| v.0 == *uuid)
            {
                self.index_term.remove(&key);
            }
        }
        let lose = self.cfg.mutation == Some(Mutation::LoseLastSave);
        let node = &mut self.nodes[i];
        node.driver = None;
        node.host = HostState::default();
        node.status = Status::Crashed;
        node.crash_token += 1;
        if lose {
            if let Some(old) = node.disk.previous.take() {
                node.disk.durable = old;
            }
        }
    }

    /// Deletes the node's data after its removal committed: it will come back as a new standby.
    pub fn wipe(&mut self, i: usize) {
        trace!(self, "{} WIPE", self.nodes[i].id);
        let node = &mut self.nodes[i];
        node.driver = None;
        node.host = HostState::default();
        node.status = Status::Wiped;
        node.disk = Disk::new(Saved::null());
        node.standby = true;
        node.lineage += 1;
        node.mirror.clear();
        node.crash_token += 1;
        // Connections to the old process are gone, with the requests and replies on them: a
        // reply of the old process must not reach a leader after the new one joined (it would
        // claim entries the new, empty node does not hold; seed 5391).
        self.queue.retain(|s| match &s.ev {
            Ev::Request { from, to, .. } => *from != i && *to != i,
            Ev::Answer { from, .. } => *from != i,
            _ => true,
        });
    }

    /// The driver finished by itself: a node whose removal committed.
    pub fn stopped(&mut self, i: usize) {
        let node = &self.nodes[i];
        trace!(self, "{} stopped after its removal", node.id);
        self.check_removed_self(i);
        let node = &mut self.nodes[i];
        node.removed_self_seen = true;
        node.driver = None;
        node.host = HostState::default();
        node.status = Status::Stopped;
        self.stats.removed_self += 1;
    }

    // ----- the event loop -----

    /// Processes one event. Returns false when nothing is scheduled.
    pub fn step_once(&mut self) -> bool {
        let Some(s) = self.queue.pop() else { return false };
        // Time must move: a run whose events keep coming at one instant never ends.
        self.same_instant = if s.at == self.now { self.same_instant + 1 } else { 0 };
        if self.same_instant > 100_000 {
            self.violation(format!("livelock: {} events at t={} without time moving", self.same_instant, s.at));
        }
        self.set_now(s.at);
        self.steps += 1;
        let live = |sim: &Sim, i: usize, inc: u64| sim.nodes[i].status == Status::Up && sim.nodes[i].inc == inc;
        match s.ev {
            Ev::Request { from, from_inc, io, to, kind, args } => self.deliver_request(from, from_inc, io, to, kind, args),
            Ev::Answer { to, inc, io, error, result, .. } => {
                if live(self, to, inc) {
                    self.input(to, Input::Complete { io, error, result });
                }
            }
            Ev::Io(i, inc, input) => {
                if live(self, i, inc) {
                    self.input(i, input);
                }
            }
            Ev::SaveDone(i, inc) => {
                if live(self, i, inc) {
                    self.save_done(i);
                }
            }
            Ev::ApplyStep(i, inc, io) => {
                if live(self, i, inc) {
                    self.apply_step(i, io);
                }
            }
            Ev::SnapRead(i, inc, io, sid, max) => {
                if live(self, i, inc) {
                    self.snap_read(i, io, sid, max);
                }
            }
            Ev::SmDone(i, inc) => {
                if live(self, i, inc) {
                    self.sm_done(i);
                }
            }
            Ev::Tick(i, inc, token) => {
                if live(self, i, inc) && self.nodes[i].tick_token == token {
                    self.timer(i);
                }
            }
            Ev::Restart(i, token) => {
                if self.nodes[i].status == Status::Crashed && self.nodes[i].crash_token == token {
                    self.start(i);
                }
            }
            Ev::Readd(i, lineage, removed_at) => self.readd(i, lineage, removed_at),
            Ev::Client => self.client(),
            Ev::Fault => self.fault(),
            Ev::Heal(gen) => {
                if gen == self.partition_gen && self.partition_active {
                    trace!(self, "HEAL partition {gen}");
                    self.heal();
                }
            }
            Ev::Membership => {
                self.membership();
                let d = self.between((10, 40));
                self.schedule(d, Ev::Membership);
            }
        }
        self.check_all();
        true
    }
}
