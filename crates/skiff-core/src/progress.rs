//! What a leader knows about one follower's log.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// We do not know where the follower's log matches ours: send one AppendEntries at a time
    /// and move `next_index` back on each rejection.
    Probe,
    /// The follower is in step: stream AppendEntries optimistically, several in flight.
    Replicate,
    /// The follower needs entries that compaction removed: a snapshot transfer is under way.
    Snapshot,
}

/// Replication progress of one follower, kept by the leader.
///
/// Invariants: `match_index < next_index`; every index in `inflight` is above `match_index` and
/// the deque is increasing (it holds the last index of each AppendEntries still unanswered).
#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    pub inflight: VecDeque<u64>,
    /// In `Probe`: a probe is out and unanswered, so wait for its answer or the next heartbeat.
    pub probe_sent: bool,
    /// The follower's last reported `lastApplied`.
    pub applied: u64,
    /// Logical time of the last answer from this follower, for flow-control recovery and
    /// check-quorum.
    pub last_heard: u64,
    /// Logical time of the last answer that took what we sent (a follower in step with us), for
    /// the leader lease: a follower that answers but cannot take anything (it waits for a
    /// snapshot we cannot give) does not make a leader worth protecting.
    pub last_ack: u64,
    /// Logical time the current in-flight window was last advanced.
    pub last_progress: u64,
    /// The snapshot index being sent, in `Snapshot` state.
    pub pending_snapshot: u64,
    /// The index of the last transfer to this follower that stopped unfinished (0: none, or the
    /// follower has since caught up). The runtime may keep such a transfer's point-in-time read
    /// open and resume it, which it can only do while the log still holds the entries after it.
    pub resumable_snapshot: u64,
}

impl Progress {
    pub fn new(next_index: u64, now: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            applied: 0,
            last_heard: now,
            last_ack: now,
            last_progress: now,
            pending_snapshot: 0,
            resumable_snapshot: 0,
        }
    }

    /// The index from which this follower can go on from the log, if the leader keeps the
    /// entries after it: where its log matches ours (in step, or probed after a failed send
    /// once something matched), or the index of the snapshot it is being sent or may resume.
    /// `None`: nothing it holds or is about to hold is known (a new follower being probed).
    pub fn resumes_from(&self) -> Option<u64> {
        let index = match (self.state, self.snapshot_in_flight()) {
            (_, Some(index)) => index,
            (ProgressState::Replicate, None) => self.match_index,
            (ProgressState::Snapshot | ProgressState::Probe, None) => self.match_index.max(self.resumable_snapshot),
        };
        (index > 0).then_some(index)
    }

    /// The index of the snapshot being sent to this follower, while a transfer runs (in
    /// `Snapshot` state once one was started; that state alone may still wait for one).
    pub fn snapshot_in_flight(&self) -> Option<u64> {
        (self.state == ProgressState::Snapshot && self.pending_snapshot != 0).then_some(self.pending_snapshot)
    }

    pub fn become_probe(&mut self) {
        if let Some(index) = self.snapshot_in_flight() {
            self.resumable_snapshot = index;
        }
        self.state = ProgressState::Probe;
        self.inflight.clear();
        self.probe_sent = false;
        self.pending_snapshot = 0;
        if self.next_index <= self.match_index {
            self.next_index = self.match_index + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.inflight.clear();
        self.probe_sent = false;
        self.resumable_snapshot = 0;
        self.next_index = self.match_index + 1;
    }

    pub fn become_snapshot(&mut self, index: u64) {
        self.state = ProgressState::Snapshot;
        self.inflight.clear();
        self.probe_sent = false;
        self.pending_snapshot = index;
    }

    /// Records a successful answer. Returns whether `match_index` moved.
    pub fn on_success(&mut self, match_index: u64, now: u64) -> bool {
        self.last_heard = now;
        self.last_ack = now;
        let moved = match_index > self.match_index;
        if moved {
            self.match_index = match_index;
            self.last_progress = now;
        }
        if self.next_index <= self.match_index {
            self.next_index = self.match_index + 1;
        }
        while self.inflight.front().is_some_and(|&i| i <= self.match_index) {
            self.inflight.pop_front();
        }
        match self.state {
            ProgressState::Probe => self.become_replicate(),
            ProgressState::Replicate | ProgressState::Snapshot => {}
        }
        moved
    }

    /// Whether a window of `max_inflight` messages is full.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= max_inflight,
            ProgressState::Snapshot => true,
        }
    }

    /// Notes an AppendEntries whose last entry is `last`.
    pub fn on_sent(&mut self, last: u64, count: usize, now: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if count > 0 {
                    if self.inflight.is_empty() {
                        self.last_progress = now;
                    }
                    self.inflight.push_back(last);
                    self.next_index = last + 1;
                }
            }
            ProgressState::Snapshot => {}
        }
    }
}
