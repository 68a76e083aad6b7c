//! Messages to and from peers: connecting, sending through the `Connections` part, replies, and
//! receiving (with the skiff-algorithm translation of `Legacy`).

use super::*;
use skiff_core::message::InstallSnapshot;

impl<H: Host> Driver<H> {
    pub(super) fn sync_connections(&mut self) {
        let Some(raft) = self.raft.as_ref() else { return };
        let members = raft.members();
        let wanted = members.iter().filter(|(id, _)| **id != self.opts.id).map(|(id, m)| (id.clone(), m.metadata.clone())).collect();
        let sync = self.connections.sync(wanted);
        for peer in sync.disconnect {
            self.legacy.forget(&peer);
            self.ops.push(Op::Disconnect { peer });
        }
        for (peer, metadata) in sync.connect {
            self.emit("connecting", vec![Arg::Peer { id: peer.clone(), metadata: metadata.clone() }]);
            self.ops.push(Op::Connect { peer, metadata });
        }
    }

    /// Sends a reply at once, and a request once its peer's connection can take it.
    pub(super) fn send_message(&mut self, m: Message) {
        if let Some(token) = m.token {
            let args = wire::to_json(&m.body);
            if self.events.wants("reply") {
                self.ops.push(Op::Event { name: "reply", args: vec![Arg::Text(args.clone())] });
            }
            self.ops.push(Op::Reply { id: token, error: None, result: Some(args) });
            return;
        }
        let max_entries = self.raft.as_ref().map_or(1, |r| r.config().max_entries_per_message);
        let peer = m.to.clone();
        match self.connections.route(m, max_entries) {
            Some(m) => {
                self.dispatch(m);
            }
            None => self.pump_lane(&peer),
        }
    }

    /// Sends the next waiting request to each idle one-at-a-time peer. Runs at the end of a
    /// round, so that what the round produced was merged into it first.
    pub(super) fn pump_lanes(&mut self) {
        for peer in self.connections.ready_lanes() {
            self.pump_lane(&peer);
        }
    }

    /// Sends `peer` its oldest waiting request that is still current, if none is in flight
    /// (see `Lanes::next`).
    pub(super) fn pump_lane(&mut self, peer: &str) {
        let (term, leading) = self.raft.as_ref().map_or((0, false), |r| (r.term(), r.is_leader()));
        while let Some(m) = self.connections.next(peer, term, leading) {
            let io = self.dispatch(m);
            self.connections.sending(peer, io);
        }
    }

    /// Hands one request to the wrapper; returns the id of its `send` op.
    pub(super) fn dispatch(&mut self, mut m: Message) -> u32 {
        self.legacy.cap_commit(&mut m);
        let kind = m.body.type_name();
        let args = wire::to_json(&m.body);
        let sent = Sent::of(&m.body);
        if self.connections.needs_connect(&m.to) {
            if let Arg::Peer { id, metadata } = self.peer_arg(&m.to) {
                self.ops.push(Op::Connect { peer: id, metadata });
            }
        }
        if self.events.wants("outgoing call") {
            let peer = self.peer_arg(&m.to);
            self.ops.push(Op::Event { name: "outgoing call", args: vec![peer, Arg::Str(kind.into()), Arg::Text(args.clone())] });
        }
        let t = if kind == InstallSnapshot::TYPE { self.snapshot_chunk_timeout() } else { self.send_timeout() };
        let io = self.io(IoKind::Send { peer: m.to.clone(), kind, sent }, t);
        self.ops.push(Op::Send { io, peer: m.to, kind, args });
        io
    }

