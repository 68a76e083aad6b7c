//! Learners: members that receive the log but do not vote, and the promotion of those joined to
//! become voters once they have caught up.
//!
//! `join` adds a member as a learner with `promote` set, so that a node that must first catch
//! up (perhaps from a large snapshot) counts toward no quorum meanwhile: writes go on at the
//! pace of the voters. The intent is part of the membership (persisted and replicated), so
//! whichever node leads proposes the promotion, including a leader elected while the learner
//! was catching up.

use super::Raft;
use crate::entry::EntryKind;
use crate::membership::Suffrage;
use crate::progress::ProgressState;

/// How many entries a learner joined to become a voter may lag behind the leader's last index
/// when its promotion is proposed. Small enough that, as a voter, it holds up commitment for a
/// moment at most (one or two AppendEntries); large enough that a steady stream of writes does
/// not keep it from ever being close enough.
pub const PROMOTE_WITHIN: u64 = 100;

impl Raft {
    /// Leader: proposes the promotion of one learner that was joined to become a voter and has
    /// caught up: it is in step (`Replicate`), answered within the last election timeout, and
    /// its log is within [`PROMOTE_WITHIN`] entries of ours. One membership change at a time,
    /// as always: nothing happens while another is uncommitted.
    pub(super) fn maybe_promote(&mut self) {
        if !self.can_change_membership() {
            return;
        }
        let last = self.log.last_index();
        let ready = self.members.iter().find(|(id, m)| {
            m.suffrage == Suffrage::Learner { promote: true }
                && self.is_active_peer(id)
                && self.progress.get(*id).is_some_and(|p| p.state == ProgressState::Replicate && p.match_index + PROMOTE_WITHIN >= last)
        });
        let Some((id, m)) = ready else { return };
        let kind = EntryKind::AddPeer { id: id.clone(), metadata: m.metadata.clone() };
        // Appending fails only with a full log, when nothing more can be committed anyway.
        let _ = self.append(kind);
    }

    /// Whether `id` is a voter in the committed membership: every membership entry in this
    /// node's log is committed and it makes `id` a voter. A join completes when this holds for
    /// the joined peer (on any node, leader or not: the promotion reaches them all).
    pub fn is_committed_voter(&self, id: &str) -> bool {
        self.commit >= self.pending_conf_index && self.members.is_voter(id)
    }

    /// Leader: whether peer `id` answered within the last election timeout. A join keeps
    /// waiting for its learner's promotion while this holds (it is catching up).
    pub fn is_active_peer(&self, id: &str) -> bool {
        let since = self.now.saturating_sub(self.cfg.max_election_timeout);
        self.is_leader() && self.progress.get(id).is_some_and(|p| p.last_heard >= since)
    }
}
