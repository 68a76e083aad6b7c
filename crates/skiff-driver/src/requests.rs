//! Requests answered once a log entry is applied (commands, `waitForNode`, membership changes,
//! joins that wait for the promotion), and membership changes waiting their turn.

use skiff_core::EntryKind;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(PartialEq, Eq)]
pub(super) enum Waiting {
    /// A user command: completes when this node applied it (and `wait_for` did too).
    Command { wait_for: Option<String> },
    /// A membership change: completes when applied here.
    Membership,
    /// A join, which added `peer` as a learner to be promoted: completes once `peer` is a voter
    /// in the committed membership (see `Requests::promoted`).
    Join { peer: String },
}

pub(super) struct Pending {
    pub(super) index: u64,
    term: u64,
    deadline: u64,
    pub(super) timeout_ms: u64,
    waiting: Waiting,
    /// Applied locally; now only waiting for `wait_for`.
    applied: bool,
}

impl Pending {
    /// Why it failed when its deadline passed (`ETIMEDOUT`). A join whose learner entry
    /// committed leaves the learner in place: the leader still promotes it once it catches up.
    pub(super) fn timeout_message(&self) -> String {
        match &self.waiting {
            Waiting::Join { peer } if self.applied => format!(
                "timedout after {} ms waiting for {peer} to catch up and become a voter; it stays a learner, \
                 promoted once it catches up (leave() removes it)",
                self.timeout_ms
            ),
            _ => format!("timedout after {} ms trying to replicate log index {}", self.timeout_ms, self.index),
        }
    }
}

/// What became of a request when the entry at its index was applied.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Applied as proposed (and by `waitForNode`, if it named one): it succeeded at `index`.
    Done { req: u32, index: u64 },
    /// Another leader's entry took its index: it was not committed.
    Superseded { req: u32 },
}

/// Every request the engine answers once an entry is applied, by request id and by log index.
/// The driver tells it what was applied and answers what it hands back; it pushes no ops itself.
/// Invariant: every request in `pending` is listed under its index in `by_index` (a request is
/// found by the index it waits for), `awaiting_peer` holds exactly the ones applied here that
/// wait for `waitForNode`, and `awaiting_promotion` exactly the pending joins; no list in
/// `by_index` is empty.
#[derive(Default)]
pub(super) struct Requests {
    /// Ordered, so timeouts answer in the same order on every run (a seed replays exactly).
    pending: BTreeMap<u32, Pending>,
    /// The `pending` commands applied here that wait for another node (`waitForNode`): the only
    /// ones each round must look at.
    awaiting_peer: BTreeSet<u32>,
    /// The `pending` joins: their learner entry waits to be applied here, then the promotion.
    awaiting_promotion: BTreeSet<u32>,
    by_index: BTreeMap<u64, Vec<u32>>,
}

impl Requests {
    /// Waits for the entry (`index`, `term`) on behalf of `req`, until `deadline`.
    pub(super) fn track(&mut self, req: u32, index: u64, term: u64, deadline: u64, timeout_ms: u64, waiting: Waiting) {
        if matches!(waiting, Waiting::Join { .. }) {
            self.awaiting_promotion.insert(req);
        }
        self.pending.insert(req, Pending { index, term, deadline, timeout_ms, waiting, applied: false });
        self.by_index.entry(index).or_default().push(req);
    }

    /// Forgets a pending request, in every index.
    pub(super) fn untrack(&mut self, req: u32) -> Option<Pending> {
        let p = self.pending.remove(&req)?;
        self.awaiting_peer.remove(&req);
        self.awaiting_promotion.remove(&req);
        if let Some(v) = self.by_index.get_mut(&p.index) {
            v.retain(|r| *r != req);
            if v.is_empty() {
                self.by_index.remove(&p.index);
            }
        }
        Some(p)
    }

    /// Whether some request waits for the entry at `index`.
    pub(super) fn waits_for(&self, index: u64) -> bool {
        self.by_index.contains_key(&index)
    }

    /// Whether some request waits for the entry (`index`, `term`) as proposed: the wrapper then
    /// keeps what `applyCommand` calls back with for that item, for the `done` that answers it.
    pub(super) fn wants_result(&self, index: u64, term: u64) -> bool {
        self.by_index
            .get(&index)
            .is_some_and(|reqs| reqs.iter().any(|r| self.pending.get(r).is_some_and(|p| p.term == term)))
    }

    /// The entry (`index`, `term`) was applied here: what became of the requests waiting for it,
    /// in the order they were made. A command with `waitForNode` finishes only once
    /// `peer_applied` says that node applied it too; until then it waits (see `wait_for_node`).
    pub(super) fn applied(&mut self, index: u64, term: u64, peer_applied: impl Fn(&str) -> Option<u64>) -> Vec<Outcome> {
        let mut out = Vec::new();
        let Some(reqs) = self.by_index.remove(&index) else { return out };
        for req in reqs {
            let Some(p) = self.pending.get_mut(&req) else { continue };
            if p.term != term {
                self.pending.remove(&req);
                self.awaiting_promotion.remove(&req);
                out.push(Outcome::Superseded { req });
                continue;
            }
            p.applied = true;
            let finished = match &p.waiting {
                Waiting::Command { wait_for: Some(node) } => peer_applied(node).is_some_and(|a| a >= index),
                Waiting::Join { .. } => false,
                _ => true,
            };
            if finished {
                self.pending.remove(&req);
                out.push(Outcome::Done { req, index });
            } else {
                // Keep it findable by the waitForNode or promotion scan.
                self.by_index.entry(index).or_default().push(req);
                if !matches!(p.waiting, Waiting::Join { .. }) {
                    self.awaiting_peer.insert(req);
                }
            }
        }
        out
    }

