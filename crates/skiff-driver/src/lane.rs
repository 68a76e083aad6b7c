//! One-at-a-time peers: the request in flight to each, and the requests waiting behind it, merged.

use skiff_core::{Body, Message};
use std::collections::{BTreeMap, VecDeque};

/// Most requests waiting behind the one in flight to a peer whose connection takes one at a
/// time. Coalescing keeps the queue short (the core's window bounds what it sends); past this the
/// oldest go, as a lossy network would lose them, and Raft sends them again.
const LANE_QUEUE_MAX: usize = 32;

/// Requests to one peer whose connection takes one at a time (neither the transport nor the
/// connection declared `pipelining`): skiff-algorithm never had two requests out on one
/// connection, and transports written for it pair a reply with whatever request is waiting.
/// Invariant: `busy` is the io of a `Send` still in the `IoTable`, or `None`; what waits is in `queue`,
/// oldest first, at most `LANE_QUEUE_MAX`.
#[derive(Default)]
struct Lane {
    busy: Option<u32>,
    queue: VecDeque<Message>,
}

impl Lane {
    /// Queues `m` behind the request in flight, merged with what already waits so that the next
    /// request carries everything pending: AppendEntries that continue one another become one
    /// (within `max_entries`), a heartbeat behind another AppendEntries of the same term adds
    /// nothing but its commit index, a newer AppendEntries replaces an older one it does not
    /// continue (the core re-anchored), and a newer RequestVote replaces an older one.
    fn push(&mut self, m: Message, max_entries: usize) {
        if let Some(back) = self.queue.back_mut() {
            match (&mut back.body, m.body) {
                (Body::AppendEntries(q), Body::AppendEntries(n)) if q.term == n.term => {
                    if n.entries.is_empty() {
                        // Still unsent: it may carry the newer read round and transfer too.
                        q.leader_commit = q.leader_commit.max(n.leader_commit);
                        q.read_ctx = q.read_ctx.max(n.read_ctx);
                        q.transfer_to = n.transfer_to;
                        return;
                    }
                    let continues = q.prev_log_index + q.entries.len() as u64 == n.prev_log_index
                        && q.entries.last().map_or(q.prev_log_term, |e| e.term) == n.prev_log_term;
                    if q.entries.is_empty() || !continues {
                        *q = n;
                        return;
                    }
                    if q.entries.len() + n.entries.len() <= max_entries {
                        q.entries.extend(n.entries);
                        q.leader_commit = q.leader_commit.max(n.leader_commit);
                        q.read_ctx = q.read_ctx.max(n.read_ctx);
                        q.transfer_to = n.transfer_to;
                        return;
                    }
                    self.queue.push_back(Message { body: Body::AppendEntries(n), ..m });
                }
                (Body::RequestVote(q), Body::RequestVote(n)) => *q = n,
                (_, body) => self.queue.push_back(Message { body, ..m }),
            }
        } else {
            self.queue.push_back(m);
        }
        while self.queue.len() > LANE_QUEUE_MAX {
            self.queue.pop_front();
        }
    }
}

/// Every peer whose connection takes one request at a time, by peer id. The driver asks it whether
/// a request may go now, queues the ones that may not, and takes from it the next one to send
/// when a lane frees up; it owns no IO itself.
/// Invariant: a peer has a lane only while requests to it are gated (it is connected and has not
/// declared `pipelining`); a lane with nothing in flight and nothing waiting may stay.
#[derive(Default)]
pub(super) struct Lanes {
    /// Ordered, so lanes are pumped in the same order on every run (a seed replays exactly).
    lanes: BTreeMap<String, Lane>,
}

impl Lanes {
    /// Queues `m` (a request to `m.to`) behind what is in flight to that peer; see `Lane::push`.
    pub(super) fn push(&mut self, m: Message, max_entries: usize) {
        self.lanes.entry(m.to.clone()).or_default().push(m, max_entries);
    }

    /// Whether a request to `peer` may be handed over at once: nothing is in flight to it and
    /// nothing waits (which would have to go first).
    pub(super) fn is_free(&self, peer: &str) -> bool {
        self.lanes.get(peer).is_none_or(|l| l.busy.is_none() && l.queue.is_empty())
    }

