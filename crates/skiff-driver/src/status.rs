//! What the JS side may read synchronously about a running node.

use super::snapshot_send::Transfers;
use skiff_core::{Membership, Raft, Role};

/// What the leader knows of one follower, as of the last round (`node.stats().members`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: String,
    pub match_index: u64,
    pub next_index: u64,
    /// AppendEntries sent to it and not yet answered.
    pub inflight: usize,
    /// Milliseconds between its last answer and the round that published this.
    pub last_contact_ms: u64,
    /// A snapshot transfer to it is open, and how many bytes of chunks it has carried so far.
    pub snapshot_sending: bool,
    pub snapshot_bytes: u64,
    /// Index of the snapshot of the open transfer (0: none), to tell at its end whether the
    /// follower installed it (its match index reached it) or the transfer failed.
    snapshot_index: u64,
}

/// The driver's last published view. Written by the driver after each round (`observe`, and
/// `state` as roles change); read by the binding's getters (`currentTerm()`, `currentLeader()`,
/// `state.name`, `peerMeta()`, `stats()`).
#[derive(Debug, Clone)]
pub struct Status {
    pub term: u64,
    pub leader: Option<String>,
    /// `idle` until persisted state is loaded, then the core's role, and `stopped` at the end.
    pub state: &'static str,
    pub members: Membership,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    /// First index still in the log (one past the last compacted entry).
    pub first_index: u64,
    /// While this node leads: one entry per other member, in id order; empty otherwise.
    pub peers: Vec<PeerStatus>,
    /// Elections this node stood in: terms it took as a candidate, voting for itself. A pre-vote
    /// round that found no majority changes no term and is not counted.
    pub elections_started: u64,
    /// Times the known leader became a different node (not counting becoming unknown).
    pub leader_changes: u64,
    /// Snapshots a follower installed from this node as its leader, and the bytes of snapshot
    /// chunks this node sent (transfers that failed included).
    pub snapshots_sent: u64,
    pub snapshot_bytes_sent: u64,
    /// Invariant: the highest term counted in `elections_started` (each term counts once).
    election_term: u64,
    /// The last leader that was known, so that leader → none → same leader is no change.
    last_known_leader: Option<String>,
    /// Invariant: `members` is the core's membership as of this count of its changes
    /// (`Raft::members_changes`); `None` before the first `observe`.
    members_changes: Option<u64>,
    /// Invariant: `peers` holds one entry per key of the core's progress map as it was while
    /// leading at this (count of membership changes, term). A leader's progress map gets its
    /// keys when it takes office (a new term) and changes them only with its membership, so
    /// while this pair holds the ids need no comparing; `None` when not leading.
    peers_of: Option<(u64, u64)>,
}

impl Default for Status {
    fn default() -> Status {
        Status {
            term: 0,
            leader: None,
            state: "idle",
            members: Membership::new(),
            commit: 0,
            applied: 0,
            last_index: 0,
            first_index: 1,
            peers: Vec::new(),
            elections_started: 0,
            leader_changes: 0,
            snapshots_sent: 0,
            snapshot_bytes_sent: 0,
            election_term: 0,
            last_known_leader: None,
            members_changes: None,
            peers_of: None,
        }
    }
}

impl Status {
    /// Takes in the core's state after a round, at `now` (the driver's ms). Called once per
    /// round, so it allocates only when something changed: the leader, the membership or the
    /// set of followers.
    pub(crate) fn observe(&mut self, raft: &Raft, transfers: &Transfers, now: u64) {
        self.term = raft.term();
        self.commit = raft.commit();
        self.applied = raft.applied();
        self.last_index = raft.log().last_index();
        self.first_index = raft.log().first_index();
        if self.members_changes != Some(raft.members_changes()) {
            self.members = raft.members().clone();
            self.members_changes = Some(raft.members_changes());
        }
        self.observe_leader(raft.leader());
        let (_, vote) = raft.hard_state_ref();
        let standing = matches!(raft.role(), Role::Candidate | Role::Leader) && vote == Some(raft.id());
        if standing && raft.term() > self.election_term {
            self.election_term = raft.term();
            self.elections_started += 1;
        }
        self.snapshot_bytes_sent = transfers.bytes_sent();
        self.observe_peers(raft, transfers, now);
    }

