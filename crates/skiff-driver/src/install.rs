//! Follower side of snapshots: the phases of one install, from the durable mark to the last chunk written.

use skiff_core::Json;

#[derive(Debug, PartialEq, Eq)]
enum InstallPhase {
    /// Waiting for the save that records the install mark.
    Marking,
    /// `removeAllState` under way, as IO `io`.
    Resetting { io: u32 },
    /// Waiting for the next chunk.
    Idle,
    /// A chunk is being written (`seq`) as IO `io`, with its reply token.
    Writing { seq: u64, token: Option<u64>, done: bool, io: u32 },
}

impl InstallPhase {
    /// The IO this phase waits for, if any: only its completion moves the install on (a late
    /// one of an install abandoned since names another IO).
    fn io(&self) -> Option<u32> {
        match *self {
            InstallPhase::Resetting { io } | InstallPhase::Writing { io, .. } => Some(io),
            InstallPhase::Marking | InstallPhase::Idle => None,
        }
    }
}

/// A chunk as the driver hands it on: its reply token, its data, and whether it ends the stream.
pub(super) type Chunk = (Option<u64>, Option<Json>, bool);

/// What tells one transfer from every other: the leader, its term, its transfer id, and the
/// snapshot's index and term. Every chunk after the first must carry the same, so that a resumed
/// install never mixes chunks of two transfers (two reads of the same state may be cut apart
/// differently) or of two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TransferKey {
    pub(super) from: String,
    /// The leader's term (a leader's transfer ids are counted per term).
    pub(super) term: u64,
    pub(super) transfer: u64,
    pub(super) index: u64,
    pub(super) snapshot_term: u64,
}

impl TransferKey {
    /// The key of the transfer that chunk `c` from `from` belongs to.
    pub(super) fn of(from: &str, c: &skiff_core::message::InstallSnapshot) -> TransferKey {
        TransferKey {
            from: from.to_string(),
            term: c.term,
            transfer: c.transfer,
            index: c.last_included_index,
            snapshot_term: c.last_included_term,
        }
    }
}

/// Follower: a snapshot being written into the state machine. A transfer that stops midway
/// (the leader lost its connection or timed out) stays here, at `next_seq`, until the same
/// transfer resumes, another begins, or writing fails.
struct Incoming {
    key: TransferKey,
    sid: u32,
    next_seq: u64,
    phase: InstallPhase,
    /// The first chunk, held until the state machine has been cleared.
    first: Option<Chunk>,
}

impl Incoming {
    /// The reply token of the chunk this transfer holds unanswered (the first, waiting for the
    /// reset, or the one being written), if any.
    fn held_token(&self) -> Option<Option<u64>> {
        match self.phase {
            InstallPhase::Writing { token, .. } => Some(token),
            _ => self.first.as_ref().map(|f| f.0),
        }
    }
}

/// An install that ended unfinished: its write stream to abort, and the chunk it left unanswered.
pub(super) struct Aborted {
    pub(super) sid: u32,
    pub(super) from: String,
    /// The reply token of the chunk held unanswered, if one was (see `Incoming::held_token`).
    pub(super) held: Option<Option<u64>>,
    pub(super) next_seq: u64,
}

/// A chunk that finished writing.
pub(super) struct Written {
    pub(super) from: String,
    pub(super) index: u64,
    pub(super) seq: u64,
    pub(super) token: Option<u64>,
    /// It ended the stream: the install is over and the state machine is the snapshot.
    pub(super) done: bool,
}

/// Where a chunk after the first stands against the install under way.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fit {
    NoTransfer,
    /// It belongs to another leader's or another snapshot's transfer.
    Other,
    /// A chunk already written, sent again.
    Duplicate,
    /// Not the next chunk, or one came while the previous is still being written: the install
    /// waits for chunk `next_seq`.
    OutOfOrder { next_seq: u64 },
    /// The next chunk: write it.
    Next,
}

/// The one snapshot this follower installs at a time. The driver starts it on a first chunk,
/// persists the mark, clears the state machine and writes each chunk; this keeps the phase so
/// that each step happens once, in order, and only for the transfer it belongs to.
/// Invariant: at most one install; its phase only moves Marking → Resetting → Idle ⇄ Writing,
/// and `first` is held only until the reset finished.
#[derive(Default)]
pub(super) struct Install {
    current: Option<Incoming>,
}

