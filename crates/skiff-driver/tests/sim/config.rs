//! What one simulated run is: the cluster, the faults and their rates, drawn from a seed in a
//! profile (`SIM_PROFILE`), or written by hand for a scripted scenario.

use skiff_core::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// n1 starts fresh and non-standby, the others fresh standbys; the world joins them.
    Bootstrap,
    /// Every node starts from an original-format (skiff-algorithm) persisted state listing all.
    Persisted,
}

/// Deliberate faults of the host, to check that the checker notices them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Run a save's `after` ops (the messages that promise it) as soon as the save is asked for,
    /// not once it completed.
    SendBeforeSave,
    /// A crash loses the last completed save (a disk that acknowledged too early).
    LoseLastSave,
    /// `read()` answers at once from the local state machine, without asking the driver.
    ReadAtOnce,
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub mutation: Option<Mutation>,
    /// The `SIM_PROFILE` the configuration was drawn in (`None`: the default one).
    pub profile: Option<String>,
    pub seed: u64,
    pub nodes: usize,
    pub start: Start,
    /// Events processed with faults on before healing everything.
    pub steps: usize,
    /// Random clients, faults and membership changes (off for scripted scenarios).
    pub auto: bool,
    pub clients: bool,
    pub partitions: bool,
    pub crashes: bool,
    pub membership: bool,
    pub loss_permille: u64,
    pub dup_permille: u64,
    /// Chance that a message takes a long detour (heavy reordering, very stale deliveries).
    pub slow_permille: u64,
    /// Chance that a `saveMeta` or an `applyCommand` fails (while faults are on).
    pub disk_fail_permille: u64,
    pub delay: (u64, u64),
    pub disk_delay: (u64, u64),
    pub apply_delay: (u64, u64),
    pub client_gap: (u64, u64),
    pub fault_gap: (u64, u64),
    pub heartbeat: u64,
    pub election: (u64, u64),
    /// `retainedLogEntries`: applied entries kept after compaction.
    pub retained: u64,
    /// State machine entries per snapshot chunk the fake read stream yields.
    pub snapshot_chunk: usize,
    /// The transport declares `pipelining` (otherwise the driver keeps one request in flight per
    /// peer, as for a skiff-algorithm transport).
    pub pipelining: bool,
    /// Clients wait for answers: at most this many unanswered proposals per leader.
    pub max_pending_proposals: usize,
    /// Persisted start: length of the term-1 log the original state already held (each node
    /// holds a random prefix of it).
    pub preloaded_entries: usize,
    /// Per-node election timeout overrides (scripted scenarios).
    pub election_override: Vec<Option<(u64, u64)>>,
    /// Logical time allowed after healing for a leader to emerge and a proposal to commit.
    pub end_bound_ms: u64,
}

const SEED_SALT: u64 = 0x5eed_0f5c_1ff0_0002;

impl RunConfig {
    /// The configuration a seed selects, in the profile `SIM_PROFILE` names.
    pub fn random(seed: u64) -> RunConfig {
        RunConfig::random_in(seed, std::env::var("SIM_PROFILE").ok().as_deref())
    }

