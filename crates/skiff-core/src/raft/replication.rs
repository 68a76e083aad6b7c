//! Log replication: the leader's AppendEntries and heartbeats, the follower's answer to them,
//! and commitment.

use super::{Raft, ENTRY_OVERHEAD};
use crate::entry::{Entry, EntryKind};
use crate::membership::Membership;
use crate::message::{AppendEntries, AppendEntriesResponse, Body, PeerDesc};
use crate::progress::ProgressState;
use crate::ready::Event;

impl Raft {
    pub(super) fn broadcast_heartbeat(&mut self) {
        self.events.push(Event::Heartbeat);
        if self.cfg.check_quorum {
            // Every heartbeat carries a round of its own, so the lease (measured from a round's
            // opening, see read_index.rs) stays fresh; this broadcast carries a pending one too.
            self.reads.open_round(self.now);
            self.reads.take_round();
        }
        let peers: Vec<String> = self.progress.keys().cloned().collect();
        let now = self.now;
        let stalled_after = self.cfg.max_election_timeout;
        for id in peers {
            if let Some(p) = self.progress.get_mut(&id) {
                match p.state {
                    ProgressState::Probe => p.probe_sent = false,
                    // Answers stopped coming (lost messages, a restarted follower): fall back to
                    // probing from what is known to match instead of waiting forever.
                    ProgressState::Replicate
                        if !p.inflight.is_empty() && now.saturating_sub(p.last_progress) >= stalled_after =>
                    {
                        p.become_probe()
                    }
                    _ => {}
                }
            }
            self.send_append(&id, true);
        }
    }

    /// Sends `peer` what it is missing. With `heartbeat` (a broadcast: the heartbeat timer or a
    /// read round), sends an empty AppendEntries when there is nothing else to send, so the
    /// follower keeps its leader and learns the commit index, and stamps what it sends with the
    /// latest read round (`readCtx`).
    ///
    /// Only a broadcast carries the round: every round is opened for one (a read's, a transfer's,
    /// or under check-quorum the heartbeat's own), and the answers to it confirm the round. The
    /// AppendEntries sent as proposals arrive need not repeat it; stamping them all made every
    /// message and answer carry the field at 3 nodes and one client, for nothing.
    pub(super) fn send_append(&mut self, peer: &str, heartbeat: bool) {
        let read_ctx = if heartbeat { self.reads.ctx() } else { None };
        let mut sent_any = false;
        loop {
            let Some(p) = self.progress.get(peer) else { return };
            let last = self.log.last_index();
            let wants_entries = p.next_index <= last && !p.is_paused(self.cfg.max_inflight);
            if !wants_entries {
                if heartbeat && !sent_any {
                    self.send_heartbeat(peer, read_ctx);
                }
                return;
            }
            let prev = p.next_index - 1;
            let Some(prev_term) = self.log.term(prev) else {
                // The entries this follower needs were compacted away. Snapshot transfer is
                // driven by the runtime; until it reports success keep the follower's lease.
                self.enter_snapshot(peer);
                if heartbeat && !sent_any {
                    self.send_heartbeat(peer, read_ctx);
                }
                return;
            };
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            // A message holds at most `max_bytes_per_message`, or one entry larger than that:
            // with entries bounded (`maxCommandBytes`), no message outgrows what a transport
            // can carry, and an entry is never stuck behind a batch too big to send.
            for e in self.log.range(prev + 1, last) {
                let size = e.kind.size_hint() + ENTRY_OVERHEAD;
                if !entries.is_empty()
                    && (entries.len() >= self.cfg.max_entries_per_message || bytes + size > self.cfg.max_bytes_per_message)
                {
                    break;
                }
                bytes += size;
                entries.push(e.clone());
            }
            let sent_last = prev + entries.len() as u64;
            let count = entries.len();
            self.send_append_entries(peer, prev, prev_term, entries, read_ctx);
            sent_any = true;
            let now = self.now;
            let Some(p) = self.progress.get_mut(peer) else { return };
            p.on_sent(sent_last, count, now);
            if p.state != ProgressState::Replicate {
                return;
            }
            // In Replicate, keep filling the window.
        }
    }

    /// The membership before the first entry, for an AppendEntries anchored at index 0 of a log
    /// that does not start with its own membership (a cluster from skiff-algorithm's format keeps
    /// its first members in `peers`, not in the log): a follower replaying such a log from the
    /// start needs it to know who the members are.
    fn base_for(&self, prev: u64) -> Option<Vec<PeerDesc>> {
        (prev == 0 && self.log.snapshot_index() == 0 && !self.base.is_empty()).then(|| self.base.peers().collect())
    }

    /// An AppendEntries with no entries anchored at what the follower is known to have.
    fn send_heartbeat(&mut self, peer: &str, read_ctx: Option<u64>) {
        let Some(p) = self.progress.get(peer) else { return };
        let (prev, prev_term) = match self.log.term(p.match_index) {
            Some(t) => (p.match_index, t),
            None => (0, 0),
        };
        self.send_append_entries(peer, prev, prev_term, Vec::new(), read_ctx);
    }

