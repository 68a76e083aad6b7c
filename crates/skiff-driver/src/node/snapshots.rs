//! Snapshots: sending them to followers (leader) and installing one (follower), the glue between
//! the `Transfers` and `Install` parts, the core, the apply pipeline and the snapshot ops.

use super::*;
use crate::install::TransferKey;
use crate::snapshot_send::{Read, Resume, SUSPENDED_KEEP_MS};
use skiff_core::message::InstallSnapshotResponse;
use skiff_core::SnapshotMeta;

impl<H: Host> Driver<H> {
    /// Whether a snapshot read needs the state machine still: it does unless the plugin reads
    /// at a point in time.
    pub(super) fn snapshot_holds_applying(&self) -> bool {
        !self.opts.point_in_time_snapshots && self.transfers.reading()
    }

    /// Starts transfers to the followers that need one. With point-in-time reads, each opens its
    /// own read of the state machine as it is, and applying goes on. Without, the state machine
    /// must be at rest and its position exact: unless transfers already hold applying back,
    /// first stop the apply chain and learn how far it got (`quiesce`).
    pub(super) fn start_snapshots(&mut self) {
        if !self.transfers.is_wanted() || self.quiescing.is_some() {
            return;
        }
        if self.opts.point_in_time_snapshots || self.transfers.reading() {
            return self.begin_transfers();
        }
        let t = self.persistence_timeout();
        let io = self.io(IoKind::Quiesce, t);
        self.quiescing = Some(io);
        self.ops.push(Op::Quiesce { io });
    }

    pub(super) fn quiesce_finished(&mut self, io: u32, error: Option<PluginError>, result: Option<String>) {
        if self.quiescing != Some(io) {
            return;
        }
        self.quiescing = None;
        if let Some(e) = error {
            return self.warn(&e.code_or(code::EPLUGIN), format!("could not stop applying for a snapshot: {}", e.message()));
        }
        // The chain under way was stopped; forget its batch (the rest is re-sent later).
        if let Some(io) = self.apply.stop() {
            self.ios.finish(io);
        }
        let reported: u64 = result.as_deref().and_then(|r| serde_json::from_str(r).ok()).unwrap_or(0);
        self.progress_to(reported);
        self.begin_transfers();
    }

    pub(super) fn begin_transfers(&mut self) {
        let (mut fresh, suspended) = self.transfers.take_wanted();
        for peer in suspended {
            // A follower that does not answer now keeps its transfer suspended for a later try.
            if !self.raft.as_ref().is_some_and(|r| r.snapshot_wanted(&peer)) {
                continue;
            }
            if !self.resume_transfer(&peer) {
                // Its snapshot is of no more use (compacted away, or leadership changed).
                self.close_outgoing(&peer);
                fresh.push(peer);
            }
        }
        for peer in fresh {
            if self.opts.point_in_time_snapshots {
                self.open_snapshot(peer);
                continue;
            }
            let Some(raft) = self.raft.as_mut() else { return };
            let index = raft.applied();
            let Some(meta) = raft.begin_snapshot(&peer, index) else { continue };
            let sid = self.new_sid();
            self.transfers.open(peer.clone(), sid, meta, self.now);
            self.read_snapshot(&peer);
        }
    }

    /// Asks the plugin for a point-in-time read of the state machine for `peer`'s transfer; the
    /// transfer opens when the plugin says which index the read is of.
    pub(super) fn open_snapshot(&mut self, peer: String) {
        // A read (a copy of the state machine, maybe) only for a follower that would take it.
        if !self.raft.as_ref().is_some_and(|r| r.snapshot_wanted(&peer)) || !self.transfers.begin_opening(&peer) {
            return;
        }
        let sid = self.new_sid();
        let t = self.persistence_timeout();
        let io = self.io(IoKind::SnapshotOpen { peer, sid }, t);
        self.ops.push(Op::SnapshotOpen { io, sid });
    }

