//! The apply pipeline: committed entries wait here until the state machine takes them, one
//! `apply` batch at a time, and progress comes back from the wrapper.

use skiff_core::{Entry, EntryKind, Json};
use std::collections::VecDeque;

/// Most entries handed to JS in one `apply` op.
const APPLY_BATCH: usize = 1024;
/// Back-off before retrying a failed batch.
const RETRY_MS: u64 = 100;

/// An `apply` batch under way.
struct Applying {
    io: u32,
    /// Indexes of the first and last entry of the batch.
    first: u64,
    last: u64,
}

/// One entry of a batch: index, term and its command (none for internal entries).
pub(super) type BatchItem = (u64, u64, Option<Json>);

/// Committed entries not yet applied.
///
/// Invariant: `queue` holds committed entries in index order, each once, none applied (the
/// batch under way, if any, is at its front: entries leave only as progress reports them
/// applied). At most one batch is under way; `retry_at` is set after a failed one.
#[derive(Default)]
pub(super) struct ApplyQueue {
    queue: VecDeque<Entry>,
    applying: Option<Applying>,
    retry_at: Option<u64>,
}

impl ApplyQueue {
    pub(super) fn extend(&mut self, committed: Vec<Entry>) {
        self.queue.extend(committed);
    }

    /// Nothing waits and nothing is under way.
    pub(super) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.applying.is_none()
    }

    pub(super) fn is_applying(&self) -> bool {
        self.applying.is_some()
    }

    /// The highest index the state machine has been handed (queued or in a batch).
    pub(super) fn handed(&self) -> u64 {
        self.queue.back().map(|e| e.index).max(self.applying.as_ref().map(|a| a.last)).unwrap_or(0)
    }

    /// A snapshot replaces the state machine: entries still queued are older than it.
    pub(super) fn clear(&mut self) {
        self.queue.clear();
        self.retry_at = None;
    }

    /// The state machine is the snapshot at `index`: drop the entries it holds.
    pub(super) fn drop_upto(&mut self, index: u64) {
        self.queue.retain(|e| e.index > index);
    }

    /// The next batch, if one may start now: (index, term, command) of each entry. Start it
    /// with `started`.
    pub(super) fn next_batch(&mut self, now: u64) -> Option<Vec<BatchItem>> {
        if self.applying.is_some() || self.queue.is_empty() || self.retry_at.is_some_and(|t| t > now) {
            return None;
        }
        self.retry_at = None;
        let items = self
            .queue
            .iter()
            .take(APPLY_BATCH)
            .map(|e| match &e.kind {
                EntryKind::Command(c) => (e.index, e.term, Some(c.clone())),
                _ => (e.index, e.term, None),
            })
            .collect();
        Some(items)
    }

    pub(super) fn started(&mut self, io: u32, first: u64, last: u64) {
        self.applying = Some(Applying { io, first, last });
    }

    /// Whether `io` is the batch under way.
    pub(super) fn is_current(&self, io: u32) -> bool {
        self.applying.as_ref().is_some_and(|a| a.io == io)
    }

    /// Batch `io` called back: its first index and how far it got (the last index applied;
    /// `reported` is what a failed batch said it finished). None if `io` is not the batch under
    /// way. After a failure the rest is retried after a pause.
    pub(super) fn finished(&mut self, io: u32, failed: bool, reported: Option<u64>, now: u64) -> Option<(u64, u64)> {
        let a = self.applying.take_if(|a| a.io == io)?;
        let done_upto = match (failed, reported) {
            (false, _) => a.last,
            (true, Some(i)) if i >= a.first && i <= a.last => i,
            (true, _) => a.first.saturating_sub(1),
        };
        if failed {
            self.retry_at = Some(now + RETRY_MS);
        }
        Some((a.first, done_upto))
    }

    /// Batch `io` timed out or was stopped (`quiesce`): forget it; its rest is re-sent.
    pub(super) fn forget(&mut self, io: u32) -> bool {
        self.applying.take_if(|a| a.io == io).is_some()
    }

    /// The io of the batch under way, stopping it.
    pub(super) fn stop(&mut self) -> Option<u32> {
        self.applying.take().map(|a| a.io)
    }

    /// The state machine applied everything up to `index`: the (index, term) of the entries
    /// that leaves the queue.
    pub(super) fn applied_upto(&mut self, index: u64) -> Vec<(u64, u64)> {
        let mut applied = Vec::new();
        while let Some(e) = self.queue.front() {
            if e.index > index {
                break;
            }
            applied.push((e.index, e.term));
            self.queue.pop_front();
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(lo: u64, hi: u64) -> Vec<Entry> {
        (lo..=hi).map(|i| Entry { index: i, term: 1, kind: EntryKind::Command(Json::from_value(&i)), uuid: String::new() }).collect()
    }

    #[test]
    fn one_bounded_batch_at_a_time() {
        let mut q = ApplyQueue::default();
        q.extend(entries(1, APPLY_BATCH as u64 + 5));
        let batch = q.next_batch(0).unwrap();
        assert_eq!(batch.len(), APPLY_BATCH);
        q.started(7, 1, APPLY_BATCH as u64);
        assert!(q.next_batch(0).is_none(), "one batch at a time");
        assert_eq!(q.finished(6, false, None, 0), None, "a stale batch is ignored");
        assert_eq!(q.finished(7, false, None, 0), Some((1, APPLY_BATCH as u64)));
        assert_eq!(q.applied_upto(APPLY_BATCH as u64).len(), APPLY_BATCH);
        assert_eq!(q.next_batch(0).unwrap().first().map(|i| i.0), Some(APPLY_BATCH as u64 + 1));
    }

    #[test]
    fn a_failed_batch_resumes_after_what_it_applied_after_a_pause() {
        let mut q = ApplyQueue::default();
        q.extend(entries(1, 10));
        q.next_batch(0).unwrap();
        q.started(1, 1, 10);
        assert_eq!(q.finished(1, true, Some(4), 50), Some((1, 4)));
        q.applied_upto(4);
        assert!(q.next_batch(50 + RETRY_MS - 1).is_none());
        let batch = q.next_batch(50 + RETRY_MS).unwrap();
        assert_eq!(batch.first().map(|i| i.0), Some(5));
        q.started(2, 5, 10);
        assert_eq!(q.finished(2, true, Some(99), 0), Some((5, 4)), "a report outside the batch counts as nothing");
    }

    #[test]
    fn progress_and_snapshots_drop_entries() {
        let mut q = ApplyQueue::default();
        q.extend(entries(1, 10));
        assert_eq!(q.handed(), 10);
        assert_eq!(q.applied_upto(3), vec![(1, 1), (2, 1), (3, 1)]);
        q.drop_upto(6);
        assert_eq!(q.next_batch(0).unwrap().first().map(|i| i.0), Some(7));
        q.started(3, 7, 10);
        assert!(!q.forget(2));
        assert!(q.forget(3));
        q.clear();
        assert!(q.is_idle());
    }
}
