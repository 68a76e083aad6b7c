//! The table of IO handed to JS and not yet called back: ids, what each is for, and deadlines.

use super::legacy::Sent;
use std::collections::BTreeMap;

/// How often timeouts of IO and commands are scanned.
const SCAN_EVERY_MS: u64 = 25;

/// What an IO op handed to JS is for: read when it calls back or times out.
pub(super) enum IoKind {
    LoadMeta,
    LastApplied,
    Save,
    Apply,
    Send { peer: String, kind: &'static str, sent: Option<Sent> },
    SnapshotRead { peer: String },
    SnapshotReset,
    SnapshotWrite,
    Quiesce,
    /// A point-in-time snapshot read opening for `peer` as stream `sid`.
    SnapshotOpen { peer: String, sid: u32 },
}

struct IoWait {
    kind: IoKind,
    /// The clock (ms) at which the op counts as lost.
    deadline: u64,
}

/// Every IO op under way, by the id JS calls back with. An id is answered at most once: a late
/// or second callback for an id that finished, timed out or was forgotten finds nothing, so a
/// plugin that calls back twice cannot finish an op twice.
/// Invariant: ids are never 0 and not reused while in `ios`; `last_scan` only grows. Ordered by
/// id, so timeouts are handled in the same order on every run (a seed replays exactly).
pub(super) struct IoTable {
    next_io: u32,
    ios: BTreeMap<u32, IoWait>,
    last_scan: u64,
}

impl Default for IoTable {
    fn default() -> Self {
        IoTable { next_io: 1, ios: BTreeMap::new(), last_scan: 0 }
    }
}

impl IoTable {
    /// Records a new op of `kind` that counts as lost at `deadline`; returns its id.
    pub(super) fn start(&mut self, kind: IoKind, deadline: u64) -> u32 {
        let io = self.next_io;
        self.next_io = self.next_io.wrapping_add(1).max(1);
        self.ios.insert(io, IoWait { kind, deadline });
        io
    }

    /// `io` called back (or is given up): what it was for, unless it already finished.
    pub(super) fn finish(&mut self, io: u32) -> Option<IoKind> {
        self.ios.remove(&io).map(|w| w.kind)
    }

    /// `io` made progress: it now counts as lost only at `deadline`.
    pub(super) fn extend(&mut self, io: u32, deadline: u64) {
        if let Some(w) = self.ios.get_mut(&io) {
            w.deadline = deadline;
        }
    }

    /// Forgets the ops of the kinds `drop` picks: their callbacks will find nothing.
    pub(super) fn forget(&mut self, drop: impl Fn(&IoKind) -> bool) {
        self.ios.retain(|_, w| !drop(&w.kind));
    }

    /// Whether timeouts are due for a scan at `now`; if so, the scan counts as done.
    pub(super) fn scan_due(&mut self, now: u64) -> bool {
        if now < self.last_scan + SCAN_EVERY_MS {
            return false;
        }
        self.last_scan = now;
        true
    }

    /// When the next scan is due.
    pub(super) fn next_scan(&self) -> u64 {
        self.last_scan + SCAN_EVERY_MS
    }

    /// The ops whose deadline passed at `now`. They stay in the table: the caller `finish`es
    /// each in turn, and skips one that handling an earlier one already forgot.
    pub(super) fn expired(&self, now: u64) -> Vec<u32> {
        self.ios.iter().filter(|(_, w)| w.deadline <= now).map(|(io, _)| *io).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_finishes_once_and_ids_skip_zero() {
        let mut t = IoTable { next_io: u32::MAX, ..IoTable::default() };
        let a = t.start(IoKind::Save, 10);
        let b = t.start(IoKind::Apply, 10);
        assert_eq!((a, b), (u32::MAX, 1));
        assert!(matches!(t.finish(a), Some(IoKind::Save)));
        assert!(t.finish(a).is_none());
        assert!(t.finish(7).is_none());
    }

    #[test]
    fn deadlines_expire_extend_and_forgotten_ops_are_gone() {
        let mut t = IoTable::default();
        let load = t.start(IoKind::LoadMeta, 10);
        let applied = t.start(IoKind::LastApplied, 10);
        let apply = t.start(IoKind::Apply, 10);
        t.extend(apply, 50);
        let mut expired = t.expired(10);
        expired.sort();
        assert_eq!(expired, vec![load, applied]);
        t.forget(|k| matches!(k, IoKind::LoadMeta | IoKind::LastApplied));
        assert!(t.expired(10).is_empty());
        assert!(t.finish(load).is_none());
        assert_eq!(t.expired(50), vec![apply]);
    }

    #[test]
    fn scans_come_every_so_often() {
        let mut t = IoTable::default();
        assert!(!t.scan_due(SCAN_EVERY_MS - 1));
        assert!(t.scan_due(SCAN_EVERY_MS));
        assert!(!t.scan_due(SCAN_EVERY_MS + 1));
        assert_eq!(t.next_scan(), 2 * SCAN_EVERY_MS);
    }
}