impl Install {
    /// Whether an install is under way (the state machine must stay still).
    pub(super) fn is_active(&self) -> bool {
        self.current.is_some()
    }

    /// Starts installing the transfer `key` through write stream `sid`; `first` waits until the
    /// install mark is durable and the state machine cleared.
    pub(super) fn begin(&mut self, key: TransferKey, sid: u32, first: Chunk) {
        self.current = Some(Incoming { key, sid, next_seq: 0, phase: InstallPhase::Marking, first: Some(first) });
    }

    /// Ends the install under way, unfinished.
    pub(super) fn abort(&mut self) -> Option<Aborted> {
        let inc = self.current.take()?;
        Some(Aborted { sid: inc.sid, held: inc.held_token(), from: inc.key.from, next_seq: inc.next_seq })
    }

    /// The stream of the install under way if it waits for exactly the mark of `index` to be
    /// durable (then the state machine may be cleared: see `resetting`).
    pub(super) fn awaits_mark(&self, index: u64) -> Option<u32> {
        self.current.as_ref().filter(|inc| inc.key.index == index && inc.phase == InstallPhase::Marking).map(|inc| inc.sid)
    }

    /// The mark is durable and IO `io` clears the state machine (nothing changes unless the
    /// install under way was waiting for its mark).
    pub(super) fn resetting(&mut self, io: u32) {
        if let Some(inc) = self.current.as_mut().filter(|inc| inc.phase == InstallPhase::Marking) {
            inc.phase = InstallPhase::Resetting { io };
        }
    }

    /// Whether IO `io` is the reset or write the install under way waits for. Any other such
    /// completion is of an install abandoned since, and must not move this one on.
    pub(super) fn owns(&self, io: u32) -> bool {
        self.current.as_ref().is_some_and(|inc| inc.phase.io() == Some(io))
    }

    /// The state machine was cleared: the first chunk to write, if the install waited for that.
    pub(super) fn reset(&mut self) -> Option<Chunk> {
        let inc = self.current.as_mut()?;
        if !matches!(inc.phase, InstallPhase::Resetting { .. }) {
            return None;
        }
        inc.phase = InstallPhase::Idle;
        inc.first.take()
    }

    /// Where chunk `seq` of the transfer `key` stands.
    pub(super) fn fit(&self, key: &TransferKey, seq: u64) -> Fit {
        let Some(inc) = self.current.as_ref() else { return Fit::NoTransfer };
        if inc.key != *key {
            Fit::Other
        } else if seq < inc.next_seq {
            Fit::Duplicate
        } else if seq != inc.next_seq || inc.phase != InstallPhase::Idle {
            Fit::OutOfOrder { next_seq: inc.next_seq }
        } else {
            Fit::Next
        }
    }

    /// The stream and the snapshot index a chunk of the install under way is written with.
    pub(super) fn target(&self) -> Option<(u32, u64)> {
        self.current.as_ref().map(|inc| (inc.sid, inc.key.index))
    }

    /// Chunk `seq` goes to the state machine as IO `io`.
    pub(super) fn write(&mut self, seq: u64, token: Option<u64>, done: bool, io: u32) {
        if let Some(inc) = self.current.as_mut() {
            inc.phase = InstallPhase::Writing { seq, token, done, io };
        }
    }

