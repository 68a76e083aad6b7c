//! Deterministic simulation of whole skiff-core clusters under faults.
//!
//! `random_clusters` runs many seeds (`SIM_SEEDS`, default 500; `SIM_SEED_BASE` to shift them),
//! each a randomized configuration (1 to 7 nodes, bootstrap-and-join or restart from an
//! original-format persisted state, loss, duplication, reordering, partitions, crashes with
//! slow disks, membership changes). Replay one with
//! `SIM_SEED=<n> cargo test -p skiff-core --release --test sim -- --nocapture random_clusters`
//! (add `SIM_TRACE=all` to print every event). The other tests are scripted scenarios.

#[path = "sim/harness.rs"]
mod harness;

use harness::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

fn run_seed(seed: u64, trace: bool) -> (Stats, usize, usize) {
    let mut sim = Sim::new_traced(RunConfig::random(seed), trace);
    let r = catch_unwind(AssertUnwindSafe(|| sim.run()));
    if let Err(e) = r {
        if trace {
            eprintln!("---- last events of seed {seed} ----\n{}\n---- end of trace ----", sim.trace_tail());
        }
        std::panic::resume_unwind(e);
    }
    (sim.stats.clone(), sim.steps, sim.acked.len())
}

#[test]
fn random_clusters() {
    if let Some(seed) = env_u64("SIM_SEED") {
        eprintln!("replaying {}", RunConfig::random(seed).summary());
        let (stats, steps, acked) = run_seed(seed, true);
        eprintln!("seed {seed} ok: {steps} steps, {acked} acknowledged, {stats:?}");
        return;
    }
    let count = env_u64("SIM_SEEDS").unwrap_or(500);
    let base = env_u64("SIM_SEED_BASE").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(count.max(1) as usize);
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let totals: Mutex<(u64, u64, u64, u64, u64, u64)> = Mutex::new(Default::default());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as u64;
                if k >= count {
                    break;
                }
                let seed = base + k;
                match catch_unwind(|| run_seed(seed, false)) {
                    Ok((st, steps, acked)) => {
                        let mut t = totals.lock().unwrap();
                        t.0 += steps as u64;
                        t.1 += acked as u64;
                        t.2 += st.crashes;
                        t.3 += st.partitions;
                        t.4 += st.removals;
                        t.5 += st.elections;
                    }
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.lock().unwrap().push((seed, msg));
                    }
                }
            });
        }
    });
    let t = totals.into_inner().unwrap();
    eprintln!(
        "simulated {count} seeds in {:.1?} on {threads} threads: {} events, {} acknowledged proposals, {} crashes, {} partitions, {} removals, {} elections",
        started.elapsed(), t.0, t.1, t.2, t.3, t.4, t.5
    );
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    if let Some((seed, _)) = failures.first() {
        // Deterministic: run the first failure again with a trace.
        let _ = catch_unwind(|| run_seed(*seed, true));
        let list: Vec<String> = failures.iter().map(|(s, m)| format!("seed {s}: {}", m.lines().next().unwrap_or(""))).collect();
        panic!(
            "{} of {count} seeds failed:\n{}\nreplay: SIM_SEED={seed} cargo test -p skiff-core --release --test sim -- --nocapture random_clusters",
            failures.len(),
            list.join("\n")
        );
    }
}
