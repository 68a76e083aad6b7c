//! The invariants, checked after every event against the cores inside the drivers, the fake
//! disks and what went over the network:
//!
//! - election safety: at most one leader per term over the whole run;
//! - log matching: one entry per (index, term) across all logs ever, always after the same
//!   previous term (so logs agreeing at an index agree on everything before it);
//! - leader completeness: every leader holds every entry committed in an earlier term (unless
//!   compacted into its snapshot); a leader stops leading once its own removal commits;
//! - state machine safety: one entry per committed index across nodes; each state machine applies
//!   every index once, in order, also across restarts and snapshot installs (whose contents must be
//!   exactly the commands committed up to their index); committed entries are never replaced;
//!   snapshots and compaction only cover committed entries; terms and commit never go back;
//! - durability at every send: a message's term, a vote grant, an AppendEntries success (the entries
//!   it acknowledges), an installed snapshot are in the node's completed save; no node grants two
//!   votes in one term across restarts; entries handed out to apply are in the completed save;
//! - the save round-trips: what the driver loads is the term, vote, log and install mark saved,
//!   and its commit is the state machine's applied index;
//! - no refusal of a correct peer's message, no malformed message or result (`EBADMESSAGE`,
//!   `EBADSENDER`, `EBADRESULT`, ...); a node stops by itself only after its removal committed;
//! - every acknowledged command was applied at the index its answer names.
//!
//! At the end of a run everything is healed: within a bounded time a single leader must exist that
//! commits a proposal on every member, every member follows it, and every acknowledged proposal
//! is in every state machine.

use crate::world::{node_index, Committed, Phase, Sim, Status};
use skiff_core::{Body, Entry, EntryKind, Message};

