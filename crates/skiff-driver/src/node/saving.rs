//! Loading the core's persisted state, and saving it: the glue between the core's `Ready`, the
//! `Load` and `SaveQueue` parts and the plugin ops.

use super::*;

impl<H: Host> Driver<H> {
    pub(super) fn begin_load(&mut self) {
        self.load.begin();
        let t = self.persistence_timeout();
        let io = self.io(IoKind::LoadMeta, t);
        self.ops.push(Op::LoadMeta { io });
        let io = self.io(IoKind::LastApplied, t);
        self.ops.push(Op::LastApplied { io });
    }

    pub(super) fn load_failed(&mut self, what: &str, err: String, code: &str) {
        self.error(code, format!("{what} failed: {err}"));
        // Forget the other half too and start over after a pause.
        self.ios.forget(|k| matches!(k, IoKind::LoadMeta | IoKind::LastApplied));
        self.load.failed(self.now);
    }

    pub(super) fn maybe_finish_load(&mut self) {
        let Some((meta, applied)) = self.load.both().map(|(m, a)| (m.to_string(), a)) else { return };
        let restored = match restore(&self.opts.id, &meta, applied, self.opts.standby, &self.opts.metadata) {
            Ok(r) => r,
            Err(e) => {
                self.load_failed("loadMeta", e.to_string(), code::EBADSTATE);
                return;
            }
        };
        let mut cfg = self.opts.core_config(self.seed);
        cfg.seed = self.seed;
        let mut raft = match Raft::new(cfg, restored) {
            Ok(r) => r,
            Err(e) => {
                self.error(code::EINVALIDOPTIONS, e.to_string());
                return;
            }
        };
        raft.tick(self.now);
        self.raft = Some(raft);
        self.emit("loaded", vec![]);
        self.sync_connections();
    }

    /// Issues (or re-issues) the save under way. The first time, the messages waiting for it
    /// travel with it and the wrapper sends them as soon as `saveMeta` calls back, without a hop
    /// through the engine. If that save fails they are dropped: peers time out and ask again.
    pub(super) fn issue_save(&mut self) {
        if !self.save.is_busy() {
            return;
        }
        let t = self.persistence_timeout();
        let io = self.io(IoKind::Save, t);
        let Some((state, from, messages)) = self.save.issue(io) else { return };
        // Requests to a peer whose connection is busy cannot be handed over now: they wait in
        // the save and join that peer's queue once the state is durable (`save_finished`).
        let (now, later): (Vec<Message>, Vec<Message>) =
            messages.into_iter().partition(|m| self.connections.can_go_now(m));
        self.save.keep_waiting(later);
        let outer = std::mem::take(&mut self.ops);
        for m in now {
            self.send_message(m);
        }
        let after = std::mem::replace(&mut self.ops, outer);
        // A connection those messages open is not a promise of this save: `Connections` counts
        // it open from now on, so it is opened now. Held in `after`, a failed save would drop
        // it, and nothing would open it again (over a pipelining transport, never).
        let (connects, after): (Vec<Op>, Vec<Op>) = after.into_iter().partition(|op| matches!(op, Op::Connect { .. }));
        self.ops.extend(connects);
        self.ops.push(Op::SaveMeta { io, state, from: Some(from), after });
    }

    pub(super) fn save_finished(&mut self, io: u32, error: Option<PluginError>) {
        if let Some(e) = error {
            if self.save.failed(io, self.now) {
                self.error(&e.code_or(code::EPERSISTENCE), format!("saveMeta failed: {}", e.message()));
            }
            return;
        }
        let Some(saved) = self.save.done(io, self.clock()) else { return };
        for m in saved.messages {
            self.send_message(m);
        }
        if let Some(raft) = self.raft.as_mut() {
            raft.advance(saved.token);
        }
        if let Some(sid) = saved.install_mark.and_then(|index| self.install.awaits_mark(index)) {
            // The mark is durable: now the state machine may be cleared.
            let t = self.persistence_timeout();
            let io = self.io(IoKind::SnapshotReset, t);
            self.install.resetting(io);
            self.ops.push(Op::SnapshotReset { io, sid });
        }
    }

    /// Group commit (see `SaveQueue::hold`): until when to hold the next `Ready`, if at all.
    pub(super) fn hold_save(&self) -> Option<u64> {
        let raft = self.raft.as_ref()?;
        let log = raft.log();
        // Only what the state machine has already been handed counts: entries committed since
        // reach it through the very `Ready` this would hold.
        let view = HoldView {
            unsaved: raft.has_unsaved(),
            entries_only: raft.term() == raft.durable_term() && raft.pending_install().is_none(),
            backlog: self.apply.handed().saturating_sub(raft.applied().max(self.applied_hint)),
            waiting: log.last_index().saturating_sub(log.unsaved_from() - 1),
            log_size: log.last_index().saturating_sub(log.snapshot_index()),
        };
        self.save.hold(|| self.clock(), &view)
    }

    /// The save did not call back: retry it with the latest state.
    pub(super) fn save_timed_out(&mut self, io: u32) {
        self.error(code::ETIMEDOUT, "saveMeta did not call back; retrying");
        self.save.timed_out(io, self.now);
    }
}