    pub(super) fn snapshot_opened(&mut self, peer: String, sid: u32, error: Option<PluginError>, result: Option<String>) {
        self.transfers.end_opening(&peer);
        if let Some(e) = error {
            self.error(&e.code_or(code::EPERSISTENCE), format!("opening a snapshot read failed: {}", e.message()));
            if let Some(raft) = self.raft.as_mut() {
                raft.snapshot_aborted(&peer);
            }
            return;
        }
        let index: Option<u64> = result.as_deref().and_then(|r| serde_json::from_str(r).ok());
        let meta = match index {
            Some(index) => self.raft.as_mut().and_then(|r| r.begin_snapshot(&peer, index)),
            None => {
                self.warn(code::EBADRESULT, "createSnapshotReadStream gave no index");
                None
            }
        };
        let Some(meta) = meta else {
            self.ops.push(Op::SnapshotClose { sid });
            if let Some(raft) = self.raft.as_mut() {
                raft.snapshot_aborted(&peer);
            }
            return;
        };
        self.transfers.open(peer.clone(), sid, meta, self.now);
        self.read_snapshot(&peer);
    }

    /// Resumes the suspended transfer to `peer`, if its snapshot is still of use: the chunk in
    /// flight goes out again, and the follower takes it or says it has it.
    pub(super) fn resume_transfer(&mut self, peer: &str) -> bool {
        let Some(meta) = self.transfers.suspended_meta(peer) else { return false };
        if !self.raft.as_mut().is_some_and(|r| r.resume_snapshot(peer, meta)) {
            return false;
        }
        match self.transfers.resume(peer, self.now) {
            Some(Resume::Resend { meta, seq, chunks, done }) => self.send_chunk(peer, &meta, seq, chunks, done),
            Some(Resume::Reading) => {}
            None => return false,
        }
        true
    }

    pub(super) fn send_chunk(&mut self, peer: &str, meta: &SnapshotMeta, seq: u64, chunks: Json, done: bool) {
        let sent = self.raft.as_mut().is_some_and(|r| r.send_snapshot_chunk(peer, meta, seq, Some(chunks), done));
        if !sent {
            self.close_outgoing(peer);
        }
    }

    pub(super) fn read_snapshot(&mut self, peer: &str) {
        let Some(sid) = self.transfers.reading_for(peer, self.now) else { return };
        let t = self.persistence_timeout();
        let io = self.io(IoKind::SnapshotRead { peer: peer.to_string() }, t);
        self.ops.push(Op::SnapshotRead { io, sid, max_chunks: SNAPSHOT_CHUNKS, max_bytes: SNAPSHOT_BYTES });
    }

    pub(super) fn snapshot_read_finished(&mut self, peer: String, error: Option<PluginError>, result: Option<String>) {
        if !self.transfers.is_open(&peer) {
            return;
        }
        if let Some(e) = error {
            self.error(&e.code_or(code::EPERSISTENCE), format!("reading the state machine for a snapshot failed: {}", e.message()));
            return self.abort_outgoing(&peer);
        }
        #[derive(serde::Deserialize)]
        struct ReadResult {
            chunks: Json,
            done: bool,
        }
        let parsed: Option<ReadResult> = result.as_deref().and_then(|r| serde_json::from_str(r).ok());
        let Some(read) = parsed else {
            self.warn(code::EBADRESULT, "the snapshot read returned something unexpected");
            return self.abort_outgoing(&peer);
        };
        let bytes = read.chunks.as_str().len();
        if let Some(Read::Send { meta, seq, chunks, done }) = self.transfers.read(&peer, read.chunks, read.done, bytes, self.now) {
            self.send_chunk(&peer, &meta, seq, chunks, done);
        }
    }

    pub(super) fn snapshot_acked(&mut self, peer: String, seq: u64) {
        if self.transfers.acked(&peer, seq, self.now) {
            self.read_snapshot(&peer);
        }
    }