    /// Sends `peer` an AppendEntries with `entries` after `prev` (none: a heartbeat), stamped
    /// with this leader's term and commit index, and with `read_ctx` (see `send_append`): the
    /// one place the message is built.
    fn send_append_entries(&mut self, peer: &str, prev: u64, prev_term: u64, entries: Vec<Entry>, read_ctx: Option<u64>) {
        let msg = AppendEntries {
            term: self.term,
            leader_id: self.cfg.id.clone(),
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.commit,
            peers: self.base_for(prev),
            read_ctx,
            transfer_to: self.announced_transfer(),
        };
        self.send(peer.to_string(), None, Body::AppendEntries(msg));
    }

    /// Raft §5.3/§5.4: commit the highest index a majority holds, if it is from this term.
    pub(super) fn maybe_commit(&mut self) {
        let matched = |id: &str| {
            Some(if id == self.cfg.id { self.persisted } else { self.progress.get(id).map_or(0, |p| p.match_index) })
        };
        let Some(candidate) = self.members.quorum_value(matched) else { return };
        if candidate > self.commit && self.log.term(candidate) == Some(self.term) {
            let old = self.commit;
            self.commit = candidate;
            // Tell followers about the new commit index without waiting for the next heartbeat
            // when there is nothing else to send them.
            let peers: Vec<String> = self.progress.keys().cloned().collect();
            for id in peers {
                if let Some(p) = self.progress.get(&id) {
                    if p.next_index > self.log.last_index() || p.is_paused(self.cfg.max_inflight) {
                        self.send_heartbeat(&id, None);
                    }
                }
            }
            let removed_self = self
                .log
                .range(old + 1, candidate)
                .any(|e| matches!(&e.kind, EntryKind::RemovePeer { id } if *id == self.cfg.id));
            if removed_self && !self.is_voter() {
                self.hand_over_on_removal();
                let term = self.term;
                self.become_follower(term, None);
                self.events.push(Event::RemovedSelf);
            } else if self.install.is_some() && self.is_leader() {
                // Led only to hand the log on (`holds_back_election`): a majority now holds all of
                // it, so a node among them that can apply can win; make way for it.
                self.holds_back_election = false;
                let term = self.term;
                self.become_follower(term, None);
            }
        }
    }

