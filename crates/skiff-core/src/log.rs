//! The in-memory Raft log: what compaction left of it, and its tail.

use crate::entry::Entry;
use std::collections::VecDeque;

/// The log as a node holds it.
///
/// Invariants:
/// - `entries[k].index == snapshot_index + 1 + k` (contiguous, no holes);
/// - terms never decrease along the log;
/// - everything at or below `snapshot_index` is committed and applied (compaction only removes
///   applied entries, and an installed snapshot is committed by the leader that sent it).
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    /// Index of the last entry compaction removed (`log.meta.lastIncludedIndex`).
    snapshot_index: u64,
    /// Its term (`log.meta.lastIncludedTerm`).
    snapshot_term: u64,
    entries: VecDeque<Entry>,
    /// The first index whose entry may be new or replaced since the last `take_unsaved`: every
    /// entry below it is as the last save wrote it. At most `last_index() + 1`. A log rebuilt
    /// from storage counts every entry as unsaved, since a runtime keeps no copy of them: its
    /// first save writes the whole log.
    unsaved_from: u64,
}

/// Why a log read from persistence cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("log entry {found} follows index {expected_after}: entries must be contiguous")]
    NotContiguous { expected_after: u64, found: u64 },
    #[error("log entry {index} has term {term}, lower than the term before it ({previous})")]
    TermDecreases { index: u64, term: u64, previous: u64 },
}

impl RaftLog {
    pub fn new() -> RaftLog {
        RaftLog { unsaved_from: 1, ..RaftLog::default() }
    }

    /// The first index a save must write (see `unsaved_from`), without starting a new save.
    pub fn unsaved_from(&self) -> u64 {
        self.unsaved_from.max(self.first_index())
    }

    /// Starts a save: returns the first index it must write, and counts everything up to the
    /// last entry as saved from now on.
    pub fn take_unsaved(&mut self) -> u64 {
        let from = self.unsaved_from();
        self.unsaved_from = self.last_index() + 1;
        from
    }

    /// Rebuilds a log from persisted parts, checking its invariants.
    pub fn restore(snapshot_index: u64, snapshot_term: u64, entries: Vec<Entry>) -> Result<RaftLog, LogError> {
        let mut log = RaftLog {
            snapshot_index,
            snapshot_term,
            entries: VecDeque::with_capacity(entries.len()),
            unsaved_from: snapshot_index + 1,
        };
        for e in entries {
            log.check_next(&e)?;
            log.entries.push_back(e);
        }
        Ok(log)
    }

