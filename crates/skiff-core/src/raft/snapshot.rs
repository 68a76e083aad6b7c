//! Snapshot transfer: the leader's side (when a follower needs one, each chunk's term) and the
//! follower's (taking chunks, starting and finishing an install).
//!
//! The state machine lives in the user's persistence plugin, so the runtime moves its bytes;
//! the core decides when a transfer is needed, stamps every chunk with its term, and changes
//! the log and membership when one completes.

use super::{Raft, SnapshotMeta};
use crate::config::PendingInstall;
use crate::entry::Json;
use crate::membership::Membership;
use crate::message::{Body, InstallSnapshot, InstallSnapshotResponse};
use crate::progress::ProgressState;
use crate::ready::Event;

impl Raft {
    pub(super) fn enter_snapshot(&mut self, peer: &str) {
        let Some(p) = self.progress.get_mut(peer) else { return };
        if p.state != ProgressState::Snapshot {
            p.become_snapshot(0);
            self.events.push(Event::SnapshotNeeded { peer: peer.to_string() });
        }
    }

    /// Leader: the runtime opened a read of the state machine as it is at `index`: either it
    /// holds applying back until the read ends (then `index` is `applied()`), or the persistence
    /// plugin took a point-in-time read and said which index it is of (untrusted: it must be a
    /// committed index whose term the log still knows). Returns what the chunks must carry, or
    /// `None` if `peer` no longer needs a snapshot or `index` cannot be one.
    pub fn begin_snapshot(&mut self, peer: &str, index: u64) -> Option<SnapshotMeta> {
        // A leader whose own install is pending has no state machine to stream.
        if !self.is_leader() || self.install.is_some() || index < self.log.snapshot_index() || index > self.commit {
            return None;
        }
        let term = self.log.term(index)?;
        let members = self.membership_at(index);
        let meta = SnapshotMeta { index, term, members, transfer: self.transfers_begun + 1 };
        if !self.take_transfer(peer, &meta) {
            return None;
        }
        self.transfers_begun += 1;
        Some(meta)
    }

    /// Leader: the runtime kept the read of `meta` open after its transfer to `peer` failed, and
    /// `peer` needs a snapshot again. Returns whether the transfer may go on (the follower then
    /// says where its partial install stands); if not, the runtime closes it and begins another.
    pub fn resume_snapshot(&mut self, peer: &str, meta: &SnapshotMeta) -> bool {
        let usable = self.is_leader()
            && self.install.is_none()
            && meta.transfer != 0
            && meta.transfer <= self.transfers_begun
            && meta.index >= self.log.snapshot_index()
            && meta.index <= self.commit
            && self.log.term(meta.index) == Some(meta.term);
        usable && self.take_transfer(peer, meta)
    }

    /// Leader: whether a transfer to `peer` would be taken now (it needs a snapshot and answers),
    /// so the runtime opens a read of the state machine only then.
    pub fn snapshot_wanted(&self, peer: &str) -> bool {
        let recently = self.now.saturating_sub(self.cfg.max_election_timeout);
        // Only stream to a follower that answers: it is asked again when the follower answers a
        // heartbeat.
        self.is_leader()
            && self.install.is_none()
            && self.progress.get(peer).is_some_and(|p| p.state == ProgressState::Snapshot && p.last_heard >= recently)
    }

    /// Records that `peer`'s progress now waits for the snapshot `meta`.
    fn take_transfer(&mut self, peer: &str, meta: &SnapshotMeta) -> bool {
        if !self.snapshot_wanted(peer) {
            return false;
        }
        let Some(p) = self.progress.get_mut(peer) else { return false };
        p.pending_snapshot = meta.index;
        p.last_heard = self.now;
        true
    }

