//! Proposals: user commands and membership changes appended to the leader's log.

use super::{ProposeError, Raft, MAX_SAFE};
use crate::entry::{Entry, EntryKind, Json};
use crate::membership::{Member, Suffrage};
use crate::ready::Event;

impl Raft {
    /// Appends a user command. Returns its index.
    pub fn propose(&mut self, command: Json) -> Result<u64, ProposeError> {
        self.ensure_leader()?;
        self.ensure_not_transferring()?;
        self.append(EntryKind::Command(command))
    }

    /// Proposes a single-server membership change. `Ok(None)` means there is nothing to do
    /// (the member is already there with that metadata and suffrage, or already absent).
    ///
    /// A learner to be promoted (`AddLearner` with `promote`) is a join: for a member that
    /// already votes it only updates the metadata, as an `AddPeer`; it never demotes a voter.
    pub fn propose_membership(&mut self, kind: EntryKind) -> Result<Option<u64>, ProposeError> {
        self.ensure_leader()?;
        self.ensure_not_transferring()?;
        let kind = match kind {
            EntryKind::AddLearner { id, metadata, promote: true } if self.members.is_voter(&id) => {
                EntryKind::AddPeer { id, metadata }
            }
            other => other,
        };
        let needed = match &kind {
            EntryKind::AddPeer { id, metadata } => {
                self.members.member(id) != Some(&Member { metadata: metadata.clone(), suffrage: Suffrage::Voter })
            }
            EntryKind::AddLearner { id, metadata, promote } => {
                let suffrage = Suffrage::Learner { promote: *promote };
                self.members.member(id) != Some(&Member { metadata: metadata.clone(), suffrage })
            }
            EntryKind::RemovePeer { id } => self.members.contains(id),
            _ => return Ok(None),
        };
        if !needed {
            return Ok(None);
        }
        if !self.can_change_membership() {
            return Err(ProposeError::MembershipChangePending);
        }
        self.append(kind).map(Some)
    }

    /// A leader whose install is pending leads only to hand its log on (`holds_back_election`):
    /// it could not apply what it takes, and steps down as soon as its barrier commits, so it
    /// answers proposals as a follower that knows no leader would.
    pub(super) fn ensure_leader(&self) -> Result<(), ProposeError> {
        if self.is_leader() && self.install.is_none() {
            Ok(())
        } else if self.is_leader() {
            Err(ProposeError::NotLeader { leader: None })
        } else {
            Err(ProposeError::NotLeader { leader: self.leader.clone() })
        }
    }

    /// A leader handing over takes nothing new: the target must catch up with a log that stops
    /// growing (Raft thesis §3.10).
    fn ensure_not_transferring(&self) -> Result<(), ProposeError> {
        match &self.transfer {
            Some(t) => Err(ProposeError::Transferring { target: t.target.clone() }),
            None => Ok(()),
        }
    }

    pub(super) fn append(&mut self, kind: EntryKind) -> Result<u64, ProposeError> {
        let index = self.log.last_index() + 1;
        if index > MAX_SAFE {
            return Err(ProposeError::LogFull);
        }
        let entry = Entry { term: self.term, index, kind, uuid: self.rng.uuid() };
        let membership = entry.kind.is_membership();
        if let Err(e) = self.log.append(entry) {
            // Unreachable: the index is last + 1 and the term is ours, the highest in the log.
            self.events.push(Event::Rejected { from: self.cfg.id.clone(), reason: e.to_string() });
            return Err(ProposeError::LogFull);
        }
        self.dirty = true;
        self.need_broadcast = true;
        if membership {
            self.pending_conf_index = index;
            self.refresh_members();
            if !self.is_voter() {
                self.choose_successor();
            }
        }
        Ok(index)
    }
}
