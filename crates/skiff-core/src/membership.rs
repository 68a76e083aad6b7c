//! Cluster membership: who votes, who only learns, and the metadata each member joined with.

use crate::entry::{EntryKind, Json};
use crate::json_out::write_array;
use crate::message::{write_member, PeerDesc};
use std::collections::BTreeMap;

/// How a member takes part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suffrage {
    /// Counts toward every quorum (commit, election, check-quorum lease) and may campaign.
    Voter,
    /// Receives the log but counts toward no quorum and never campaigns. With `promote`, it was
    /// joined to become a voter: whichever node leads proposes its promotion once it has caught
    /// up (`learners.rs`); without, it is a permanent learner (a read replica).
    Learner { promote: bool },
}

impl Suffrage {
    /// As a peer list writes it: (`voter`, `promote`).
    pub fn flags(self) -> (bool, bool) {
        match self {
            Suffrage::Voter => (true, false),
            Suffrage::Learner { promote } => (false, promote),
        }
    }
}

/// One member: its metadata and how it takes part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub metadata: Json,
    pub suffrage: Suffrage,
}

/// The members of the cluster (voters and learners), self included when self is a member.
///
/// Membership changes are single-server changes that take effect as soon as the entry is
/// appended (Raft thesis §4.1), so the membership a node acts on is always "the base membership at
/// the start of its log, with every membership entry in the log applied in order". Adding or
/// removing a learner, or promoting one, changes the voter set by at most one, so the same rule
/// keeps them safe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    members: BTreeMap<String, Member>,
}

impl Membership {
    pub fn new() -> Membership {
        Membership::default()
    }

    /// A membership of voters.
    pub fn from_members<I: IntoIterator<Item = (String, Json)>>(iter: I) -> Membership {
        Membership {
            members: iter
                .into_iter()
                .map(|(id, metadata)| (id, Member { metadata, suffrage: Suffrage::Voter }))
                .collect(),
        }
    }

    /// A membership as persisted and sent (see [`Membership::peers`]).
    pub fn from_peers<I: IntoIterator<Item = PeerDesc>>(iter: I) -> Membership {
        Membership { members: iter.into_iter().map(|p| (p.id.clone(), p.member())).collect() }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }

    pub fn metadata(&self, id: &str) -> Option<&Json> {
        self.members.get(id).map(|m| &m.metadata)
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Whether `id` is a member that votes.
    pub fn is_voter(&self, id: &str) -> bool {
        self.members.get(id).is_some_and(|m| m.suffrage == Suffrage::Voter)
    }

    /// Members, voters and learners.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Ids of every member, voters and learners: those a leader replicates to.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.members.keys()
    }

    /// Ids of the voters: those that count toward a quorum and are asked for votes.
    pub fn voters(&self) -> impl Iterator<Item = &String> {
        self.members.iter().filter(|(_, m)| m.suffrage == Suffrage::Voter).map(|(id, _)| id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.members.iter()
    }

    /// The members as they are persisted and sent (`{id, metadata}`, plus `voter: false` and
    /// `promote` for a learner only, so that skiff-algorithm still reads the list).
    pub fn peers(&self) -> impl Iterator<Item = PeerDesc> + '_ {
        self.iter().map(|(id, m)| PeerDesc::new(id.clone(), m))
    }

    /// Writes the members as the array `peers()` serializes to, leaving out `except` (see
    /// [`crate::json_out`]: the saved document holds it twice per save).
    pub fn write_json(&self, out: &mut String, except: Option<&str>) {
        let members = self.members.iter().filter(|(id, _)| Some(id.as_str()) != except);
        write_array(out, members, |out, (id, m)| {
            let (voter, promote) = m.suffrage.flags();
            write_member(out, id, &m.metadata, voter, promote);
        });
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters().count() / 2 + 1
    }