    /// Finishes the commands applied here whose `waitForNode` has now applied them too; returns
    /// them with their index.
    pub(super) fn wait_for_node(&mut self, peer_applied: impl Fn(&str) -> Option<u64>) -> Vec<(u32, u64)> {
        let mut finished = Vec::new();
        for (req, p) in self.awaiting_peer.iter().filter_map(|r| self.pending.get(r).map(|p| (r, p))) {
            if let (true, Waiting::Command { wait_for: Some(node) }) = (p.applied, &p.waiting) {
                if peer_applied(node).is_some_and(|a| a >= p.index) {
                    finished.push((*req, p.index));
                }
            }
        }
        for (req, _) in &finished {
            self.untrack(*req);
        }
        finished
    }

    /// Finishes the joins whose learner entry was applied here and whose learner is now a voter
    /// in the committed membership (`voter`); returns them with the index of their learner
    /// entry. A join whose learner `active` says is answering the leader (catching up, perhaps
    /// from a large snapshot, while the leader holds back applying to read it) gets its full
    /// timeout again from `now`: it fails only once its learner was silent, or this node lost
    /// sight of it, for that long.
    pub(super) fn promoted(&mut self, now: u64, voter: impl Fn(&str) -> bool, active: impl Fn(&str) -> bool) -> Vec<(u32, u64)> {
        let mut finished = Vec::new();
        for req in &self.awaiting_promotion {
            let Some(p) = self.pending.get_mut(req) else { continue };
            let Waiting::Join { peer } = &p.waiting else { continue };
            if p.applied && voter(peer) {
                finished.push((*req, p.index));
            } else if active(peer) {
                p.deadline = p.deadline.max(now + p.timeout_ms);
            }
        }
        for (req, _) in &finished {
            self.untrack(*req);
        }
        finished
    }

    /// Whether some join waits for its peer's promotion (so the driver need not look otherwise).
    pub(super) fn awaits_promotion(&self) -> bool {
        !self.awaiting_promotion.is_empty()
    }

    /// The requests whose deadline passed at `now` (still tracked: `untrack` each).
    pub(super) fn expired(&self, now: u64) -> Vec<u32> {
        self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(r, _)| *r).collect()
    }

    /// Forgets every request; returns their ids.
    pub(super) fn clear(&mut self) -> Vec<u32> {
        let reqs: Vec<u32> = self.pending.keys().copied().collect();
        self.pending.clear();
        self.awaiting_peer.clear();
        self.awaiting_promotion.clear();
        self.by_index.clear();
        reqs
    }
}

/// A membership change waiting for the one before it to commit.
pub(super) struct MembershipRequest {
    pub(super) req: u32,
    pub(super) kind: EntryKind,
    pub(super) deadline: u64,
}

/// Membership changes waiting their turn: Raft takes one at a time, so the leader proposes the
/// oldest once the previous one committed, and the rest wait here (each until its deadline).
/// Invariant: oldest first; a request is either here or in `Requests`, never both.
#[derive(Default)]
pub(super) struct MembershipQueue {
    queue: VecDeque<MembershipRequest>,
}

impl MembershipQueue {
    /// Queues a change behind the others.
    pub(super) fn push(&mut self, req: u32, kind: EntryKind, deadline: u64) {
        self.queue.push_back(MembershipRequest { req, kind, deadline });
    }

    /// The change whose turn is next.
    pub(super) fn front(&self) -> Option<&MembershipRequest> {
        self.queue.front()
    }

    /// Takes the change whose turn is next, to propose it.
    pub(super) fn pop(&mut self) -> Option<MembershipRequest> {
        self.queue.pop_front()
    }

    /// Puts back a change that could not be proposed after all: it stays next.
    pub(super) fn put_back(&mut self, req: u32, kind: EntryKind, deadline: u64) {
        self.queue.push_front(MembershipRequest { req, kind, deadline });
    }