    /// The chunk being written is written; the install ends with it if it was the last.
    pub(super) fn written(&mut self) -> Option<Written> {
        let inc = self.current.as_mut()?;
        let InstallPhase::Writing { seq, token, done, .. } = inc.phase else { return None };
        let (from, index) = (inc.key.from.clone(), inc.key.index);
        inc.next_seq = seq + 1;
        inc.phase = InstallPhase::Idle;
        if done {
            self.current = None;
        }
        Some(Written { from, index, seq, token, done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(from: &str, index: u64) -> TransferKey {
        TransferKey { from: from.into(), term: 3, transfer: 1, index, snapshot_term: 2 }
    }

    /// An install of `key("a", 5)` through stream 9 that wrote chunks 0..n.
    fn written_up_to(n: u64) -> Install {
        let mut i = Install::default();
        i.begin(key("a", 5), 9, (Some(1), None, false));
        i.resetting(100);
        i.reset();
        for seq in 0..n {
            i.write(seq, Some(seq + 1), false, 101 + seq as u32);
            i.written();
        }
        i
    }

    #[test]
    fn an_install_goes_through_its_phases_in_order() {
        let mut i = Install::default();
        assert_eq!(i.fit(&key("a", 5), 1), Fit::NoTransfer);
        i.begin(key("a", 5), 9, (Some(1), None, false));
        assert!(i.is_active());
        // nothing is written before the mark is durable and the state machine cleared
        assert!(i.reset().is_none());
        assert_eq!(i.fit(&key("a", 5), 0), Fit::OutOfOrder { next_seq: 0 });
        assert_eq!(i.awaits_mark(4), None);
        assert_eq!(i.awaits_mark(5), Some(9));
        i.resetting(20);
        assert_eq!(i.awaits_mark(5), None);
        i.resetting(21);
        assert!(i.owns(20) && !i.owns(21), "only the install's first reset counts");
        assert_eq!(i.reset().map(|c| c.0), Some(Some(1)));
        assert!(i.reset().is_none());
        assert!(!i.owns(20));
        assert_eq!(i.target(), Some((9, 5)));
        i.write(0, Some(1), false, 22);
        assert!(i.owns(22));
        assert_eq!(i.fit(&key("a", 5), 1), Fit::OutOfOrder { next_seq: 0 });
        let w = i.written().expect("written");
        assert_eq!((w.seq, w.token, w.done), (0, Some(1), false));
        assert!(i.written().is_none());
        assert_eq!(i.fit(&key("a", 5), 0), Fit::Duplicate);
        assert_eq!(i.fit(&key("b", 5), 1), Fit::Other);
        assert_eq!(i.fit(&key("a", 6), 1), Fit::Other);
        assert_eq!(i.fit(&key("a", 5), 2), Fit::OutOfOrder { next_seq: 1 });
        assert_eq!(i.fit(&key("a", 5), 1), Fit::Next);
        i.write(1, Some(2), true, 23);
        let w = i.written().expect("written");
        assert!(w.done);
        assert!(!i.is_active());
    }

    #[test]
    fn a_resumed_install_takes_only_chunks_of_its_own_transfer() {
        let i = written_up_to(4);
        let k = key("a", 5);
        // the same transfer resumes: the chunk it had in flight is the next, or was written
        assert_eq!(i.fit(&k, 4), Fit::Next);
        assert_eq!(i.fit(&k, 3), Fit::Duplicate);
        assert_eq!(i.fit(&k, 5), Fit::OutOfOrder { next_seq: 4 });
        // a chunk that claims the same position but differs in anything else is of another
        // transfer: another leader, term, transfer, or snapshot index or term
        let others = [
            TransferKey { from: "b".into(), ..k.clone() },
            TransferKey { term: 4, ..k.clone() },
            TransferKey { transfer: 2, ..k.clone() },
            TransferKey { index: 6, ..k.clone() },
            TransferKey { snapshot_term: 1, ..k.clone() },
        ];
        for other in others {
            assert_eq!(i.fit(&other, 4), Fit::Other, "{other:?}");
        }
    }

    #[test]
    fn a_resent_chunk_still_being_written_says_where_the_install_stands() {
        let mut i = written_up_to(2);
        i.write(2, Some(3), false, 30);
        assert_eq!(i.fit(&key("a", 5), 2), Fit::OutOfOrder { next_seq: 2 });
        i.written();
        assert_eq!(i.fit(&key("a", 5), 2), Fit::Duplicate);
    }

    #[test]
    fn an_aborted_install_names_the_chunk_it_left_unanswered() {
        let mut i = Install::default();
        i.begin(key("a", 5), 9, (Some(1), None, false));
        let a = i.abort().expect("under way");
        assert_eq!((a.sid, a.from.as_str(), a.held, a.next_seq), (9, "a", Some(Some(1)), 0));
        assert!(i.abort().is_none());
        i.begin(key("a", 5), 10, (None, None, false));
        i.resetting(40);
        i.reset();
        i.write(0, None, false, 41);
        i.written();
        // nothing held between chunks
        assert_eq!(i.abort().map(|a| a.held), Some(None));
    }
}