    pub(super) fn send_finished(
        &mut self,
        peer: String,
        kind: &'static str,
        sent: Option<Sent>,
        error: Option<PluginError>,
        result: Option<String>,
    ) {
        if self.events.wants("response") {
            let p = self.peer_arg(&peer);
            let err = error.as_ref().map_or(Arg::Null(()), |e| coded_arg(&e.code_or(code::ETRANSPORT), e.message()));
            let res = result.clone().map_or(Arg::Null(()), |r| Arg::Raw(raw(r)));
            self.ops.push(Op::Event { name: "response", args: vec![p, err, res] });
        }
        if let Some(e) = error {
            if let Some(raft) = self.raft.as_mut() {
                raft.report_unreachable(&peer);
            }
            if kind == InstallSnapshot::TYPE {
                self.transfer_lost(&peer);
            }
            self.warn(&e.code_or(code::ETRANSPORT), format!("{kind} to {peer} failed: {}", e.message()));
            return;
        }
        let text = result.unwrap_or_else(|| "null".into());
        match wire::response(kind, &text) {
            Ok(mut body) => {
                if let (Body::AppendEntriesResponse(r), Some(sent)) = (&mut body, sent) {
                    self.legacy.position_reply(&peer, &text, sent, r);
                }
                self.step(Message { from: peer, to: self.opts.id.clone(), token: None, body });
            }
            Err(e) => self.warn(code::EBADMESSAGE, format!("malformed {kind} reply from {peer}: {e}")),
        }
    }

    pub(super) fn receive(&mut self, reply: u64, kind: String, args: String, peer: Option<String>) {
        let reject = |this: &mut Self, code: &str, message: String| {
            this.warn(code, message.clone());
            this.ops.push(Op::Reply { id: reply, error: Some(JsError::new(code, message)), result: None });
        };
        if self.raft.is_none() {
            return reject(self, code::ENOTREADY, "node is still loading its state".into());
        }
        let (translated, mark) = match self.legacy.translate(self.raft.as_ref(), &kind, &args) {
            Ok(Some((text, mark))) => (Some(text), mark),
            Ok(None) => (None, None),
            Err(e) => return reject(self, code::EBADMESSAGE, e),
        };
        let text = translated.as_deref().unwrap_or(&args);
        let body = match wire::request(&kind, text) {
            Ok(body) => body,
            Err(e) => return reject(self, code::EBADMESSAGE, format!("malformed {kind} message: {e}")),
        };
        // The sender is the connection: a message may only speak for the peer its connection
        // was opened with. A connection the transport gave no peer id for speaks for no one.
        // (Once they agree, the connection's id is the sender's: no copy of it is made.)
        let claimed = wire::sender(&body).unwrap_or_default();
        let from = match peer {
            Some(p) if p == claimed => p,
            Some(p) => {
                let message = format!("{kind} on the connection with {p} claims to come from {claimed}");
                return reject(self, code::EBADSENDER, message);
            }
            None => {
                let message = format!("{kind} from {claimed} came on a connection the transport gave no peer id for");
                return reject(self, code::EBADSENDER, message);
            }
        };
        self.legacy.accept(mark);
        if let Body::AppendEntries(_) = body {
            self.legacy.heard_leader(&from, translated.is_none());
        }
        if self.events.wants(body.type_name()) {
            let name = body.type_name();
            self.ops.push(Op::Event { name, args: vec![Arg::Raw(raw(args))] });
        }
        self.step(Message { from, to: self.opts.id.clone(), token: Some(reply), body });
    }

    pub(super) fn step(&mut self, m: Message) {
        let token = m.token;
        let Some(raft) = self.raft.as_mut() else { return };
        if let Err(e) = raft.step(m) {
            if let Some(id) = token {
                self.ops.push(Op::Reply { id, error: Some(JsError::new(code::EBADMESSAGE, e.to_string())), result: None });
            }
        }
    }

    /// A request got no reply in time.
    pub(super) fn send_timed_out(&mut self, io: u32, peer: String, kind: &'static str) {
        if self.connections.timed_out(&peer, io) {
            // Its reply may still come, and a transport without request ids would hand it to
            // the next request: start over on a fresh connection.
            if let Arg::Peer { id, metadata } = self.peer_arg(&peer) {
                self.ops.push(Op::Connect { peer: id, metadata });
            }
        }
        if let Some(raft) = self.raft.as_mut() {
            raft.report_unreachable(&peer);
        }
        if kind == InstallSnapshot::TYPE {
            self.transfer_lost(&peer);
        }
        self.warn(code::ETIMEDOUT, format!("{kind} to {peer} got no reply"));
    }
}