    /// The transfer to `peer` got no answer (the send failed or timed out, or it stalled). With
    /// point-in-time reads it is kept, to resume where the follower stopped when the follower
    /// is next found to need a snapshot; otherwise it ends.
    pub(super) fn transfer_lost(&mut self, peer: &str) {
        if let Some(raft) = self.raft.as_mut() {
            raft.snapshot_aborted(peer);
        }
        if let Some(sid) = self.transfers.lost(peer, self.opts.point_in_time_snapshots, self.now) {
            self.ops.push(Op::SnapshotClose { sid });
        }
    }

    /// The follower refused a chunk; `next_seq` is where it says its install stands.
    pub(super) fn transfer_failed(&mut self, peer: &str, next_seq: u64) {
        if let Some(sid) = self.transfers.failed(peer, next_seq, self.opts.point_in_time_snapshots, self.now) {
            self.ops.push(Op::SnapshotClose { sid });
        }
    }

    /// Ends the transfers that stalled, and the suspended ones whose follower did not come back
    /// in time or that no longer have a leader to send them.
    pub(super) fn expire_transfers(&mut self) {
        if !self.raft.as_ref().is_some_and(|r| r.is_leader()) {
            for sid in self.transfers.close_all() {
                self.ops.push(Op::SnapshotClose { sid });
            }
            return;
        }
        let (stalled, abandoned) = self.transfers.stalled(self.now, self.send_timeout(), SUSPENDED_KEEP_MS);
        for peer in stalled {
            self.warn(code::ETIMEDOUT, format!("snapshot transfer to {peer} stalled"));
            self.transfer_lost(&peer);
        }
        for peer in abandoned {
            self.close_outgoing(&peer);
        }
    }

    pub(super) fn abort_outgoing(&mut self, peer: &str) {
        if let Some(raft) = self.raft.as_mut() {
            raft.snapshot_aborted(peer);
        }
        self.close_outgoing(peer);
    }

    pub(super) fn close_outgoing(&mut self, peer: &str) {
        if let Some(sid) = self.transfers.close(peer) {
            self.ops.push(Op::SnapshotClose { sid });
        }
    }

    pub(super) fn install_chunk(&mut self, from: String, token: Option<u64>, chunk: skiff_core::message::InstallSnapshot) {
        let reply = |this: &mut Self, r: InstallSnapshotResponse| {
            if let Some(raft) = this.raft.as_mut() {
                raft.snapshot_reply(&from, token, r);
            }
        };
        let key = TransferKey::of(&from, &chunk);
        if chunk.seq == 0 {
            if let Some(old) = self.install.abort() {
                self.ops.push(Op::SnapshotAbort { sid: old.sid });
                // The chunk the old transfer held (the first, waiting for the reset, or one
                // being written) still gets its answer.
                if let (Some(Some(token)), Some(raft)) = (old.held, self.raft.as_mut()) {
                    let r = InstallSnapshotResponse::refused(old.next_seq, 0, "replaced by a newer transfer");
                    raft.snapshot_reply(&old.from, Some(token), r);
                }
            }
            if self.apply.is_applying() {
                return reply(self, InstallSnapshotResponse::refused(0, 0, "busy applying entries; retry"));
            }
            let members = Membership::from_peers(chunk.peers.clone().unwrap_or_default());
            let began = self
                .raft
                .as_mut()
                .is_some_and(|r| r.begin_install(chunk.last_included_index, chunk.last_included_term, members));
            if !began {
                return reply(self, InstallSnapshotResponse::refused(0, 0, "snapshot refused"));
            }
            // Entries still queued for applying are older than the snapshot, which replaces them;
            // applied onto a cleared state machine after a failed transfer they would corrupt it.
            self.apply.clear();
            let sid = self.new_sid();
            self.install.begin(key, sid, (token, chunk.data.clone(), chunk.done));
            return;
        }
        let seq = chunk.seq;
        match self.install.fit(&key, seq) {
            Fit::NoTransfer => reply(self, InstallSnapshotResponse::refused(seq, 0, "no snapshot transfer in progress")),
            Fit::Other => reply(self, InstallSnapshotResponse::refused(seq, 0, "chunk of another transfer")),
            // A chunk already written, sent again (a resumed transfer resends the one in flight).
            Fit::Duplicate => reply(self, InstallSnapshotResponse::took(seq)),
            Fit::OutOfOrder { next_seq } => reply(self, InstallSnapshotResponse::refused(seq, next_seq, "chunk out of order")),
            Fit::Next => self.write_chunk(token, seq, chunk.data, chunk.done),
        }
    }

