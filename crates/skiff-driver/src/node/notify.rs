//! What the user hears: the core's events turned into `event` ops (through the `Events` part)
//! and into work for the parts (membership queue, snapshot transfers).

use super::*;

impl<H: Host> Driver<H> {
    pub(super) fn emit(&mut self, name: &'static str, args: Vec<Arg>) {
        self.events.emit(&mut self.ops, name, args);
    }

    pub(super) fn warn(&mut self, code: &str, message: impl Into<String>) {
        self.events.warn(&mut self.ops, code, message);
    }

    pub(super) fn error(&mut self, code: &str, message: impl Into<String>) {
        self.events.error(&mut self.ops, code, message);
    }

    pub(super) fn peer_arg(&self, id: &str) -> Arg {
        let metadata = self
            .raft
            .as_ref()
            .and_then(|r| r.members().metadata(id).cloned())
            .or_else(|| self.status.lock().members.metadata(id).cloned())
            .unwrap_or_else(Json::empty_object);
        Arg::Peer { id: id.to_string(), metadata }
    }

    pub(super) fn emit_state(&mut self, name: &'static str) {
        self.status.lock().state = name;
        self.emit("state", vec![Arg::Str(name.to_string()), Arg::node()]);
        let ev: &'static str = name;
        self.emit(ev, vec![Arg::node()]);
    }

    pub(super) fn core_event(&mut self, ev: Event) {
        match ev {
            Event::Role(role) => {
                let name: &'static str = role.name();
                self.emit_state(name);
                if role != Role::Leader {
                    // Queued membership changes need a leader.
                    let e = self.not_leader();
                    for req in self.membership_queue.clear() {
                        self.done(req, Some(e.clone()));
                    }
                }
            }
            Event::Leader(_) => {}
            Event::Joined { id } => {
                let p = self.peer_arg(&id);
                self.emit("joined", vec![p]);
            }
            Event::Left { id } => {
                let metadata = self.status.lock().members.metadata(&id).cloned().unwrap_or_else(Json::empty_object);
                self.emit("left", vec![Arg::Peer { id, metadata }]);
            }
            Event::VoteGranted { candidate } => self.emit("vote granted", vec![Arg::Str(candidate)]),
            Event::ElectionTimeout => self.emit("election timeout", vec![]),
            Event::ResetElectionTimeout => self.emit("reset election timeout", vec![]),
            Event::Heartbeat => self.emit("heartbeat", vec![]),
            Event::RemovedSelf => self.removed_self = true,
            Event::Rejected { from, reason } => self.warn(code::EBADMESSAGE, format!("refused a message from {from}: {reason}")),
            Event::SnapshotNeeded { peer } => {
                self.transfers.want(peer);
            }
            Event::SnapshotAcked { peer, seq } => self.snapshot_acked(peer, seq),
            Event::SnapshotInstalled { peer } => self.close_outgoing(&peer),
            Event::SnapshotFailed { peer, next_seq } => self.transfer_failed(&peer, next_seq),
            Event::SnapshotChunk { from, token, chunk } => self.install_chunk(from, token, chunk),
        }
    }
}
