//! Connections to peers, and which requests may go to each now: a connection that declared
//! `pipelining` takes any number, any other one request at a time (its lane).

use super::lane::Lanes;
use skiff_core::{Json, Message};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a member change asks of the wrapper.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Sync {
    pub(super) disconnect: Vec<String>,
    pub(super) connect: Vec<(String, Json)>,
}

/// The peers this node has connections to.
///
/// Invariants: `connected` is the set of peers the wrapper was told to connect to and not since
/// told to disconnect from; `pipelined` and `lanes` only name peers still connected or about to
/// be (a peer's state goes with its `disconnect`).
pub(super) struct Connections {
    /// The transport declared `pipelining` for every connection.
    pipelining: bool,
    connected: BTreeSet<String>,
    /// Peers whose connection declared `pipelining` (beside a transport that declared it for all).
    pipelined: BTreeSet<String>,
    /// Peers whose connection takes one request at a time: what is in flight and what waits.
    lanes: Lanes,
}

impl Connections {
    pub(super) fn new(pipelining: bool) -> Self {
        Connections { pipelining, connected: BTreeSet::new(), pipelined: BTreeSet::new(), lanes: Lanes::default() }
    }

    /// The members other than this node are now `wanted`: forget the peers that left, and
    /// connect to new ones at once only over a pipelining transport.
    ///
    /// Transports written for skiff-algorithm connect on the first request, not before. A
    /// skiff-algorithm node takes a new connection from a peer for a new session with it and
    /// drops the one it sends on (it never uses the new one): a follower that connected to a
    /// skiff-algorithm leader it has nothing to ask would be cut off from that leader (a
    /// rolling upgrade).
    pub(super) fn sync(&mut self, wanted: BTreeMap<String, Json>) -> Sync {
        let disconnect: Vec<String> = self.connected.iter().filter(|p| !wanted.contains_key(*p)).cloned().collect();
        for peer in &disconnect {
            self.connected.remove(peer);
            self.lanes.remove(peer);
            self.pipelined.remove(peer);
        }
        let mut connect = Vec::new();
        if self.pipelining {
            for (peer, metadata) in wanted {
                if self.connected.insert(peer.clone()) {
                    connect.push((peer, metadata));
                }
            }
        }
        Sync { disconnect, connect }
    }

    /// A request to `peer` is about to go: true if the wrapper must connect first.
    pub(super) fn needs_connect(&mut self, peer: &str) -> bool {
        self.connected.insert(peer.to_string())
    }

    /// Whether several requests may be in flight to `peer`: the transport or the connection
    /// declared `pipelining`.
    pub(super) fn pipelines(&self, peer: &str) -> bool {
        self.pipelining || self.pipelined.contains(peer)
    }

    /// Whether message `m` can be handed over now (a reply, or a connection that can take it).
    pub(super) fn can_go_now(&self, m: &Message) -> bool {
        m.token.is_some() || self.pipelines(&m.to) || self.lanes.is_free(&m.to)
    }

    /// A request for `peer`: returned if it may go at once, else queued in its lane (merged
    /// with what waits there, see `Lanes::push`).
    pub(super) fn route(&mut self, m: Message, max_entries: usize) -> Option<Message> {
        if self.pipelines(&m.to) {
            return Some(m);
        }
        self.lanes.push(m, max_entries);
        None
    }

    /// `peer`'s connection declared `pipelining`: what waited in its lane goes now.
    pub(super) fn set_pipelining(&mut self, peer: String) -> VecDeque<Message> {
        let queue = self.lanes.remove(&peer).unwrap_or_default();
        self.pipelined.insert(peer);
        queue
    }

    /// Peers with an idle lane and requests waiting.
    pub(super) fn ready_lanes(&self) -> Vec<String> {
        self.lanes.ready()
    }

    /// The next request for `peer`'s idle lane that is still current (see `Lanes::next`).
    pub(super) fn next(&mut self, peer: &str, term: u64, leading: bool) -> Option<Message> {
        self.lanes.next(peer, term, leading)
    }

    pub(super) fn sending(&mut self, peer: &str, io: u32) {
        self.lanes.sending(peer, io);
    }

    /// Send `io` to `peer` finished.
    pub(super) fn release(&mut self, peer: &str, io: u32) {
        self.lanes.release(peer, io);
    }

    /// Send `io` to `peer` got no reply: true if the lane must start over on a fresh connection
    /// (its reply may still come, and a transport without request ids would hand it to the next
    /// request).
    pub(super) fn timed_out(&mut self, peer: &str, io: u32) -> bool {
        self.lanes.release(peer, io) && self.connected.contains(peer)
    }

    /// The node stops: every peer to disconnect from.
    pub(super) fn close_all(&mut self) -> Vec<String> {
        self.pipelined.clear();
        std::mem::take(&mut self.connected).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::vote;

    fn wanted(ids: &[&str]) -> BTreeMap<String, Json> {
        ids.iter().map(|id| (id.to_string(), Json::empty_object())).collect()
    }

    #[test]
    fn a_pipelining_transport_connects_to_members_at_once() {
        let mut c = Connections::new(true);
        let s = c.sync(wanted(&["b", "c"]));
        assert_eq!(s.connect.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), vec!["b", "c"]);
        assert!(s.disconnect.is_empty());
        let s = c.sync(wanted(&["c"]));
        assert_eq!(s, Sync { disconnect: vec!["b".into()], connect: vec![] });
        assert!(c.route(vote("c", 1), 10).is_some(), "pipelined requests go at once");
        assert_eq!(c.close_all(), vec!["c".to_string()]);
    }

    #[test]
    fn a_skiff_algorithm_transport_connects_on_the_first_request_and_sends_one_at_a_time() {
        let mut c = Connections::new(false);
        assert_eq!(c.sync(wanted(&["b"])), Sync::default(), "no connection before a request");
        assert!(c.route(vote("b", 1), 10).is_none(), "queued in b's lane");
        assert_eq!(c.ready_lanes(), vec!["b".to_string()]);
        let m = c.next("b", 1, false).expect("the lane is idle");
        assert!(c.needs_connect(&m.to));
        assert!(!c.needs_connect(&m.to), "connected once");
        c.sending("b", 7);
        assert!(!c.can_go_now(&vote("b", 1)), "one request in flight");
        assert!(c.route(vote("b", 2), 10).is_none());
        assert!(c.next("b", 2, false).is_none(), "waits for the one in flight");
        assert!(c.timed_out("b", 7), "a timed-out request on a live connection reconnects");
        assert!(c.next("b", 2, false).is_some());
        let s = c.sync(wanted(&[]));
        assert_eq!(s.disconnect, vec!["b".to_string()]);
        assert!(c.ready_lanes().is_empty(), "a peer's lane goes with it");
    }

    #[test]
    fn a_connection_that_declares_pipelining_releases_its_lane() {
        let mut c = Connections::new(false);
        c.route(vote("b", 1), 10);
        c.route(vote("b", 2), 10);
        let waiting = c.set_pipelining("b".into());
        assert_eq!(waiting.len(), 1, "the newer vote replaced the older one");
        assert!(c.pipelines("b") && !c.pipelines("c"));
        assert!(c.route(vote("b", 3), 10).is_some());
    }
}