    /// Forgets every change (no longer leading, or stopping); returns their requests, oldest first.
    pub(super) fn clear(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.queue).into_iter().map(|m| m.req).collect()
    }

    /// Forgets the changes whose deadline passed at `now`; returns their requests, oldest first.
    pub(super) fn expire(&mut self, now: u64) -> Vec<u32> {
        let expired: Vec<u32> = self.queue.iter().filter(|m| m.deadline <= now).map(|m| m.req).collect();
        if !expired.is_empty() {
            self.queue.retain(|m| m.deadline > now);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(wait_for: Option<&str>) -> Waiting {
        Waiting::Command { wait_for: wait_for.map(String::from) }
    }

    #[test]
    fn a_command_finishes_when_applied_in_its_term_and_is_superseded_otherwise() {
        let mut r = Requests::default();
        r.track(1, 5, 2, 100, 100, command(None));
        r.track(2, 5, 2, 100, 100, Waiting::Membership);
        r.track(3, 6, 2, 100, 100, command(None));
        assert!(r.waits_for(5));
        assert_eq!(r.applied(5, 2, |_| None), vec![Outcome::Done { req: 1, index: 5 }, Outcome::Done { req: 2, index: 5 }]);
        assert!(!r.waits_for(5));
        assert_eq!(r.applied(6, 3, |_| None), vec![Outcome::Superseded { req: 3 }]);
        assert!(r.clear().is_empty());
    }

    #[test]
    fn a_result_is_wanted_only_for_an_entry_of_the_term_it_was_proposed_in() {
        let mut r = Requests::default();
        r.track(1, 5, 2, 100, 100, command(None));
        r.track(2, 6, 2, 100, 100, command(Some("b")));
        assert!(r.wants_result(5, 2));
        assert!(r.wants_result(6, 2));
        assert!(!r.wants_result(5, 3));
        assert!(!r.wants_result(7, 2));
        r.untrack(1);
        assert!(!r.wants_result(5, 2));
    }

    #[test]
    fn wait_for_node_holds_a_command_until_that_node_applied_it() {
        let mut r = Requests::default();
        r.track(1, 5, 2, 100, 100, command(Some("b")));
        assert!(r.applied(5, 2, |_| Some(4)).is_empty());
        assert!(r.wait_for_node(|_| Some(4)).is_empty());
        assert_eq!(r.wait_for_node(|n| (n == "b").then_some(5)), vec![(1, 5)]);
        assert!(r.wait_for_node(|_| Some(9)).is_empty());
        assert!(r.clear().is_empty());
        // one the node already applied finishes at once
        r.track(2, 6, 2, 100, 100, command(Some("b")));
        assert_eq!(r.applied(6, 2, |_| Some(6)), vec![Outcome::Done { req: 2, index: 6 }]);
    }

    #[test]
    fn a_join_finishes_when_its_peer_votes_and_waits_while_it_is_active() {
        let mut r = Requests::default();
        r.track(1, 5, 2, 100, 100, Waiting::Join { peer: "d".into() });
        assert!(r.promoted(0, |_| true, |_| false).is_empty(), "not before its learner entry is applied");
        // Its learner answers while the entry waits (the leader reads a snapshot for it): it waits.
        assert!(r.promoted(60, |_| false, |_| true).is_empty());
        assert!(r.expired(100).is_empty());
        assert!(r.applied(5, 2, |_| None).is_empty());
        assert!(r.awaits_promotion());
        // Still catching up at 90: its deadline moves to 190.
        assert!(r.promoted(90, |_| false, |p| p == "d").is_empty());
        assert!(r.expired(185).is_empty());
        assert_eq!(r.promoted(160, |p| p == "d", |_| false), vec![(1, 5)]);
        assert!(!r.awaits_promotion() && !r.waits_for(5));
        // A silent learner: the join expires at its deadline.
        r.track(2, 7, 2, 100, 100, Waiting::Join { peer: "e".into() });
        assert!(r.applied(7, 2, |_| None).is_empty());
        assert!(r.promoted(50, |_| false, |_| false).is_empty());
        assert_eq!(r.expired(100), vec![2]);
        assert!(r.untrack(2).is_some());
        assert!(!r.awaits_promotion());
    }

    #[test]
    fn expired_requests_are_found_and_untracked_from_every_index() {
        let mut r = Requests::default();
        r.track(1, 5, 2, 50, 50, command(Some("b")));
        r.track(2, 6, 2, 80, 80, command(None));
        assert!(r.applied(5, 2, |_| None).is_empty());
        assert_eq!(r.expired(50), vec![1]);
        let p = r.untrack(1).expect("tracked");
        assert_eq!((p.index, p.timeout_ms), (5, 50));
        assert!(!r.waits_for(5));
        assert!(r.wait_for_node(|_| Some(9)).is_empty());
        assert_eq!(r.clear(), vec![2]);
    }

    #[test]
    fn membership_changes_wait_in_order_and_expire() {
        let mut q = MembershipQueue::default();
        let remove = |id: &str| EntryKind::RemovePeer { id: id.into() };
        q.push(1, remove("a"), 10);
        q.push(2, remove("b"), 30);
        q.push(3, remove("c"), 20);
        assert_eq!(q.front().map(|m| m.req), Some(1));
        let first = q.pop().expect("queued");
        q.put_back(first.req, first.kind, first.deadline);
        assert_eq!(q.front().map(|m| m.req), Some(1));
        assert_eq!(q.expire(9), Vec::<u32>::new());
        assert_eq!(q.expire(20), vec![1, 3]);
        assert_eq!(q.clear(), vec![2]);
        assert!(q.front().is_none());
    }
}