    pub(super) fn handle_append(&mut self, from: String, token: Option<u64>, a: AppendEntries) {
        self.heard_from_leader(&from, a.term);
        self.note_transfer_intent(&from, a.term, a.transfer_to.as_deref());
        // Whether we are joining, before these entries change our membership (see `known_commit`).
        let joining = !self.is_voter();

        let reply = |this: &Raft, success: bool, match_index: u64, hint: Option<(u64, Option<u64>)>, reason: Option<String>| {
            Body::AppendEntriesResponse(AppendEntriesResponse {
                term: this.term,
                success,
                last_applied: this.applied,
                match_index,
                reject_index: a.prev_log_index,
                conflict_index: hint.map(|h| h.0),
                conflict_term: hint.and_then(|h| h.1),
                reason,
                needs_snapshot: this.install.is_some(),
                read_ctx: a.read_ctx,
            })
        };

        // Entries at or below our snapshot are committed, hence identical to the leader's
        // (leader completeness): skip them and match from the snapshot on.
        let mut prev = a.prev_log_index;
        let mut prev_term = a.prev_log_term;
        let mut entries = a.entries.as_slice();
        let snap = self.log.snapshot_index();
        if prev < snap {
            let skip = ((snap - prev) as usize).min(entries.len());
            entries = &entries[skip..];
            if entries.is_empty() {
                let body = reply(self, true, snap, None, None);
                self.send(from, token, body);
                return;
            }
            prev = snap;
            prev_term = self.log.snapshot_term();
        }
        if !entries.is_empty() {
            // A brand-new node that hears from a leader is part of that leader's cluster, not
            // a cluster of its own.
            self.bootstrap = None;
        }
        if self.install.is_some() {
            // Only a snapshot helps now. Taking entries meanwhile could leave this node, which may
            // not campaign, with the longest log, refusing every candidate.
            let body = reply(self, false, 0, None, Some("waiting for a snapshot".into()));
            self.send(from, token, body);
            return;
        }

        if let (0, 0, Some(peers)) = (prev, self.log.snapshot_index(), &a.peers) {
            let base = Membership::from_peers(peers.iter().cloned());
            if base != self.base {
                self.base = base;
                self.dirty = true;
                self.refresh_members();
            }
        }
        match self.log.term(prev) {
            Some(t) if t == prev_term => {}
            found => {
                let hint = if prev > self.log.last_index() || found.is_none() {
                    (self.log.last_index() + 1, None)
                } else {
                    (self.log.first_index_of_term_at(prev), found)
                };
                let body = reply(self, false, 0, Some(hint), Some("log does not match at prevLogIndex".into()));
                self.send(from, token, body);
                return;
            }
        }

        let mut changed_membership = false;
        let mut truncated = false;
        let mut failed = false;
        for e in entries {
            match self.log.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    if e.index <= self.commit {
                        // Before anything was changed: entries in front of a conflict matched.
                        let reason = format!("entry {} conflicts with a committed entry", e.index);
                        self.events.push(Event::Rejected { from: from.clone(), reason: reason.clone() });
                        let body = reply(self, false, 0, None, Some(reason));
                        self.send(from, token, body);
                        return;
                    }
                    self.log.truncate_from(e.index);
                    self.persisted = self.persisted.min(e.index - 1);
                    self.drop_acks_from(e.index);
                    truncated = true;
                }
                None => {}
            }
            if self.log.append(e.clone()).is_err() {
                // Validation guarantees contiguity and terms; a failure means our own log was
                // shorter than prev, which the match check above rules out.
                failed = true;
                break;
            }
            self.dirty = true;
            changed_membership |= e.kind.is_membership();
        }
        if truncated || changed_membership {
            self.refresh_members();
        }
        if failed {
            let body = reply(self, false, 0, None, Some("entries could not be appended".into()));
            self.send(from, token, body);
            return;
        }
        // The commit index we take is capped at the prefix this message proved we share with
        // the leader: a commit index past it would vouch for entries we do not hold.
        let last_new = prev + entries.len() as u64;
        let commit = a.leader_commit.min(last_new);
        if commit > self.commit {
            self.commit = commit;
        }
        let announced = if joining { a.leader_commit } else { commit };
        if announced > self.known_commit {
            self.known_commit = announced;
            // Worth a save only while our log is shorter (it is what stops us campaigning).
            if announced > self.log.last_index() {
                self.dirty = true;
            }
        } else if self.known_commit > self.log.last_index()
            && !joining
            && a.leader_commit <= last_new
            && self.members.contains(&from)
        {
            // A leader that is a member as we see it says we hold everything it committed: what
            // we were told while joining (by whoever it was) is settled.
            self.known_commit = self.commit;
            self.dirty = true;
        }
        let body = reply(self, true, last_new, None, None);
        self.send(from, token, body);
    }

    /// Our log was truncated at `index`: acknowledgements still queued that cover it would
    /// promise entries no disk will hold, so they become refusals (each still answers its
    /// request).
    fn drop_acks_from(&mut self, index: u64) {
        for m in &mut self.msgs {
            if let Body::AppendEntriesResponse(r) = &mut m.body {
                if r.success && r.match_index >= index {
                    r.success = false;
                    r.match_index = 0;
                    r.reason = Some(format!("entries from {index} on were replaced"));
                }
            }
        }
    }

    pub(super) fn handle_append_response(&mut self, from: String, r: AppendEntriesResponse) {
        if !self.is_leader() {
            return;
        }
        if !self.progress.contains_key(&from) {
            return;
        }
        self.note_read_ack(&from, r.read_ctx);
        let last = self.log.last_index();
        let now = self.now;
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_heard = now;
        p.applied = p.applied.max(r.last_applied);
        if p.state == ProgressState::Snapshot || r.needs_snapshot {
            // Only a snapshot helps this follower; what a success says about its log still holds,
            // and counts toward commitment now: later answers repeating the same matchIndex do
            // not advance the progress, so nothing else would (no commit, ever, when no new
            // entry comes: clients waiting for this very commit).
            let advanced = r.success && r.match_index > p.match_index && r.match_index <= last;
            if advanced {
                p.match_index = r.match_index;
            }
            if p.state == ProgressState::Snapshot {
                // Answers to heartbeats during a transfer say nothing about the transfer, but one
                // that is needed and not started (the follower was silent) can start now.
                if p.pending_snapshot == 0 {
                    self.events.push(Event::SnapshotNeeded { peer: from });
                }
                if advanced {
                    self.maybe_commit();
                }
                return;
            }
            self.enter_snapshot(&from);
            self.maybe_commit();
            return;
        }
        if r.success {
            if r.match_index > last {
                self.events.push(Event::Rejected { from, reason: format!("matchIndex {} is past our log", r.match_index) });
                return;
            }
            if p.on_success(r.match_index, now) {
                self.maybe_commit();
            }
            self.send_append(&from, false);
            return;
        }
        // Rejected: is this answer about what we are sending now?
        let stale = match p.state {
            ProgressState::Replicate => r.reject_index < p.match_index,
            ProgressState::Probe => r.reject_index + 1 != p.next_index,
            ProgressState::Snapshot => true,
        };
        if stale {
            return;
        }
        let mut next = match (r.conflict_term, r.conflict_index) {
            (Some(t), Some(ci)) => match self.log.last_index_of_term(t) {
                Some(li) => li + 1,
                None => ci,
            },
            (None, Some(ci)) => ci,
            _ => r.reject_index,
        };
        next = next.min(r.reject_index).max(p.match_index + 1);
        p.become_probe();
        p.next_index = next;
        self.send_append(&from, false);
    }
}