    fn observe_leader(&mut self, leader: Option<&str>) {
        if self.leader.as_deref() == leader {
            return;
        }
        self.leader = leader.map(str::to_string);
        if leader.is_some() && self.last_known_leader.as_deref() != leader {
            self.leader_changes += 1;
            self.last_known_leader = self.leader.clone();
        }
    }

    /// Rewrites `peers` in place from the leader's progress (same followers, same order, so no
    /// allocation in the steady state), and counts the transfers that ended in an install.
    fn observe_peers(&mut self, raft: &Raft, transfers: &Transfers, now: u64) {
        if !raft.is_leader() {
            self.peers.clear();
            self.peers_of = None;
            return;
        }
        let progress = raft.progress();
        let of = (raft.members_changes(), raft.term());
        let same = self.peers_of == Some(of)
            || (self.peers.len() == progress.len() && self.peers.iter().zip(progress.keys()).all(|(p, id)| p.id == *id));
        self.peers_of = Some(of);
        if !same {
            let old = std::mem::take(&mut self.peers);
            self.peers = progress
                .keys()
                .map(|id| old.iter().find(|p| p.id == *id).cloned().unwrap_or_else(|| PeerStatus { id: id.clone(), ..PeerStatus::default() }))
                .collect();
        }
        let mut installed = 0;
        for (peer, p) in self.peers.iter_mut().zip(progress.values()) {
            peer.match_index = p.match_index;
            peer.next_index = p.next_index;
            peer.inflight = p.inflight.len();
            peer.last_contact_ms = now.saturating_sub(p.last_heard);
            match transfers.outgoing(&peer.id) {
                Some((bytes, index)) => {
                    peer.snapshot_sending = true;
                    peer.snapshot_bytes = bytes;
                    peer.snapshot_index = index;
                }
                None => {
                    if peer.snapshot_index != 0 && p.match_index >= peer.snapshot_index {
                        installed += 1;
                    }
                    peer.snapshot_sending = false;
                    peer.snapshot_bytes = 0;
                    peer.snapshot_index = 0;
                }
            }
        }
        self.snapshots_sent += installed;
    }

    /// What the leader knows of `id` (another member), while this node leads.
    pub fn peer(&self, id: &str) -> Option<&PeerStatus> {
        self.peers.iter().find(|p| p.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_core::{Config, Json, Restored};

    #[test]
    fn a_lone_node_that_elects_itself_counts_one_election_and_one_leader() {
        let restored = Restored { bootstrap: Some(Json::empty_object()), ..Restored::default() };
        let mut raft = Raft::new(Config::new("a"), restored).expect("valid config");
        let transfers = Transfers::default();
        let mut s = Status::default();
        s.observe(&raft, &transfers, 0);
        assert_eq!((s.elections_started, s.leader_changes, s.leader.as_deref()), (0, 0, None));
        raft.tick(1000);
        s.observe(&raft, &transfers, 1000);
        assert_eq!(raft.role(), Role::Leader);
        assert_eq!((s.elections_started, s.leader_changes, s.leader.as_deref()), (1, 1, Some("a")));
        assert_eq!(s.term, 1);
        assert!(s.peers.is_empty(), "no followers to show");
        // the same term seen again is no new election
        s.observe(&raft, &transfers, 1001);
        assert_eq!((s.elections_started, s.leader_changes), (1, 1));
    }

    #[test]
    fn a_leader_that_goes_unknown_and_comes_back_is_no_change() {
        let mut s = Status::default();
        s.observe_leader(Some("a"));
        s.observe_leader(None);
        s.observe_leader(Some("a"));
        assert_eq!(s.leader_changes, 1);
        s.observe_leader(Some("b"));
        assert_eq!(s.leader_changes, 2);
        assert_eq!(s.leader.as_deref(), Some("b"));
    }
}
