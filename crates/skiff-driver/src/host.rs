//! What the driver needs from where it runs: a way to wake its host, and a clock.

use std::time::Instant;

/// How the driver reaches JS on its own (from a timer): a wake-up, after which JS calls `drain`.
pub trait Host: Send + 'static {
    fn wake(&self);
}

/// Where the driver reads the time: milliseconds since some fixed start. The binding uses
/// [`SystemClock`]; a simulation passes a clock it moves itself, so that a seed replays exactly.
pub trait Clock: Send + 'static {
    fn now_ms(&self) -> u64;
}

/// The monotonic wall clock, counted from when it was made.
pub struct SystemClock(Instant);

impl SystemClock {
    pub fn new() -> Self {
        SystemClock(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}
