//! Leader side of snapshots: which followers want one, and the read stream open for each.

use skiff_core::SnapshotMeta;
use std::collections::{BTreeMap, BTreeSet};

/// Budget of one `InstallSnapshot` message: chunks of the read stream, and their JSON size.
pub(super) const SNAPSHOT_CHUNKS: usize = 512;
pub(super) const SNAPSHOT_BYTES: usize = 256 * 1024;

/// Leader: a snapshot streaming to one follower. While any is open, applying is held back, so
/// every read stream shows the state machine exactly at `meta.index` (the plugin API promises no
/// point-in-time read, so the engine keeps the state still instead).
struct Outgoing {
    sid: u32,
    meta: SnapshotMeta,
    /// Sequence number of the next chunk to send.
    seq: u64,
    done_sent: bool,
    last_activity: u64,
}

/// Every snapshot transfer this leader runs, and the followers waiting for one. The driver opens
/// the read streams and sends the chunks; this says which, and when a transfer stalled.
/// Invariant: at most one transfer per follower; a follower in `wanted` gets a transfer only once
/// the state machine is still (`take_wanted` is called after a quiesce), and each open transfer
/// owns its read stream `sid` until `close` hands it back to be closed.
#[derive(Default)]
pub(super) struct Transfers {
    /// Ordered, so stalls are handled in the same order on every run (a seed replays exactly).
    outgoing: BTreeMap<String, Outgoing>,
    wanted: BTreeSet<String>,
}

impl Transfers {
    /// `peer` is too far behind for the log: it needs a snapshot.
    pub(super) fn want(&mut self, peer: String) {
        self.wanted.insert(peer);
    }

    /// Whether some follower waits for a transfer to begin.
    pub(super) fn is_wanted(&self) -> bool {
        !self.wanted.is_empty()
    }

    /// The followers waiting for a transfer that has none open yet; forgets them all.
    pub(super) fn take_wanted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.wanted).into_iter().filter(|p| !self.outgoing.contains_key(p)).collect()
    }

    /// Whether some read stream has more to read: the state machine must stay still.
    pub(super) fn reading(&self) -> bool {
        self.outgoing.values().any(|o| !o.done_sent)
    }

    /// Whether a transfer to `peer` is open.
    pub(super) fn is_open(&self, peer: &str) -> bool {
        self.outgoing.contains_key(peer)
    }

    /// Opens a transfer of the snapshot `meta` to `peer`, read through stream `sid`.
    pub(super) fn open(&mut self, peer: String, sid: u32, meta: SnapshotMeta, now: u64) {
        self.outgoing.insert(peer, Outgoing { sid, meta, seq: 0, done_sent: false, last_activity: now });
    }

    /// A read of the next chunks for `peer` starts: its stream, if the transfer is open.
    pub(super) fn reading_for(&mut self, peer: &str, now: u64) -> Option<u32> {
        let o = self.outgoing.get_mut(peer)?;
        o.last_activity = now;
        Some(o.sid)
    }

    /// The read for `peer` returned (`done`: the stream ended): the snapshot and the sequence
    /// number of the chunk to send, if the transfer is still open.
    pub(super) fn read(&mut self, peer: &str, done: bool, now: u64) -> Option<(SnapshotMeta, u64)> {
        let o = self.outgoing.get_mut(peer)?;
        o.last_activity = now;
        o.done_sent = done;
        Some((o.meta.clone(), o.seq))
    }

    /// `peer` acknowledged chunk `seq`. Returns whether the next chunks are to be read (the
    /// acknowledgement was for the chunk in flight and the stream has more).
    pub(super) fn acked(&mut self, peer: &str, seq: u64, now: u64) -> bool {
        let Some(o) = self.outgoing.get_mut(peer) else { return false };
        if o.seq != seq {
            return false;
        }
        o.seq += 1;
        o.last_activity = now;
        !o.done_sent
    }

    /// Ends the transfer to `peer`: the stream to close, if one was open.
    pub(super) fn close(&mut self, peer: &str) -> Option<u32> {
        self.outgoing.remove(peer).map(|o| o.sid)
    }

    /// Ends every transfer; returns the streams to close.
    pub(super) fn close_all(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.outgoing).into_values().map(|o| o.sid).collect()
    }

    /// The followers whose transfer saw nothing happen for `timeout` ms at `now`.
    pub(super) fn stalled(&self, now: u64, timeout: u64) -> Vec<String> {
        self.outgoing.iter().filter(|(_, o)| o.last_activity + timeout <= now).map(|(p, _)| p.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_core::Membership;

    fn meta() -> SnapshotMeta {
        SnapshotMeta { index: 5, term: 2, members: Membership::new() }
    }

    #[test]
    fn a_transfer_reads_on_each_ack_until_the_stream_ends() {
        let mut t = Transfers::default();
        t.want("b".into());
        t.want("b".into());
        assert!(t.is_wanted());
        assert_eq!(t.take_wanted(), vec!["b".to_string()]);
        assert!(!t.is_wanted());
        t.open("b".into(), 3, meta(), 0);
        assert!(t.reading());
        assert_eq!(t.reading_for("b", 1), Some(3));
        assert_eq!(t.read("b", false, 2).map(|(_, seq)| seq), Some(0));
        // a stale or repeated ack moves nothing
        assert!(!t.acked("b", 1, 3));
        assert!(t.acked("b", 0, 3));
        assert!(!t.acked("b", 0, 3));
        assert_eq!(t.read("b", true, 4).map(|(_, seq)| seq), Some(1));
        assert!(!t.reading());
        assert!(!t.acked("b", 1, 5));
        assert_eq!(t.close("b"), Some(3));
        assert_eq!(t.close("b"), None);
        assert!(t.read("b", true, 6).is_none());
    }

    #[test]
    fn a_follower_with_a_transfer_open_is_not_started_again_and_stalls_are_found() {
        let mut t = Transfers::default();
        t.open("b".into(), 1, meta(), 0);
        t.open("c".into(), 2, meta(), 0);
        t.want("b".into());
        t.want("d".into());
        assert_eq!(t.take_wanted(), vec!["d".to_string()]);
        assert!(t.acked("c", 0, 50));
        assert_eq!(t.stalled(99, 100), Vec::<String>::new());
        assert_eq!(t.stalled(100, 100), vec!["b".to_string()]);
        let mut sids = t.close_all();
        sids.sort();
        assert_eq!(sids, vec![1, 2]);
        assert!(!t.is_open("b"));
    }
}