impl Sim {
    pub fn check_all(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &i in &touched {
            self.check_node(i);
        }
        touched.clear();
        self.touched = touched;
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_leader() {
                self.check_leader(i);
            }
        }
    }

    /// A driver finished loading: it holds what its disk holds.
    pub fn check_loaded(&mut self, i: usize) {
        let node = &self.nodes[i];
        let raft = node.raft();
        let d = &node.disk.durable;
        let terms: Vec<u64> = raft.log().iter().map(|e| e.term).collect();
        let snap = (raft.log().snapshot_index(), raft.log().snapshot_term());
        let mark = raft.pending_install().map(|p| p.index);
        let (term, vote) = raft.hard_state_ref();
        if d.install_mark.is_some_and(|m| m == node.disk.sm_applied) {
            // The state machine finished the install the save marked, and the node went down
            // before saving that: loading completes it (the log starts after the snapshot).
            if term != d.term || vote != d.vote.as_deref() || mark.is_some() || Some(snap.0) != d.install_mark {
                self.violation(format!(
                    "{}: loaded state does not complete the install at {:?}: term {term} vote {vote:?} snap {snap:?} mark {mark:?}",
                    node.id, d.install_mark
                ));
            }
        } else if term != d.term || vote != d.vote.as_deref() || terms != d.terms() || snap != d.snap || mark != d.install_mark {
            self.violation(format!(
                "{}: loaded state differs from the save: term {term} vote {vote:?} snap {snap:?} mark {mark:?} terms {terms:?}; \
                 saved term {} vote {:?} snap {:?} mark {:?} terms {:?}",
                node.id, d.term, d.vote, d.snap, d.install_mark, d.terms()
            ));
        }
        if raft.commit() != node.disk.sm_applied.max(raft.log().snapshot_index()) {
            self.violation(format!(
                "{}: loaded commit {} is not the applied index {}",
                node.id,
                raft.commit(),
                node.disk.sm_applied
            ));
        }
    }

    /// A node stopped by itself: only once it knows its own removal committed.
    pub fn check_removed_self(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(raft) = node.core() else { self.violation(format!("{} stopped by itself before loading", node.id)) };
        if raft.is_leader() || raft.members().contains(&node.id) {
            self.violation(format!("{} stopped by itself but is still leader or member", node.id));
        }
        let removed_committed = raft
            .log()
            .range(raft.log().snapshot_index() + 1, raft.commit())
            .any(|e| matches!(&e.kind, EntryKind::RemovePeer { id } if *id == node.id));
        if !removed_committed && raft.log().snapshot_index() == 0 {
            self.violation(format!("{} stopped by itself without a committed removal in its log", node.id));
        }
    }

    /// Election safety and leader completeness for a current leader.
    fn check_leader(&mut self, i: usize) {
        let node = &self.nodes[i];
        let raft = node.raft();
        let term = raft.term();
        // A leader counts for election safety once its term and its vote for itself are durable.
        // A lone voter wins its election the moment it votes for itself, before that vote is
        // saved; if it crashes before the save, it comes back in the older term and may vote for
        // another candidate in the same term. That leadership was never visible: it sent nothing
        // (`check_send` holds every message to the saved term) and acknowledged nothing (entries
        // are acknowledged only once durable). Found by seed 8634 (default profile).
        let d = &node.disk.durable;
        let durable = d.term == term && d.vote.as_deref() == Some(node.id.as_str());
        match self.leaders.get(&term) {
            _ if !durable => {}
            Some(id) if *id != node.id => self.violation(format!("two leaders in term {term}: {id} and {}", node.id)),
            Some(_) => {}
            None => {
                let id = node.id.clone();
                self.stats.elections += 1;
                trace!(self, "{id} LEADER term {term}");
                self.leaders.insert(term, id);
            }
        }
        let node = &self.nodes[i];
        let raft = node.raft();
        // A leader that removed itself leads only until that removal commits.
        if !raft.members().contains(&node.id) {
            let removal = raft
                .log()
                .iter()
                .filter(|e| matches!(&e.kind, EntryKind::RemovePeer { id } | EntryKind::AddPeer { id, .. } if *id == node.id))
                .last();
            if let Some(e) = removal {
                if e.index <= raft.commit() {
                    self.violation(format!("{} still leads after its removal (index {}) committed", node.id, e.index));
                }
            }
        }
        let mut cursor = if node.lc.0 == term { node.lc.1 } else { 0 };
        while (cursor as usize) < self.committed.len() {
            let j = cursor + 1;
            let c = &self.committed[j as usize - 1];
            if c.commit_term < term && j > raft.log().snapshot_index() {
                match raft.log().entry(j) {
                    Some(e) if e.term == c.term && e.uuid == c.uuid => {}
                    other => self.violation(format!(
                        "leader completeness: {} leads term {term} but lacks entry {j} (term {}) committed in term {}; has {:?}",
                        node.id,
                        c.term,
                        c.commit_term,
                        other.map(|e| (e.term, &e.uuid))
                    )),
                }
            }
            cursor = j;
        }
        self.nodes[i].lc = (term, cursor);
    }

    pub fn note_committed(&mut self, i: usize, e: &Entry, observer_term: u64) {
        let j = e.index as usize;
        if j <= self.committed.len() {
            let c = &mut self.committed[j - 1];
            if c.term != e.term || c.uuid != e.uuid {
                let (ct, cu) = (c.term, c.uuid.clone());
                self.violation(format!(
                    "state machine safety: {} has entry {j} as (term {}, {}) committed, another node had (term {ct}, {cu})",
                    self.nodes[i].id, e.term, e.uuid
                ));
            }
            c.commit_term = c.commit_term.min(observer_term);
        } else if j == self.committed.len() + 1 {
            self.committed.push(Committed { term: e.term, uuid: e.uuid.clone(), commit_term: observer_term });
        } else {
            self.violation(format!(
                "{}: entry {j} committed while entry {} is unknown",
                self.nodes[i].id,
                self.committed.len() + 1
            ));
        }
    }

    /// Log matching, monotonic term and commit, snapshots at committed positions, and what this
    /// node knows committed.
    fn check_node(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(raft) = node.core() else { return };
        let id = node.id.clone();
        if raft.term() < node.last_term {
            self.violation(format!("{id}: term went back from {} to {}", node.last_term, raft.term()));
        }
        if raft.commit() < node.last_commit {
            self.violation(format!("{id}: commit went back from {} to {}", node.last_commit, raft.commit()));
        }
        let log = raft.log();
        let snap = log.snapshot_index();
        if snap != node.last_snap && snap > 0 {
            // Compaction and installed snapshots cover committed entries only.
            match self.committed.get(snap as usize - 1) {
                Some(c) if c.term == log.snapshot_term() => {}
                other => self.violation(format!(
                    "{id}: log starts after a snapshot at {snap} (term {}) that is not a committed entry ({:?})",
                    log.snapshot_term(),
                    other.map(|c| c.term)
                )),
            }
        }
        let last = log.last_index();
        // Mirror of the entries already checked, from `mirror_first` on.
        let mut first = node.mirror_first;
        let mut drop = 0usize;
        while first <= snap && drop < node.mirror.len() {
            first += 1;
            drop += 1;
        }
        let mlen = node.mirror.len() - drop;
        if mlen == 0 {
            first = snap + 1;
        }
        let m = |k: u64| &node.mirror[drop + (k - first) as usize];
        let mirror_last = first + mlen as u64 - 1;
        let unchanged = mirror_last == last
            && (mlen == 0 || {
                let (t, u) = m(last);
                let e = log.entry(last).expect("last entry");
                e.term == *t && e.uuid == *u
            });
        let mut new_entries = Vec::new();
        let mut k = last + 1;
        if !unchanged {
            k = first;
            while k <= last && k <= mirror_last {
                let (t, u) = m(k);
                let e = log.entry(k).expect("entry in the log");
                if e.term != *t || e.uuid != *u {
                    break;
                }
                k += 1;
            }
            if k <= node.commit_cursor && k <= mirror_last {
                self.violation(format!("{id}: committed entry {k} was removed or replaced"));
            }
            for j in k..=last {
                let e = log.entry(j).expect("entry in the log");
                let prev_term = log.term(j - 1).expect("previous term");
                new_entries.push((j, e.term, e.uuid.clone(), format!("{:?}", e.kind), prev_term));
            }
        }
        let commit = raft.commit();
        if commit > last {
            self.violation(format!("{id}: commit {commit} is past the end of its log {last}"));
        }
        let mut newly_committed = Vec::new();
        for j in node.commit_cursor + 1..=commit {
            if j <= snap {
                if j as usize > self.committed.len() {
                    self.violation(format!("{id}: commit covers {j} (in its snapshot) before anyone committed it"));
                }
                continue;
            }
            newly_committed.push(log.entry(j).expect("committed entry").clone());
        }
        let term = raft.term();
        for (j, t, uuid, kind, prev_term) in &new_entries {
            match self.index_term.get(&(*j, *t)) {
                Some((u, kd, pt)) => {
                    if u != uuid || kd != kind {
                        self.violation(format!(
                            "log matching: {id} has entry ({j}, term {t}) = {uuid} {kind}, another log has {u} {kd}"
                        ));
                    }
                    if pt != prev_term {
                        self.violation(format!(
                            "log matching: {id} has entry ({j}, term {t}) after an entry of term {prev_term}; another log has it after term {pt}"
                        ));
                    }
                }
                None => {
                    self.index_term.insert((*j, *t), (uuid.clone(), kind.clone(), *prev_term));
                }
            }
        }
        for e in &newly_committed {
            self.note_committed(i, e, term);
        }
        let node = &mut self.nodes[i];
        node.mirror.drain(..drop);
        node.mirror_first = first;
        if !unchanged {
            node.mirror.truncate((k - first) as usize);
            node.mirror.extend(new_entries.into_iter().map(|(_, t, u, _, _)| (t, u)));
        }
        node.last_snap = snap;
        node.commit_cursor = commit;
        node.last_commit = commit;
        node.last_term = term;
    }

    /// The durability rule at the moment a message leaves: what it promises is in the last
    /// completed save.
    pub fn check_send(&mut self, i: usize, m: &Message, claim: Option<(u64, u64)>) {
        if self.capture {
            self.sent.push(m.clone());
        }
        let node = &self.nodes[i];
        let d = &node.disk.durable;
        let prevote = matches!(&m.body, Body::RequestVote(r) if r.pre_vote)
            || matches!(&m.body, Body::RequestVoteResponse(r) if r.pre_vote);
        if !prevote && m.body.term() > d.term {
            self.violation(format!(
                "{} sends a term-{} message before that term is saved (saved {}): {}",
                node.id,
                m.body.term(),
                d.term,
                short(m)
            ));
        }
        match &m.body {
            Body::RequestVoteResponse(r) if r.vote_granted && !r.pre_vote => {
                if d.term == r.term && d.vote.as_deref() != Some(m.to.as_str()) {
                    self.violation(format!(
                        "{} grants its term-{} vote to {} but the save holds vote {:?}",
                        node.id, r.term, m.to, d.vote
                    ));
                }
                let key = (i, node.lineage, r.term);
                match self.votes.get(&key) {
                    Some(c) if *c != m.to => {
                        self.violation(format!("{} voted twice in term {}: for {c} and for {}", node.id, r.term, m.to))
                    }
                    Some(_) => {}
                    None => {
                        self.votes.insert(key, m.to.clone());
                    }
                }
            }
            Body::RequestVote(rv)
                if !rv.pre_vote && d.term == rv.term && d.vote.as_deref() != Some(node.id.as_str()) =>
            {
                self.violation(format!("{} campaigns in term {} but the save holds vote {:?}", node.id, rv.term, d.vote));
            }
            Body::AppendEntriesResponse(r) if r.success => {
                if let Some((index, term)) = claim {
                    if index > d.snap.0 && d.term_at(index) != Some(term) {
                        self.violation(format!(
                            "{} acknowledges entries up to {index} (term {term}) that its completed save does not hold (saved log {}..{})",
                            node.id,
                            d.snap.0,
                            d.last_index()
                        ));
                    }
                }
            }
            Body::AppendEntries(a) => {
                for e in &a.entries {
                    self.escaped.insert((e.index, e.term));
                }
            }
            Body::InstallSnapshotResponse(r) if r.installed_index > 0 => {
                let held = r.installed_index <= d.last_index() && d.install_mark.is_none_or(|k| k != r.installed_index);
                if !held && r.installed_index as usize > self.committed.len() {
                    self.violation(format!(
                        "{} reports snapshot {} installed before saving it ({:?})",
                        node.id, r.installed_index, d.snap
                    ));
                }
            }
            _ => {}
        }
        trace!(self, "send {}", short(m));
    }

    /// An installed snapshot is the state machine at a committed position (Raft §7: a snapshot
    /// holds only committed entries, `lastIncludedIndex`/`lastIncludedTerm` name the last one).
    ///
    /// Index 0 (term 0) is such a position too: it is the empty prefix of every log, committed
    /// by definition, and the state it names is the empty state machine every node starts from.
    /// A leader whose state machine is still at 0 (it has applied nothing yet, or applying is held
    /// for an open snapshot read) streams exactly that to a follower waiting for a snapshot
    /// (`needsSnapshot`, an install interrupted by a crash): the follower's state machine becomes
    /// empty and correct, its log is kept (the entry at 0 matches, §7 "retain the entries
    /// following it"), and it applies its committed entries from 1 on. Nothing is lost or
    /// contradicted, so the check accepts it; any other index must be a committed entry of the
    /// same term, and the contents must be exactly the commands committed up to it.
    pub fn check_installed(&mut self, i: usize, index: u64) {
        let node = &self.nodes[i];
        let raft = node.raft();
        let committed = match index {
            0 => Some(0),
            _ => self.committed.get(index as usize - 1).map(|c| c.term),
        };
        match committed {
            Some(t) if Some(t) == raft.log().term(index) => {}
            other => self.violation(format!(
                "{} installed a snapshot at {index} (term {:?}) that does not match the committed entry {:?}",
                node.id,
                raft.log().term(index),
                other
            )),
        }
        // Every command committed at or below the snapshot is in it.
        let expected = self.cmd_index.iter().filter(|(_, k)| **k <= index).count();
        if expected != node.disk.sm.len() || node.disk.sm_applied != index {
            self.violation(format!(
                "{}: snapshot {index} holds {} commands (applied {}), {expected} were committed up to it",
                node.id,
                node.disk.sm.len(),
                node.disk.sm_applied
            ));
        }
        trace!(self, "{} installed snapshot {index}", self.nodes[i].id);
    }

    /// How long healing may take: a base bound, plus time for a node to catch up from nothing
    /// (a snapshot chunk by chunk, or the log batch by batch; twice, in case a transfer restarts).
    fn end_bound(&self) -> u64 {
        let c = &self.cfg;
        let round_trip = 2 * c.delay.1 + 2 * c.disk_delay.1 + c.apply_delay.1 + 10;
        let len = self.committed.len() as u64 + 10;
        let chunks = len / c.snapshot_chunk.max(1) as u64 + 1;
        let batches = len / 64 + 1;
        c.end_bound_ms + 2 * (chunks + batches) * round_trip
    }

    pub fn end_check(&mut self) {
        if self.now > self.end_started + self.end_bound() {
            self.violation(format!(
                "liveness: {} ms after healing there is still no leader that committed a proposal on all members (ops {:?})",
                self.end_bound(),
                self.ops
            ));
        }
        if !self.ops.is_empty()
            || self.nodes.iter().any(|n| matches!(n.status, Status::Wiped | Status::Stopped | Status::Crashed))
        {
            return;
        }
        let leaders = self.leaders();
        if leaders.len() != 1 {
            return;
        }
        let l = leaders[0];
        let (term, inc) = (self.nodes[l].raft().term(), self.nodes[l].inc);
        if self.final_proposed_in != Some((l, inc, term)) {
            let cmd = format!(r#""final-{}""#, self.final_cmds.len());
            if self.propose(l, &cmd).is_some() {
                self.final_cmds.push(cmd);
                self.final_proposed_in = Some((l, inc, term));
            }
            return;
        }
        let members: Vec<usize> =
            self.nodes[l].raft().members().ids().filter_map(|id| node_index(id, self.nodes.len())).collect();
        let cmd = self.final_cmds.last().expect("a final command");
        if !members.iter().all(|&m| self.nodes[m].is_up() && self.nodes[m].has_command(cmd)) {
            return;
        }
        // A follower that lost track of the leader for a moment (its election timer ran out
        // during a long snapshot install, and its pre-vote was refused) hears from it again
        // within a heartbeat: wait for that (the liveness bound above still holds).
        if members.iter().any(|&m| m != l && self.nodes[m].raft().leader().is_none()) {
            return;
        }
        // Live again. Now the final checks.
        let lid = self.nodes[l].id.clone();
        for &m in &members {
            let r = self.nodes[m].raft();
            if m != l && r.leader() != Some(lid.as_str()) {
                self.violation(format!(
                    "{} does not follow the single leader {lid} at the end (leader {:?})",
                    self.nodes[m].id,
                    r.leader()
                ));
            }
        }
        for (index, cmd) in &self.acked {
            for &m in &members {
                let sm = &self.nodes[m].disk.sm;
                let found = sm.binary_search_by_key(index, |(i, _)| *i).ok().map(|k| &sm[k].1);
                if found != Some(cmd) {
                    self.violation(format!(
                        "acknowledged command {cmd} at index {index} is missing from {}'s state machine (found {:?})",
                        self.nodes[m].id, found
                    ));
                }
            }
        }
        self.stats.end_ms = self.now - self.end_started;
        self.stats.max_term = self.nodes.iter().filter_map(|n| n.core().map(|r| r.term())).max().unwrap_or(0);
        trace!(self, "DONE: leader {lid} term {term}, {} acked", self.acked.len());
        self.phase = Phase::Done;
    }
}