    /// The configuration a seed selects in `profile` (`None`: the default profile).
    pub fn random_in(seed: u64, profile: Option<&str>) -> RunConfig {
        let mut r = Rng::new(seed ^ SEED_SALT);
        let nodes = [3, 3, 3, 3, 5, 5, 5, 5, 1, 7][r.range(0, 10) as usize];
        let start = if r.range(0, 10) < 6 { Start::Bootstrap } else { Start::Persisted };
        let heartbeat = r.range(15, 51);
        let min_el = heartbeat * 3 + r.range(0, 120);
        let max_el = min_el + r.range(min_el / 2, min_el * 2);
        let delay_hi = [3, 10, 25, 40][r.range(0, 4) as usize];
        let multi = nodes > 1;
        RunConfig {
            steps: std::env::var("SIM_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(RunConfig::default_steps()),
            auto: true,
            clients: true,
            partitions: multi && r.range(0, 10) < 8,
            crashes: r.range(0, 10) < 8,
            membership: nodes >= 3 && r.range(0, 10) < 6,
            loss_permille: [0, 10, 50, 100][r.range(0, 4) as usize],
            dup_permille: [0, 0, 20, 50][r.range(0, 4) as usize],
            slow_permille: [0, 5, 20][r.range(0, 3) as usize],
            disk_fail_permille: [0, 0, 5, 20][r.range(0, 4) as usize],
            delay: (1, delay_hi),
            disk_delay: [(0, 1), (1, 5), (1, 15), (5, 40)][r.range(0, 4) as usize],
            apply_delay: [(0, 0), (0, 5), (1, 30)][r.range(0, 3) as usize],
            client_gap: [(5, 30), (10, 80), (1, 10)][r.range(0, 3) as usize],
            fault_gap: [(100, 600), (200, 1500), (50, 300)][r.range(0, 3) as usize],
            heartbeat,
            election: (min_el, max_el),
            retained: [1, 5, 20, 50, 100_000][r.range(0, 5) as usize],
            snapshot_chunk: [10, 100, 512][r.range(0, 3) as usize],
            pipelining: r.range(0, 10) < 7,
            max_pending_proposals: [5, 50][r.range(0, 2) as usize],
            preloaded_entries: r.range(0, 4) as usize,
            ..RunConfig::manual(nodes, start, seed)
        }
        .sane(profile)
    }

    fn sane(mut self, profile: Option<&str>) -> RunConfig {
        // Raft needs broadcast time well below the election timeout: keep the minimum election
        // timeout above two round trips (network both ways plus a save).
        let round_trip = 2 * self.delay.1 + self.disk_delay.1;
        if self.election.0 < 2 * round_trip {
            let grow = 2 * round_trip - self.election.0;
            self.election = (self.election.0 + grow, self.election.1 + grow);
        }
        // `SIM_PROFILE` biases the configurations toward one area.
        self.profile = profile.map(str::to_string);
        let mut r = Rng::new(self.seed ^ 0x0f11e);
        match profile {
            Some("snapshots") => {
                self.retained = [1, 2, 3][r.range(0, 3) as usize];
                self.snapshot_chunk = [5, 50][r.range(0, 2) as usize];
                self.crashes = true;
                self.membership = self.nodes >= 3;
            }
            // Saves that take up to half an election timeout (slower is a misconfiguration: a
            // check-quorum leader loses its followers while they save).
            Some("slowdisk") => self.disk_delay = (self.election.0 / 10, self.election.0 / 2),
            Some("big") => self.nodes = 7,
            Some("membership") => {
                self.nodes = [3, 5, 7][r.range(0, 3) as usize];
                self.membership = true;
                self.fault_gap = (300, 1500);
            }
            None | Some("default") => {}
            Some(other) => panic!("unknown SIM_PROFILE {other:?} (default, snapshots, slowdisk, big, membership)"),
        }
        self
    }

    /// Events per run before healing (`SIM_STEPS` overrides it).
    pub fn default_steps() -> usize {
        if cfg!(debug_assertions) {
            5_000
        } else {
            20_000
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        if !self.auto {
            return "(a scripted scenario: rerun its test)".into();
        }
        let mut env = String::new();
        if let Ok(v) = std::env::var("SIM_KNOWN_BUGS") {
            env.push_str(&format!("SIM_KNOWN_BUGS={v} "));
        }
        if let Some(p) = &self.profile {
            env.push_str(&format!("SIM_PROFILE={p} "));
        }
        if self.steps != RunConfig::default_steps() {
            env.push_str(&format!("SIM_STEPS={} ", self.steps));
        }
        format!(
            "{env}SIM_SEED={} cargo test -p skiff-driver --profile ci --test sim -- --nocapture random_clusters",
            self.seed
        )
    }

    /// Whether to stop steering around known problem `k`: `SIM_KNOWN_BUGS=all`, or a list such as
    /// `SIM_KNOWN_BUGS=4`. Only one is left, a documented limitation rather than a bug: 4, a node
    /// whose data was wiped comes back under its old id (README). By default a removed node is
    /// re-added only once every other node durably holds its removal, as operators must.
    pub fn known_bug(k: u32) -> bool {
        match std::env::var("SIM_KNOWN_BUGS") {
            Ok(v) => v == "all" || v.split(',').any(|x| x.trim().parse() == Ok(k)),
            Err(_) => false,
        }
    }

    /// A quiet cluster for scripted scenarios: no random clients, faults or membership changes.
    pub fn manual(nodes: usize, start: Start, seed: u64) -> RunConfig {
        RunConfig {
            mutation: None,
            profile: None,
            seed,
            nodes,
            start,
            steps: 0,
            auto: false,
            clients: false,
            partitions: false,
            crashes: false,
            membership: false,
            loss_permille: 0,
            dup_permille: 0,
            slow_permille: 0,
            disk_fail_permille: 0,
            delay: (1, 5),
            disk_delay: (1, 3),
            apply_delay: (0, 2),
            client_gap: (10, 50),
            fault_gap: (100, 500),
            heartbeat: 30,
            election: (150, 300),
            retained: 100_000,
            snapshot_chunk: 10,
            pipelining: true,
            max_pending_proposals: 1000,
            preloaded_entries: 0,
            election_override: Vec::new(),
            end_bound_ms: 60_000,
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "seed={} profile={:?} nodes={} start={:?} steps={} clients={} partitions={} crashes={} membership={} loss={}‰ dup={}‰ \
             slow={}‰ disk_fail={}‰ delay={:?} disk={:?} apply={:?} hb={} election={:?} retained={} snapshot_chunk={} \
             pipelining={} max_pending_proposals={} preloaded={}",
            self.seed, self.profile, self.nodes, self.start, self.steps, self.clients, self.partitions, self.crashes,
            self.membership, self.loss_permille, self.dup_permille, self.slow_permille, self.disk_fail_permille,
            self.delay, self.disk_delay, self.apply_delay, self.heartbeat, self.election, self.retained,
            self.snapshot_chunk, self.pipelining, self.max_pending_proposals, self.preloaded_entries
        )
    }
}