    /// The highest value that a majority of the voters each reach, where `value` gives each
    /// voter's (`None`: below any value). `None` when no majority reaches any value, as with no
    /// voters at all. The one place a quorum is counted: commitment (the highest index a
    /// majority holds), votes and leases ([`Membership::has_quorum`]). Learners never count.
    pub fn quorum_value(&self, value: impl Fn(&str) -> Option<u64>) -> Option<u64> {
        let mut values: Vec<Option<u64>> = self.voters().map(|id| value(id)).collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).copied().flatten()
    }

    /// Whether the voters for which `counts` holds are a majority.
    pub fn has_quorum(&self, counts: impl Fn(&str) -> bool) -> bool {
        self.quorum_value(|id| counts(id).then_some(0)).is_some()
    }

    /// Adds `id` as a voter, or makes it one (a promotion), with this metadata.
    pub fn insert(&mut self, id: String, metadata: Json) {
        self.insert_as(id, metadata, Suffrage::Voter);
    }

    pub fn insert_as(&mut self, id: String, metadata: Json, suffrage: Suffrage) {
        self.members.insert(id, Member { metadata, suffrage });
    }

    pub fn remove(&mut self, id: &str) {
        self.members.remove(id);
    }

    /// Applies a membership entry; other entries leave it unchanged.
    pub fn apply(&mut self, kind: &EntryKind) {
        match kind {
            EntryKind::AddPeer { id, metadata } => self.insert(id.clone(), metadata.clone()),
            EntryKind::AddLearner { id, metadata, promote } => {
                self.insert_as(id.clone(), metadata.clone(), Suffrage::Learner { promote: *promote })
            }
            EntryKind::RemovePeer { id } => self.remove(id),
            _ => {}
        }
    }

    /// Reverses a membership entry. Used only to recover the membership at the start of a log
    /// persisted by skiff-algorithm, which stored the current peers but not the older ones (and
    /// had no learners). The metadata of a peer brought back this way is unknown and left empty.
    pub fn unapply(&mut self, kind: &EntryKind) {
        match kind {
            EntryKind::AddPeer { id, .. } | EntryKind::AddLearner { id, .. } => self.remove(id),
            EntryKind::RemovePeer { id } => self.insert(id.clone(), Json::empty_object()),
            _ => {}
        }
    }

    /// Whether the two memberships have a common majority-overlap guarantee: single-server
    /// changes differ by at most one voter (learners count toward no majority).
    pub fn differs_by_at_most_one(&self, other: &Membership) -> bool {
        let added = other.voters().filter(|id| !self.is_voter(id)).count();
        let removed = self.voters().filter(|id| !other.is_voter(id)).count();
        added + removed <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ids: &[&str]) -> Membership {
        Membership::from_members(ids.iter().map(|id| (id.to_string(), Json::empty_object())))
    }

    #[test]
    fn quorum_value_is_the_highest_value_a_majority_reaches() {
        let m = of(&["a", "b", "c", "d", "e"]);
        let matched = |id: &str| match id {
            "a" => Some(9),
            "b" => Some(4),
            "c" => Some(7),
            "d" => None,
            _ => Some(1),
        };
        assert_eq!(m.quorum_value(matched), Some(4));
        assert_eq!(m.quorum_value(|id| (id < "c").then_some(5)), None);
        assert_eq!(of(&[]).quorum_value(|_| Some(3)), None);
        assert_eq!(of(&["a"]).quorum_value(|_| Some(3)), Some(3));
    }

    #[test]
    fn has_quorum_needs_more_than_half() {
        let m = of(&["a", "b", "c", "d"]);
        assert!(!m.has_quorum(|id| id < "c"));
        assert!(m.has_quorum(|id| id < "d"));
        assert!(!of(&[]).has_quorum(|_| true));
    }

    #[test]
    fn learners_count_toward_no_quorum() {
        let mut m = of(&["a", "b", "c"]);
        m.insert_as("d".into(), Json::empty_object(), Suffrage::Learner { promote: true });
        m.insert_as("e".into(), Json::empty_object(), Suffrage::Learner { promote: false });
        assert_eq!(m.quorum(), 2);
        assert!(!m.has_quorum(|id| id == "a" || id >= "d"));
        assert!(m.has_quorum(|id| id <= "b"));
        assert_eq!(m.quorum_value(|id| if id >= "d" { Some(9) } else { Some(1) }), Some(1));
        assert!(m.differs_by_at_most_one(&of(&["a", "b", "c", "d"])));
        assert!(!m.differs_by_at_most_one(&of(&["a", "b", "c", "d", "e"])));
    }
}