/// A one-line description of a message for traces.
pub fn short(m: &Message) -> String {
    let b = match &m.body {
        Body::AppendEntries(a) => format!(
            "AE t{} prev=({},{}) n={}{} commit={}",
            a.term,
            a.prev_log_index,
            a.prev_log_term,
            a.entries.len(),
            a.entries.last().map(|e| format!(" last=({},{})", e.index, e.term)).unwrap_or_default(),
            a.leader_commit
        ),
        Body::AppendEntriesResponse(r) => format!(
            "AER t{} ok={} match={} reject={} hint={:?}/{:?}{}",
            r.term,
            r.success,
            r.match_index,
            r.reject_index,
            r.conflict_index,
            r.conflict_term,
            if r.needs_snapshot { " needs_snapshot" } else { "" }
        ),
        Body::RequestVote(r) => format!(
            "RV{} t{} last=({},{})",
            if r.pre_vote { "(pre)" } else { "" },
            r.term,
            r.last_log_index,
            r.last_log_term
        ),
        Body::RequestVoteResponse(r) => {
            format!("RVR{} t{} granted={}", if r.pre_vote { "(pre)" } else { "" }, r.term, r.vote_granted)
        }
        Body::InstallSnapshot(s) => format!(
            "IS t{} snap=({},{}) seq={} done={}",
            s.term, s.last_included_index, s.last_included_term, s.seq, s.done
        ),
        Body::InstallSnapshotResponse(s) => {
            format!("ISR t{} seq={} ok={} installed={}", s.term, s.seq, s.success, s.installed_index)
        }
        Body::ReadIndex(r) => format!("RI t{} id={}", r.term, r.id),
        Body::ReadIndexResponse(r) => format!("RIR t{} id={} ok={} index={}", r.term, r.id, r.success, r.index),
        Body::TimeoutNow(t) => format!("TN t{}", t.term),
        Body::TimeoutNowResponse(t) => format!("TNR t{} ok={}", t.term, t.success),
    };
    format!("{}->{} {b}", m.from, m.to)
}
