//! Snapshots: sending them to followers (leader) and installing one (follower), the glue between
//! the `Transfers` and `Install` parts, the core, the apply pipeline and the snapshot ops.

use super::*;

impl<H: Host> Driver<H> {
    /// Starts transfers to the followers that need one. The state machine must be at rest and
    /// its position exact: unless transfers already hold applying back, first stop the apply
    /// chain and learn how far it got (`quiesce`).
    pub(super) fn start_snapshots(&mut self) {
        if !self.transfers.is_wanted() || self.quiescing.is_some() {
            return;
        }
        if self.transfers.reading() {
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
        for peer in self.transfers.take_wanted() {
            let Some(raft) = self.raft.as_mut() else { return };
            let index = raft.applied();
            let Some(meta) = raft.begin_snapshot(&peer, index) else { continue };
            let sid = self.new_sid();
            self.transfers.open(peer.clone(), sid, meta, self.now);
            self.read_snapshot(&peer);
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
        let Some((meta, seq)) = self.transfers.read(&peer, read.done, read.chunks.as_str().len(), self.now) else { return };
        let sent = self.raft.as_mut().is_some_and(|r| r.send_snapshot_chunk(&peer, &meta, seq, Some(read.chunks), read.done));
        if !sent {
            self.close_outgoing(&peer);
        }
    }

    pub(super) fn snapshot_acked(&mut self, peer: String, seq: u64) {
        if self.transfers.acked(&peer, seq, self.now) {
            self.read_snapshot(&peer);
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
        let reply = |this: &mut Self, success: bool, installed: u64, reason: Option<&str>| {
            if let Some(raft) = this.raft.as_mut() {
                raft.snapshot_reply(&from, token, chunk.seq, success, installed, reason.map(str::to_string));
            }
        };
        if chunk.seq == 0 {
            if let Some(old) = self.install.abort() {
                self.ops.push(Op::SnapshotAbort { sid: old.sid });
                // The chunk the old transfer held (the first, waiting for the reset, or one
                // being written) still gets its answer.
                if let (Some(Some(token)), Some(raft)) = (old.held, self.raft.as_mut()) {
                    let reason = Some("replaced by a newer transfer".to_string());
                    raft.snapshot_reply(&old.from, Some(token), old.next_seq, false, 0, reason);
                }
            }
            if self.apply.is_applying() {
                return reply(self, false, 0, Some("busy applying entries; retry"));
            }
            let members = Membership::from_peers(chunk.peers.clone().unwrap_or_default());
            let began = self
                .raft
                .as_mut()
                .is_some_and(|r| r.begin_install(chunk.last_included_index, chunk.last_included_term, members));
            if !began {
                return reply(self, false, 0, Some("snapshot refused"));
            }
            // Entries still queued for applying are older than the snapshot, which replaces them;
            // applied onto a cleared state machine after a failed transfer they would corrupt it.
            self.apply.clear();
            let sid = self.new_sid();
            self.install.begin(from.clone(), chunk.last_included_index, sid, (token, chunk.data.clone(), chunk.done));
            return;
        }
        match self.install.fit(&from, chunk.last_included_index, chunk.seq) {
            Fit::NoTransfer => reply(self, false, 0, Some("no snapshot transfer in progress")),
            Fit::Other => reply(self, false, 0, Some("chunk of another transfer")),
            // A duplicate of a chunk already written.
            Fit::Duplicate => reply(self, true, 0, None),
            Fit::OutOfOrder => reply(self, false, 0, Some("chunk out of order")),
            Fit::Next => self.write_chunk(token, chunk.seq, chunk.data, chunk.done),
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
            raft.snapshot_reply(&from, token, seq, true, installed, None);
        }
    }

    pub(super) fn install_failed(&mut self, code: &str, message: String) {
        self.error(code, message.clone());
        let Some(inc) = self.install.abort() else { return };
        self.ops.push(Op::SnapshotAbort { sid: inc.sid });
        let token = inc.held.flatten();
        if let Some(raft) = self.raft.as_mut() {
            raft.snapshot_reply(&inc.from, token, inc.next_seq, false, 0, Some(message));
        }
    }

    pub(super) fn snapshot_read_timed_out(&mut self, peer: String) {
        self.warn(code::ETIMEDOUT, format!("reading the snapshot for {peer} stalled"));
        self.abort_outgoing(&peer);
    }

    pub(super) fn quiesce_timed_out(&mut self, io: u32) {
        self.warn(code::ETIMEDOUT, "the state machine did not come to rest for a snapshot; retrying");
        if self.quiescing == Some(io) {
            self.quiescing = None;
        }
    }

    /// Abandons the transfers whose follower stopped answering.
    pub(super) fn expire_transfers(&mut self) {
        for peer in self.transfers.stalled(self.now, self.send_timeout()) {
            self.warn(code::ETIMEDOUT, format!("snapshot transfer to {peer} stalled"));
            self.abort_outgoing(&peer);
        }
    }
}