    /// Leader: sends chunk `seq` of the transfer to `peer`. Returns false when the transfer is no
    /// longer wanted (the runtime then closes its read).
    pub fn send_snapshot_chunk(&mut self, peer: &str, meta: &SnapshotMeta, seq: u64, data: Option<Json>, done: bool) -> bool {
        let ok = self.is_leader()
            && self.progress.get(peer).is_some_and(|p| p.state == ProgressState::Snapshot && p.pending_snapshot == meta.index);
        if !ok {
            return false;
        }
        let peers = (seq == 0).then(|| meta.members.peers().collect());
        let chunk = InstallSnapshot {
            term: self.term,
            leader_id: self.cfg.id.clone(),
            last_included_index: meta.index,
            last_included_term: meta.term,
            seq,
            first: seq == 0,
            done,
            data,
            peers,
            transfer: meta.transfer,
        };
        self.send(peer.to_string(), None, Body::InstallSnapshot(chunk));
        true
    }

    /// Leader: the runtime gave up on a transfer (read failed, no answer). It is retried when
    /// the follower is next found to need it: from scratch, or where it stopped if the runtime
    /// kept its read open (`resume_snapshot`).
    pub fn snapshot_aborted(&mut self, peer: &str) {
        if let Some(p) = self.progress.get_mut(peer) {
            if p.state == ProgressState::Snapshot {
                p.become_probe();
            }
        }
    }

    pub(super) fn handle_install_response(&mut self, from: String, r: InstallSnapshotResponse) {
        if !self.is_leader() {
            return;
        }
        let now = self.now;
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_heard = now;
        if p.snapshot_in_flight().is_none() {
            return;
        }
        if !r.success {
            p.become_probe();
            self.events.push(Event::SnapshotFailed { peer: from, next_seq: r.next_seq });
        } else if r.installed_index != 0 {
            if r.installed_index != p.pending_snapshot || r.installed_index > last {
                return;
            }
            p.become_probe();
            p.on_success(r.installed_index, now);
            self.events.push(Event::SnapshotInstalled { peer: from.clone() });
            self.maybe_commit();
            self.send_append(&from, false);
        } else {
            self.events.push(Event::SnapshotAcked { peer: from, seq: r.seq });
        }
    }

    pub(super) fn handle_install(&mut self, from: String, token: Option<u64>, s: InstallSnapshot) {
        self.heard_from_leader(&from, s.term);
        self.bootstrap = None;
        if self.install.is_none() && s.last_included_index <= self.commit {
            // We already have everything it holds.
            let r = InstallSnapshotResponse::installed(s.seq, s.last_included_index);
            self.snapshot_reply(&from, token, r);
            return;
        }
        self.events.push(Event::SnapshotChunk { from, token, chunk: s });
    }

    /// Follower: answers one chunk with `r` (see `InstallSnapshotResponse::took`, `installed`,
    /// `refused`), in this node's term.
    pub fn snapshot_reply(&mut self, to: &str, token: Option<u64>, r: InstallSnapshotResponse) {
        let body = Body::InstallSnapshotResponse(InstallSnapshotResponse { term: self.term, ..r });
        self.send(to.to_string(), token, body);
    }

    /// Follower: a transfer of the state machine at `index` starts. The mark is persisted with
    /// the next `Ready`; the runtime must not clear the state machine before that save is
    /// durable, so that a crash in the middle never leaves a half-written state machine that
    /// counts as caught up.
    pub fn begin_install(&mut self, index: u64, term: u64, members: Membership) -> bool {
        if self.is_leader() || index < self.log.snapshot_index() || (self.install.is_none() && index <= self.commit) {
            return false;
        }
        self.install = Some(PendingInstall { index, term, members });
        self.dirty = true;
        true
    }

    /// Follower: the state machine now holds exactly the snapshot at `index`, and the plugin
    /// recorded `index` as applied. Resets the log to the snapshot.
    pub fn finish_install(&mut self, index: u64) -> bool {
        let Some(pi) = self.install.take_if(|pi| pi.index == index) else { return false };
        self.holds_back_election = false;
        self.log.install_snapshot(pi.index, pi.term);
        self.base = pi.members;
        self.commit = self.commit.max(index);
        self.apply_cursor = index;
        self.applied = index;
        self.persisted = self.persisted.max(index).min(self.log.last_index());
        self.dirty = true;
        self.refresh_members();
        true
    }
}