    pub(super) fn write_chunk(&mut self, token: Option<u64>, seq: u64, data: Option<Json>, done: bool) {
        let Some((sid, index)) = self.install.write(seq, token, done) else { return };
        let t = self.persistence_timeout();
        let io = self.io(IoKind::SnapshotWrite, t);
        self.ops.push(Op::SnapshotWrite { io, sid, chunks: data.unwrap_or_else(|| Json::from_value(&[] as &[u8])), end: done, index });
    }

    pub(super) fn install_reset_finished(&mut self, error: Option<PluginError>) {
        if let Some(e) = error {
            return self.install_failed(&e.code_or(code::EPERSISTENCE), format!("removeAllState failed: {}", e.message()));
        }
        if let Some((token, data, done)) = self.install.reset() {
            self.write_chunk(token, 0, data, done);
        }
    }

    pub(super) fn install_write_finished(&mut self, error: Option<PluginError>) {
        if let Some(e) = error {
            return self.install_failed(&e.code_or(code::EPERSISTENCE), format!("writing the snapshot failed: {}", e.message()));
        }
        let Some(Written { from, index, seq, token, done }) = self.install.written() else { return };
        let mut installed = 0;
        if done {
            // The stream finished and the plugin recorded `index`: the state machine is the
            // snapshot. Reset the log; entries queued for applying are older than it.
            if self.raft.as_mut().is_some_and(|r| r.finish_install(index)) {
                self.apply.drop_upto(index);
                installed = index;
                self.emit("snapshot installed", vec![Arg::Num(index)]);
            }
        }
        if let Some(raft) = self.raft.as_mut() {
            let r = if installed != 0 { InstallSnapshotResponse::installed(seq, installed) } else { InstallSnapshotResponse::took(seq) };
            raft.snapshot_reply(&from, token, r);
        }
    }

    pub(super) fn install_failed(&mut self, code: &str, message: String) {
        self.error(code, message.clone());
        let Some(inc) = self.install.abort() else { return };
        self.ops.push(Op::SnapshotAbort { sid: inc.sid });
        let token = inc.held.flatten();
        if let Some(raft) = self.raft.as_mut() {
            raft.snapshot_reply(&inc.from, token, InstallSnapshotResponse::refused(inc.next_seq, 0, message));
        }
    }

    pub(super) fn snapshot_read_timed_out(&mut self, peer: String) {
        self.warn(code::ETIMEDOUT, format!("reading the snapshot for {peer} stalled"));
        self.abort_outgoing(&peer);
    }

    pub(super) fn snapshot_open_timed_out(&mut self, peer: String, sid: u32) {
        self.warn(code::ETIMEDOUT, format!("opening the snapshot read for {peer} stalled"));
        self.transfers.end_opening(&peer);
        self.ops.push(Op::SnapshotClose { sid });
        if let Some(raft) = self.raft.as_mut() {
            raft.snapshot_aborted(&peer);
        }
    }

    pub(super) fn quiesce_timed_out(&mut self, io: u32) {
        self.warn(code::ETIMEDOUT, "the state machine did not come to rest for a snapshot; retrying");
        if self.quiescing == Some(io) {
            self.quiescing = None;
        }
    }
}
