//! Leader side of snapshots: which followers want one, the read stream open for each, and where
//! a failed transfer stands so that the next attempt resumes it.

use skiff_core::{Json, SnapshotMeta};
use std::collections::{BTreeMap, BTreeSet};

/// Budget of one `InstallSnapshot` message: chunks of the read stream, and their JSON size.
pub(super) const SNAPSHOT_CHUNKS: usize = 512;
pub(super) const SNAPSHOT_BYTES: usize = 256 * 1024;

/// How long a suspended transfer keeps its read open for the follower to come back and resume
/// it (a restart or a partition that heals within this); after that it is closed, and a later
/// transfer starts from the beginning.
pub(super) const SUSPENDED_KEEP_MS: u64 = 60_000;

/// Leader: a snapshot streaming to one follower. Without point-in-time reads, applying is held
/// back while any is open, so every read stream shows the state machine exactly at `meta.index`;
/// with them, the plugin's stream is of `meta.index` however far applying goes, so a transfer
/// that failed may stay open (`suspended`) and resume where the follower stopped.
struct Outgoing {
    sid: u32,
    meta: SnapshotMeta,
    /// Sequence number of the chunk in flight (sent, or being read to be sent).
    seq: u64,
    /// The chunk `seq` as read, kept until the follower takes it, so it can be sent again when
    /// the transfer resumes (the read stream cannot go back).
    in_flight: Option<(Json, bool)>,
    /// The read stream ended (the chunk in flight, or the last one sent, is the last).
    ended: bool,
    /// The transfer failed and waits for the follower to need a snapshot again.
    suspended: bool,
    last_activity: u64,
    /// Bytes of chunks read for this transfer so far (for stats).
    bytes: u64,
}

/// A read finished: what the driver does with the chunk.
#[derive(Debug, PartialEq)]
pub(super) enum Read {
    /// Send chunk `seq` of `meta`.
    Send { meta: SnapshotMeta, seq: u64, chunks: Json, done: bool },
    /// Keep it: the transfer is suspended, and sends it when it resumes.
    Held,
}

/// How a suspended transfer goes on.
#[derive(Debug, PartialEq)]
pub(super) enum Resume {
    /// Send the chunk in flight again; the follower takes it, or says it already has it.
    Resend { meta: SnapshotMeta, seq: u64, chunks: Json, done: bool },
    /// Its read is still under way: the chunk goes out when it returns.
    Reading,
}

/// Every snapshot transfer this leader runs, and the followers waiting for one. The driver opens
/// the read streams and sends the chunks; this says which, and when a transfer stalled.
/// Invariant: at most one transfer per follower, which owns its read stream `sid` until `close`
/// hands it back to be closed; `seq` only moves on an acknowledgement of the chunk in flight,
/// so the follower's partial install of this transfer is always at `seq` or `seq + 1`.
#[derive(Default)]
pub(super) struct Transfers {
    /// Ordered, so stalls are handled in the same order on every run (a seed replays exactly).
    outgoing: BTreeMap<String, Outgoing>,
    wanted: BTreeSet<String>,
    /// Followers whose point-in-time read is being opened (not yet in `outgoing`).
    opening: BTreeSet<String>,
    /// Bytes of every chunk read, over this node's life.
    bytes_sent: u64,
}

impl Transfers {
    /// `peer` is too far behind for the log: it needs a snapshot.
    pub(super) fn want(&mut self, peer: String) {
        self.wanted.insert(peer);
    }

    /// Whether some follower waits for a transfer to begin or resume.
    pub(super) fn is_wanted(&self) -> bool {
        !self.wanted.is_empty()
    }

    /// The followers waiting for a transfer: those that have none open yet (first), and those
    /// whose transfer is suspended (second). Forgets them all.
    pub(super) fn take_wanted(&mut self) -> (Vec<String>, Vec<String>) {
        let wanted = std::mem::take(&mut self.wanted);
        let (resume, fresh): (Vec<String>, Vec<String>) = wanted
            .into_iter()
            .filter(|p| !self.opening.contains(p) && self.outgoing.get(p).is_none_or(|o| o.suspended))
            .partition(|p| self.outgoing.contains_key(p));
        (fresh, resume)
    }