    /// The request in flight to `peer` was answered, failed or timed out.
    /// Returns whether `io` was that request.
    pub(super) fn release(&mut self, peer: &str, io: u32) -> bool {
        match self.lanes.get_mut(peer) {
            Some(lane) if lane.busy == Some(io) => {
                lane.busy = None;
                true
            }
            _ => false,
        }
    }

    /// Forgets `peer`'s lane (it left, or now takes several requests at once); returns what
    /// waited in it, oldest first.
    pub(super) fn remove(&mut self, peer: &str) -> Option<VecDeque<Message>> {
        self.lanes.remove(peer).map(|l| l.queue)
    }

    /// The peers with nothing in flight and something waiting.
    pub(super) fn ready(&self) -> Vec<String> {
        self.lanes.iter().filter(|(_, l)| l.busy.is_none() && !l.queue.is_empty()).map(|(p, _)| p.clone()).collect()
    }

    /// The next request to send to `peer`, if nothing is in flight to it; the caller sends it and
    /// reports its io with `sending`. Requests that went stale while they waited (a term older
    /// than `term`; AppendEntries or InstallSnapshot when this node is not `leading`) are
    /// dropped, so that a vote request is not stuck behind them.
    pub(super) fn next(&mut self, peer: &str, term: u64, leading: bool) -> Option<Message> {
        let lane = self.lanes.get_mut(peer)?;
        if lane.busy.is_some() {
            return None;
        }
        while let Some(m) = lane.queue.pop_front() {
            let stale = m.body.term() < term
                || (!leading && matches!(m.body, Body::AppendEntries(_) | Body::InstallSnapshot(_)));
            if !stale {
                return Some(m);
            }
        }
        None
    }

