//! Cluster membership: who votes, and the metadata each member joined with.

use crate::entry::{EntryKind, Json};
use crate::message::PeerDesc;
use std::collections::BTreeMap;

/// The voting members of the cluster, self included when self is a member.
///
/// Membership changes are single-server changes that take effect as soon as the entry is
/// appended (Raft thesis §4.1), so the membership a node acts on is always "the base membership at
/// the start of its log, with every membership entry in the log applied in order".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    members: BTreeMap<String, Json>,
}

impl Membership {
    pub fn new() -> Membership {
        Membership::default()
    }

    pub fn from_members<I: IntoIterator<Item = (String, Json)>>(iter: I) -> Membership {
        Membership { members: iter.into_iter().collect() }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }

    pub fn metadata(&self, id: &str) -> Option<&Json> {
        self.members.get(id)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.members.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Json)> {
        self.members.iter()
    }

    /// The members as they are persisted and sent (`{id, metadata}`).
    pub fn peers(&self) -> impl Iterator<Item = PeerDesc> + '_ {
        self.iter().map(|(id, metadata)| PeerDesc { id: id.clone(), metadata: metadata.clone() })
    }

    /// Votes needed for a majority.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// The highest value that a majority of the members each reach, where `value` gives each
    /// member's (`None`: below any value). `None` when no majority reaches any value, as with no
    /// members at all. The one place a quorum is counted: commitment (the highest index a
    /// majority holds), votes and leases ([`Membership::has_quorum`]).
    pub fn quorum_value(&self, value: impl Fn(&str) -> Option<u64>) -> Option<u64> {
        let mut values: Vec<Option<u64>> = self.ids().map(|id| value(id)).collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).copied().flatten()
    }

    /// Whether the members for which `counts` holds are a majority.
    pub fn has_quorum(&self, counts: impl Fn(&str) -> bool) -> bool {
        self.quorum_value(|id| counts(id).then_some(0)).is_some()
    }

    pub fn insert(&mut self, id: String, metadata: Json) {
        self.members.insert(id, metadata);
    }

    pub fn remove(&mut self, id: &str) {
        self.members.remove(id);
    }

    /// Applies a membership entry; other entries leave it unchanged.
    pub fn apply(&mut self, kind: &EntryKind) {
        match kind {
            EntryKind::AddPeer { id, metadata } => self.insert(id.clone(), metadata.clone()),
            EntryKind::RemovePeer { id } => self.remove(id),
            _ => {}
        }
    }

    /// Reverses a membership entry. Used only to recover the membership at the start of a log
    /// persisted by skiff-algorithm, which stored the current peers but not the older ones.
    /// The metadata of a peer brought back this way is unknown and left empty.
    pub fn unapply(&mut self, kind: &EntryKind) {
        match kind {
            EntryKind::AddPeer { id, .. } => self.remove(id),
            EntryKind::RemovePeer { id } => self.insert(id.clone(), Json::empty_object()),
            _ => {}
        }
    }

    /// Whether the two memberships have a common majority-overlap guarantee: single-server
    /// changes differ by at most one member.
    pub fn differs_by_at_most_one(&self, other: &Membership) -> bool {
        let added = other.ids().filter(|id| !self.contains(id)).count();
        let removed = self.ids().filter(|id| !other.contains(id)).count();
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
}