    fn check_next(&self, e: &Entry) -> Result<(), LogError> {
        if e.index != self.last_index() + 1 {
            return Err(LogError::NotContiguous { expected_after: self.last_index(), found: e.index });
        }
        if e.term < self.last_term() {
            return Err(LogError::TermDecreases { index: e.index, term: e.term, previous: self.last_term() });
        }
        Ok(())
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> u64 {
        self.snapshot_term
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The term of the entry at `index`, if this log still knows it.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Entries in `lo..=hi` that are still in the log.
    pub fn range(&self, lo: u64, hi: u64) -> impl Iterator<Item = &Entry> {
        let lo = lo.max(self.first_index());
        let hi = hi.min(self.last_index());
        let (a, b) = if lo > hi {
            (0, 0)
        } else {
            ((lo - self.first_index()) as usize, (hi - self.first_index() + 1) as usize)
        };
        self.entries.range(a..b)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Appends one entry at `last_index() + 1`. The caller guarantees the invariants; a
    /// violation is a bug in the core, reported rather than silently accepted.
    pub fn append(&mut self, e: Entry) -> Result<(), LogError> {
        self.check_next(&e)?;
        self.entries.push_back(e);
        Ok(())
    }

    /// Removes every entry at `index` and after it.
    pub fn truncate_from(&mut self, index: u64) {
        self.unsaved_from = self.unsaved_from.min(index);
        if index <= self.snapshot_index {
            self.entries.clear();
            return;
        }
        let keep = (index - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
    }

    /// Drops entries up to and including `index` (which must be applied), remembering its term.
    pub fn compact_to(&mut self, index: u64) {
        if index <= self.snapshot_index {
            return;
        }
        let index = index.min(self.last_index());
        let term = self.term(index).unwrap_or(self.snapshot_term);
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log with an installed snapshot's position. Entries after the snapshot
    /// are kept when they agree with it (Raft §7: "if existing log entry has same index and term as
    /// snapshot's last included entry, retain log entries following it").
    pub fn install_snapshot(&mut self, index: u64, term: u64) {
        if index < self.snapshot_index {
            // Older than what we have: nothing to do (the log never moves backwards).
            return;
        }
        if self.term(index) == Some(term) {
            self.compact_to(index);
        } else {
            self.entries.clear();
            self.snapshot_index = index;
            self.snapshot_term = term;
            // The entries a save wrote after the snapshot are gone.
            self.unsaved_from = self.unsaved_from.min(index + 1);
        }
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date as ours?
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of the run of entries with the same term as the entry at `index`
    /// (the follower's hint in a rejection, so the leader can skip a whole term at once).
    pub fn first_index_of_term_at(&self, index: u64) -> u64 {
        let Some(term) = self.term(index) else { return index };
        let mut i = index;
        while i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index whose entry has `term`, if any (the leader's side of the hint).
    pub fn last_index_of_term(&self, term: u64) -> Option<u64> {
        self.entries.iter().rev().find(|e| e.term == term).map(|e| e.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EntryKind, Json};

    fn e(index: u64, term: u64) -> Entry {
        Entry { index, term, kind: EntryKind::Command(Json::from_value(&index)), uuid: String::new() }
    }

    #[test]
    fn restore_checks_invariants() {
        assert!(RaftLog::restore(0, 0, vec![e(1, 1), e(2, 1)]).is_ok());
        assert!(matches!(RaftLog::restore(0, 0, vec![e(2, 1)]), Err(LogError::NotContiguous { .. })));
        assert!(matches!(RaftLog::restore(0, 0, vec![e(1, 2), e(2, 1)]), Err(LogError::TermDecreases { .. })));
        assert!(RaftLog::restore(5, 2, vec![e(6, 2)]).is_ok());
    }

    #[test]
    fn compaction_keeps_indexes_and_terms() {
        let mut log = RaftLog::restore(0, 0, (1..=10).map(|i| e(i, 1 + i / 4)).collect()).unwrap();
        log.compact_to(5);
        assert_eq!(log.first_index(), 6);
        assert_eq!(log.term(5), Some(2));
        assert_eq!(log.term(4), None);
        assert_eq!(log.last_index(), 10);
        assert_eq!(log.range(1, 7).map(|x| x.index).collect::<Vec<_>>(), vec![6, 7]);
        log.truncate_from(8);
        assert_eq!(log.last_index(), 7);
        log.install_snapshot(20, 5);
        assert_eq!((log.first_index(), log.last_index(), log.last_term()), (21, 20, 5));
    }

    #[test]
    fn unsaved_marks_the_first_new_or_replaced_entry() {
        let mut log = RaftLog::restore(0, 0, (1..=5).map(|i| e(i, 1)).collect()).unwrap();
        assert_eq!(log.take_unsaved(), 1, "a restored log is written whole by the first save");
        assert_eq!(log.unsaved_from(), 6);
        log.append(e(6, 1)).unwrap();
        assert_eq!(log.take_unsaved(), 6);
        log.truncate_from(4);
        log.append(e(4, 2)).unwrap();
        log.append(e(5, 2)).unwrap();
        assert_eq!(log.take_unsaved(), 4, "a replaced entry is unsaved");
        log.compact_to(3);
        assert_eq!(log.unsaved_from(), 6);
        log.install_snapshot(9, 3);
        assert_eq!(log.unsaved_from(), 10, "nothing after the snapshot is left to keep");
        let mut fresh = RaftLog::new();
        fresh.append(e(1, 1)).unwrap();
        assert_eq!(fresh.take_unsaved(), 1);
    }

    #[test]
    fn conflict_hints() {
        let log = RaftLog::restore(0, 0, vec![e(1, 1), e(2, 2), e(3, 2), e(4, 2), e(5, 3)]).unwrap();
        assert_eq!(log.first_index_of_term_at(4), 2);
        assert_eq!(log.last_index_of_term(2), Some(4));
        assert_eq!(log.last_index_of_term(7), None);
        assert!(log.is_up_to_date(5, 3));
        assert!(!log.is_up_to_date(9, 2));
    }
}