    /// `io` is now the request in flight to `peer` (taken with `next`).
    pub(super) fn sending(&mut self, peer: &str, io: u32) {
        if let Some(lane) = self.lanes.get_mut(peer) {
            lane.busy = Some(io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_core::message::AppendEntries;
    use skiff_core::{Entry, EntryKind, Json};

    fn entry(index: u64, term: u64) -> Entry {
        Entry { term, index, kind: EntryKind::Command(Json::from_value(&index)), uuid: format!("u{index}") }
    }

    fn append(term: u64, prev: u64, prev_term: u64, entries: &[(u64, u64)], commit: u64) -> Message {
        Message {
            from: "a".into(),
            to: "b".into(),
            token: None,
            body: Body::AppendEntries(AppendEntries {
                term,
                leader_id: "a".into(),
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries: entries.iter().map(|&(i, t)| entry(i, t)).collect(),
                leader_commit: commit,
                peers: None,
                read_ctx: None,
                transfer_to: None,
            }),
        }
    }

    fn vote(term: u64) -> Message {
        crate::test_support::vote("b", term)
    }

    fn appends(lane: &Lane) -> Vec<(u64, Vec<u64>, u64)> {
        lane.queue
            .iter()
            .filter_map(|m| match &m.body {
                Body::AppendEntries(a) => Some((a.prev_log_index, a.entries.iter().map(|e| e.index).collect(), a.leader_commit)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn appends_that_continue_each_other_become_one() {
        let mut lane = Lane::default();
        lane.push(append(2, 4, 2, &[(5, 2), (6, 2)], 4), 1024);
        lane.push(append(2, 6, 2, &[(7, 2)], 5), 1024);
        lane.push(append(2, 7, 2, &[(8, 2), (9, 2)], 6), 1024);
        assert_eq!(appends(&lane), vec![(4, vec![5, 6, 7, 8, 9], 6)]);
    }

    #[test]
    fn a_heartbeat_behind_an_append_adds_only_its_commit() {
        let mut lane = Lane::default();
        lane.push(append(2, 4, 2, &[(5, 2)], 4), 1024);
        lane.push(append(2, 3, 2, &[], 5), 1024);
        assert_eq!(appends(&lane), vec![(4, vec![5], 5)]);
        // and an append replaces a heartbeat waiting alone
        let mut lane = Lane::default();
        lane.push(append(2, 3, 2, &[], 3), 1024);
        lane.push(append(2, 4, 2, &[(5, 2)], 4), 1024);
        assert_eq!(appends(&lane), vec![(4, vec![5], 4)]);
    }

    #[test]
    fn an_append_that_does_not_continue_replaces_the_waiting_one() {
        let mut lane = Lane::default();
        lane.push(append(2, 6, 2, &[(7, 2)], 4), 1024);
        // the core probed back after a refusal
        lane.push(append(2, 3, 1, &[(4, 2), (5, 2)], 4), 1024);
        assert_eq!(appends(&lane), vec![(3, vec![4, 5], 4)]);
        // and a term mismatch at the seam does not merge either
        lane.push(append(2, 5, 1, &[(6, 2)], 4), 1024);
        assert_eq!(appends(&lane), vec![(5, vec![6], 4)]);
    }

    #[test]
    fn merging_stops_at_the_message_budget_and_the_queue_is_bounded() {
        let mut lane = Lane::default();
        lane.push(append(2, 0, 0, &[(1, 2), (2, 2)], 0), 3);
        lane.push(append(2, 2, 2, &[(3, 2), (4, 2)], 0), 3);
        assert_eq!(appends(&lane), vec![(0, vec![1, 2], 0), (2, vec![3, 4], 0)]);
        let mut lane = Lane::default();
        for i in 0..(LANE_QUEUE_MAX as u64 + 10) {
            lane.push(append(2, i, 2, &[(i + 1, 2)], 0), 1);
        }
        assert_eq!(lane.queue.len(), LANE_QUEUE_MAX);
        assert_eq!(appends(&lane).last().map(|a| a.0), Some(LANE_QUEUE_MAX as u64 + 9));
    }

    #[test]
    fn a_newer_vote_request_replaces_an_older_one_and_other_kinds_queue() {
        let mut lane = Lane::default();
        lane.push(vote(3), 1024);
        lane.push(vote(4), 1024);
        assert_eq!(lane.queue.len(), 1);
        assert!(matches!(&lane.queue[0].body, Body::RequestVote(v) if v.term == 4));
        lane.push(append(4, 0, 0, &[], 0), 1024);
        assert_eq!(lane.queue.len(), 2);
        // appends of another term never merge
        lane.push(append(5, 0, 0, &[(1, 5)], 0), 1024);
        assert_eq!(lane.queue.len(), 3);
    }

    fn to(peer: &str, mut m: Message) -> Message {
        m.to = peer.into();
        m
    }

    #[test]
    fn a_lane_hands_over_one_request_at_a_time() {
        let mut lanes = Lanes::default();
        assert!(lanes.is_free("b"));
        lanes.push(vote(3), 1024);
        lanes.push(to("c", vote(3)), 1024);
        assert!(!lanes.is_free("b"));
        let mut ready = lanes.ready();
        ready.sort();
        assert_eq!(ready, vec!["b".to_string(), "c".to_string()]);
        assert!(lanes.next("b", 3, false).is_some());
        lanes.sending("b", 7);
        lanes.push(vote(4), 1024);
        // in flight: nothing more goes, and only the request in flight releases it
        assert!(lanes.next("b", 3, false).is_none());
        assert_eq!(lanes.ready(), vec!["c".to_string()]);
        assert!(!lanes.release("b", 8));
        assert!(lanes.release("b", 7));
        assert!(!lanes.release("b", 7));
        assert!(matches!(lanes.next("b", 3, false).map(|m| m.body), Some(Body::RequestVote(v)) if v.term == 4));
        assert!(lanes.next("nobody", 0, true).is_none());
    }

    #[test]
    fn stale_requests_are_dropped_rather_than_sent() {
        let mut lanes = Lanes::default();
        lanes.push(append(2, 0, 0, &[(1, 2)], 0), 1);
        lanes.push(append(2, 1, 2, &[(2, 2)], 0), 1);
        // no longer leading: the appends go, a vote of the current term is sent
        lanes.push(vote(3), 1024);
        assert!(matches!(lanes.next("b", 3, false).map(|m| m.body), Some(Body::RequestVote(v)) if v.term == 3));
        assert!(lanes.next("b", 3, false).is_none());
        // an older term is stale even for a leader
        lanes.push(append(2, 0, 0, &[(1, 2)], 0), 1);
        assert!(lanes.next("b", 3, true).is_none());
        lanes.push(append(3, 0, 0, &[(1, 3)], 0), 1);
        assert!(lanes.next("b", 3, true).is_some());
        assert!(lanes.remove("b").is_some_and(|q| q.is_empty()));
        assert!(lanes.remove("b").is_none());
    }
}