    /// A read for `peer` starts opening; false if one already is.
    pub(super) fn begin_opening(&mut self, peer: &str) -> bool {
        self.opening.insert(peer.to_string())
    }

    /// The read being opened for `peer` opened, or failed to.
    pub(super) fn end_opening(&mut self, peer: &str) {
        self.opening.remove(peer);
    }

    /// Whether some read stream has more to read: without point-in-time reads, the state
    /// machine must stay still.
    pub(super) fn reading(&self) -> bool {
        self.outgoing.values().any(|o| !o.ended)
    }

    /// Whether a transfer to `peer` is open (running or suspended).
    pub(super) fn is_open(&self, peer: &str) -> bool {
        self.outgoing.contains_key(peer)
    }

    /// Opens a transfer of the snapshot `meta` to `peer`, read through stream `sid`.
    pub(super) fn open(&mut self, peer: String, sid: u32, meta: SnapshotMeta, now: u64) {
        let o = Outgoing { sid, meta, seq: 0, in_flight: None, ended: false, suspended: false, last_activity: now, bytes: 0 };
        self.outgoing.insert(peer, o);
    }

    /// A read of the next chunks for `peer` starts: its stream, if the transfer is open.
    pub(super) fn reading_for(&mut self, peer: &str, now: u64) -> Option<u32> {
        let o = self.outgoing.get_mut(peer)?;
        o.last_activity = now;
        Some(o.sid)
    }

    /// The read for `peer` returned `chunks`, `bytes` of them (`done`: the stream ended). `None`
    /// if the transfer is no longer open.
    pub(super) fn read(&mut self, peer: &str, chunks: Json, done: bool, bytes: usize, now: u64) -> Option<Read> {
        let o = self.outgoing.get_mut(peer)?;
        o.last_activity = now;
        o.bytes += bytes as u64;
        self.bytes_sent += bytes as u64;
        o.ended = done;
        o.in_flight = Some((chunks.clone(), done));
        Some(if o.suspended { Read::Held } else { Read::Send { meta: o.meta.clone(), seq: o.seq, chunks, done } })
    }

    /// The transfer open to `peer`, if any: the bytes it has read so far and its snapshot's index.
    pub(crate) fn outgoing(&self, peer: &str) -> Option<(u64, u64)> {
        if self.outgoing.is_empty() {
            return None;
        }
        self.outgoing.get(peer).map(|o| (o.bytes, o.meta.index))
    }

    /// Bytes of snapshot chunks read for sending, over this node's life.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// `peer` took chunk `seq`. Returns whether the next chunks are to be read (the
    /// acknowledgement was for the chunk in flight and the stream has more).
    pub(super) fn acked(&mut self, peer: &str, seq: u64, now: u64) -> bool {
        let Some(o) = self.outgoing.get_mut(peer) else { return false };
        if o.suspended || o.seq != seq || o.in_flight.is_none() {
            return false;
        }
        o.seq += 1;
        o.in_flight = None;
        o.last_activity = now;
        !o.ended
    }

    /// The transfer to `peer` failed; `next_seq` is where the follower says its partial install
    /// stands (untrusted). With `resumable` (the read is of a fixed index however far applying
    /// goes) and a follower that holds this transfer's chunks up to the one in flight, the
    /// transfer is suspended to resume later; otherwise it ends. Returns the stream to close if
    /// it ended.
    pub(super) fn failed(&mut self, peer: &str, next_seq: u64, resumable: bool, now: u64) -> Option<u32> {
        let o = self.outgoing.get_mut(peer)?;
        // The follower's install of this transfer can only be at the chunk in flight or the one
        // after it; anything else (0: it holds none) is a restart, or a lie.
        let fits = next_seq != 0 && (next_seq == o.seq || next_seq == o.seq + 1);
        if resumable && fits {
            o.suspended = true;
            o.last_activity = now;
            return None;
        }
        self.close(peer)
    }

    /// The transfer to `peer` stopped getting answers. With `resumable`, it is suspended (the
    /// follower says where it stands when it resumes); otherwise it ends, and the stream to
    /// close is returned.
    pub(super) fn lost(&mut self, peer: &str, resumable: bool, now: u64) -> Option<u32> {
        match self.outgoing.get_mut(peer) {
            Some(o) if resumable => {
                o.suspended = true;
                o.last_activity = now;
                None
            }
            _ => self.close(peer),
        }
    }

