//! The user's `read()` calls waiting for the core (see `skiff_core::Raft::read_index`).
//!
//! A read's request id is its id in the core. A read the core failed because its leader changed
//! is parked and asked again once a leader is known, until its deadline: the user only hears
//! `ENOTLEADER` when no leader is known at all.

use skiff_core::MAX_PENDING_READS;
use std::collections::BTreeMap;

/// One read waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRead {
    pub lease: bool,
    pub deadline: u64,
    pub timeout_ms: u64,
    /// Not in the core now: asked again once a leader is known.
    pub parked: bool,
}

/// Reads by request id. Invariant: at most `MAX_PENDING_READS`, so neither this map nor the
/// core's grows past it.
#[derive(Debug, Default)]
pub struct Reads {
    pending: BTreeMap<u32, PendingRead>,
}

impl Reads {
    /// Whether another read may wait.
    pub fn has_room(&self) -> bool {
        self.pending.len() < MAX_PENDING_READS
    }

    pub fn track(&mut self, req: u32, lease: bool, deadline: u64, timeout_ms: u64) {
        self.pending.insert(req, PendingRead { lease, deadline, timeout_ms, parked: false });
    }

    /// Forgets a read (answered); `None` if it was not waiting (answered already, or expired).
    pub fn finish(&mut self, req: u32) -> Option<PendingRead> {
        self.pending.remove(&req)
    }

    pub fn park(&mut self, req: u32) {
        if let Some(r) = self.pending.get_mut(&req) {
            r.parked = true;
        }
    }

    /// The parked reads, unparked: the caller asks the core again.
    pub fn unpark_all(&mut self) -> Vec<(u32, bool)> {
        self.pending
            .iter_mut()
            .filter(|(_, r)| r.parked)
            .map(|(req, r)| {
                r.parked = false;
                (*req, r.lease)
            })
            .collect()
    }

    pub fn any_parked(&self) -> bool {
        self.pending.values().any(|r| r.parked)
    }

    /// Forgets and returns the reads whose deadline passed, with their timeouts.
    pub fn expire(&mut self, now: u64) -> Vec<(u32, u64)> {
        let due: Vec<(u32, u64)> =
            self.pending.iter().filter(|(_, r)| r.deadline <= now).map(|(req, r)| (*req, r.timeout_ms)).collect();
        for (req, _) in &due {
            self.pending.remove(req);
        }
        due
    }

    /// The earliest deadline, for the timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|r| r.deadline).min()
    }

    pub fn clear(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.pending).into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_answered_once_and_expires_at_its_deadline() {
        let mut r = Reads::default();
        r.track(1, false, 100, 100);
        r.track(2, true, 50, 50);
        assert_eq!(r.next_deadline(), Some(50));
        assert_eq!(r.expire(60), vec![(2, 50)]);
        assert!(r.finish(2).is_none(), "an expired read is not answered again");
        r.park(1);
        assert!(r.any_parked());
        assert_eq!(r.unpark_all(), vec![(1, false)]);
        assert!(!r.any_parked());
        assert!(r.finish(1).is_some());
        assert!(r.finish(1).is_none());
    }

    #[test]
    fn room_is_bounded() {
        let mut r = Reads::default();
        for req in 0..MAX_PENDING_READS as u32 {
            r.track(req, false, 10, 10);
        }
        assert!(!r.has_room());
        assert_eq!(r.clear().len(), MAX_PENDING_READS);
        assert!(r.has_room());
    }
}