    /// The snapshot a suspended transfer to `peer` sends, to check it is still of use.
    pub(super) fn suspended_meta(&self, peer: &str) -> Option<&SnapshotMeta> {
        self.outgoing.get(peer).filter(|o| o.suspended).map(|o| &o.meta)
    }

    /// Resumes the suspended transfer to `peer`.
    pub(super) fn resume(&mut self, peer: &str, now: u64) -> Option<Resume> {
        let o = self.outgoing.get_mut(peer).filter(|o| o.suspended)?;
        o.suspended = false;
        o.last_activity = now;
        Some(match &o.in_flight {
            Some((chunks, done)) => Resume::Resend { meta: o.meta.clone(), seq: o.seq, chunks: chunks.clone(), done: *done },
            None => Resume::Reading,
        })
    }

    /// Ends the transfer to `peer`: the stream to close, if one was open.
    pub(super) fn close(&mut self, peer: &str) -> Option<u32> {
        self.outgoing.remove(peer).map(|o| o.sid)
    }

    /// Ends every transfer; returns the streams to close.
    pub(super) fn close_all(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.outgoing).into_values().map(|o| o.sid).collect()
    }

    /// The followers whose running transfer saw nothing happen for `timeout` ms at `now`, and
    /// (second) those whose suspended transfer waited `keep` ms for the follower to come back.
    pub(super) fn stalled(&self, now: u64, timeout: u64, keep: u64) -> (Vec<String>, Vec<String>) {
        let idle = |o: &Outgoing, t: u64| o.last_activity.saturating_add(t) <= now;
        let running = self.outgoing.iter().filter(|(_, o)| !o.suspended && idle(o, timeout)).map(|(p, _)| p.clone());
        let parked = self.outgoing.iter().filter(|(_, o)| o.suspended && idle(o, keep)).map(|(p, _)| p.clone());
        (running.collect(), parked.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_core::Membership;

    fn meta() -> SnapshotMeta {
        SnapshotMeta { index: 5, term: 2, members: Membership::new(), transfer: 1 }
    }

    fn data(n: u64) -> Json {
        Json::from_value(&[n])
    }

    fn sent_seq(r: Option<Read>) -> Option<u64> {
        match r {
            Some(Read::Send { seq, .. }) => Some(seq),
            _ => None,
        }
    }

    #[test]
    fn a_transfer_reads_on_each_ack_until_the_stream_ends() {
        let mut t = Transfers::default();
        t.want("b".into());
        t.want("b".into());
        assert!(t.is_wanted());
        assert_eq!(t.take_wanted(), (vec!["b".to_string()], vec![]));
        assert!(!t.is_wanted());
        t.open("b".into(), 3, meta(), 0);
        assert!(t.reading());
        assert_eq!(t.reading_for("b", 1), Some(3));
        // no ack before the chunk is read
        assert!(!t.acked("b", 0, 1));
        assert_eq!(sent_seq(t.read("b", data(0), false, 10, 2)), Some(0));
        // a stale or repeated ack moves nothing
        assert!(!t.acked("b", 1, 3));
        assert!(t.acked("b", 0, 3));
        assert!(!t.acked("b", 0, 3));
        assert_eq!(t.outgoing("b"), Some((10, 5)));
        assert_eq!(sent_seq(t.read("b", data(1), true, 10, 4)), Some(1));
        assert!(!t.reading());
        assert_eq!(t.outgoing("b"), Some((20, 5)));
        assert_eq!(t.bytes_sent(), 20);
        assert!(!t.acked("b", 1, 5));
        assert_eq!(t.close("b"), Some(3));
        assert_eq!(t.close("b"), None);
        assert!(t.read("b", data(2), true, 10, 6).is_none());
        assert_eq!(t.outgoing("b"), None);
        // a closed transfer's bytes stay in the total; reads after it add nothing
        assert_eq!(t.bytes_sent(), 20);
    }

    #[test]
    fn a_follower_with_a_transfer_open_is_not_started_again_and_stalls_are_found() {
        let mut t = Transfers::default();
        t.open("b".into(), 1, meta(), 0);
        t.open("c".into(), 2, meta(), 0);
        t.want("b".into());
        t.want("d".into());
        assert_eq!(t.take_wanted(), (vec!["d".to_string()], vec![]));
        t.read("c", data(0), false, 10, 50);
        assert!(t.acked("c", 0, 50));
        assert_eq!(t.stalled(99, 100, 1000), (vec![], vec![]));
        assert_eq!(t.stalled(100, 100, 1000), (vec!["b".to_string()], vec![]));
        let mut sids = t.close_all();
        sids.sort();
        assert_eq!(sids, vec![1, 2]);
        assert!(!t.is_open("b"));
    }

    #[test]
    fn a_lost_transfer_resumes_with_the_chunk_in_flight() {
        let mut t = Transfers::default();
        t.open("b".into(), 7, meta(), 0);
        for k in 0..3 {
            assert_eq!(sent_seq(t.read("b", data(k), false, 10, k)), Some(k));
            assert!(t.acked("b", k, k));
        }
        // chunk 3 is sent, then the connection drops
        assert_eq!(sent_seq(t.read("b", data(3), false, 10, 10)), Some(3));
        assert_eq!(t.lost("b", true, 20), None);
        assert!(t.is_open("b"));
        // an ack that arrives late does not move a suspended transfer
        assert!(!t.acked("b", 3, 21));
        assert_eq!(t.stalled(500, 100, 1000), (vec![], vec![]));
        t.want("b".into());
        assert_eq!(t.take_wanted(), (vec![], vec!["b".to_string()]));
        assert_eq!(t.suspended_meta("b"), Some(&meta()));
        assert_eq!(t.resume("b", 30), Some(Resume::Resend { meta: meta(), seq: 3, chunks: data(3), done: false }));
        assert_eq!(t.suspended_meta("b"), None);
        assert!(t.resume("b", 30).is_none());
        assert!(t.acked("b", 3, 31));
        assert_eq!(sent_seq(t.read("b", data(4), true, 10, 32)), Some(4));
    }

    #[test]
    fn a_read_that_returns_while_suspended_is_held_for_the_resume() {
        let mut t = Transfers::default();
        t.open("b".into(), 7, meta(), 0);
        assert_eq!(t.lost("b", true, 1), None);
        assert_eq!(t.read("b", data(0), true, 10, 2), Some(Read::Held));
        assert_eq!(t.resume("b", 3), Some(Resume::Resend { meta: meta(), seq: 0, chunks: data(0), done: true }));
        // suspended before the read returned: the chunk goes out with the read
        t.open("c".into(), 8, meta(), 0);
        t.lost("c", true, 1);
        assert_eq!(t.resume("c", 2), Some(Resume::Reading));
        assert_eq!(sent_seq(t.read("c", data(0), false, 10, 3)), Some(0));
    }

    #[test]
    fn only_a_follower_at_the_chunk_in_flight_or_after_it_is_resumed() {
        let mut t = Transfers::default();
        let open_at = |t: &mut Transfers, seq: u64| {
            t.open("b".into(), 9, meta(), 0);
            for k in 0..seq {
                t.read("b", data(k), false, 10, 0);
                t.acked("b", k, 0);
            }
            t.read("b", data(seq), false, 10, 0);
        };
        for (next_seq, kept) in [(0, false), (1, false), (2, false), (3, true), (4, true), (5, false), (u64::MAX, false)] {
            open_at(&mut t, 3);
            let closed = t.failed("b", next_seq, true, 1);
            assert_eq!(closed.is_none(), kept, "next_seq {next_seq}");
            assert_eq!(t.is_open("b"), kept);
            t.close("b");
        }
        // without point-in-time reads a failed or lost transfer ends, as before
        open_at(&mut t, 3);
        assert_eq!(t.failed("b", 3, false, 1), Some(9));
        open_at(&mut t, 3);
        assert_eq!(t.lost("b", false, 1), Some(9));
        // a suspended transfer whose follower never comes back is found, to be closed
        open_at(&mut t, 3);
        t.lost("b", true, 10);
        assert_eq!(t.stalled(1009, 100, 1000), (vec![], vec![]));
        assert_eq!(t.stalled(1010, 100, 1000), (vec![], vec!["b".to_string()]));
    }
}
