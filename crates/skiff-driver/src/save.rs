//! The save queue: one `saveMeta` in flight, group commit, retries, and the messages that wait
//! for the save to be durable.

use super::op::JsonText;
use skiff_core::{Message, PersistToken};

/// Back-off before retrying a failed save.
const RETRY_MS: u64 = 100;
/// Group commit while the state machine is busy: a save may wait this long after the previous
/// one finished, to carry more entries (see `SaveQueue::hold`).
const SAVE_HOLD_MS: u64 = 5;
/// ...unless the entries waiting are at least this fraction (1/n) of the log a save writes,
const SAVE_HOLD_FRACTION: u64 = 4;
/// ...and only while the state machine has at least this many entries in hand to apply: it
/// has work for the time the held entries take to commit (so a lone command, or a few,
/// never wait).
const SAVE_HOLD_BACKLOG: u64 = 4;

/// A `saveMeta` under way and what waits on it.
struct Save {
    /// The `saveMeta` op of the current attempt (0 before the first).
    io: u32,
    /// The document, as the core's `SaveDelta` made it: entries from `from` on.
    state: JsonText,
    from: u64,
    token: PersistToken,
    /// The `persisted_messages` of the `Ready` that asked for this save that did not travel
    /// with its op (a busy one-at-a-time connection): sent once it is durable.
    messages: Vec<Message>,
    retry_at: Option<u64>,
    /// The snapshot install this save marks as begun, if any.
    install_mark: Option<u64>,
}

/// What a finished save releases.
pub(super) struct Saved {
    pub(super) token: PersistToken,
    pub(super) messages: Vec<Message>,
    pub(super) install_mark: Option<u64>,
}

/// What group commit looks at, as the driver sees it when it would take a `Ready`.
pub(super) struct HoldView {
    /// The core has something to save.
    pub(super) unsaved: bool,
    /// The save would write no new term or vote, and no install mark.
    pub(super) entries_only: bool,
    /// Entries handed to the state machine and not yet applied.
    pub(super) backlog: u64,
    /// Entries the next save would write, and entries the log holds.
    pub(super) waiting: u64,
    pub(super) log_size: u64,
}

/// The save pipeline.
///
/// Invariant: at most one save is under way (`saving`), and no `Ready` is taken while it is: the
/// core's next delta is relative to what this one writes. `last_done` is when the previous save
/// finished, for group commit.
#[derive(Default)]
pub(super) struct SaveQueue {
    saving: Option<Save>,
    last_done: Option<u64>,
}

impl SaveQueue {
    pub(super) fn is_busy(&self) -> bool {
        self.saving.is_some()
    }

    /// Takes on a new save; issue it with `issue`.
    pub(super) fn begin(
        &mut self,
        state: JsonText,
        from: u64,
        token: PersistToken,
        messages: Vec<Message>,
        install_mark: Option<u64>,
    ) {
        debug_assert!(self.saving.is_none(), "one save at a time");
        self.saving = Some(Save { io: 0, state, from, token, messages, retry_at: None, install_mark });
    }

    /// (Re-)issues the save as op `io`: returns the document, its `from`, and the messages still
    /// waiting (hand back with `keep_waiting` those that cannot travel with the op).
    pub(super) fn issue(&mut self, io: u32) -> Option<(JsonText, u64, Vec<Message>)> {
        let save = self.saving.as_mut()?;
        save.io = io;
        save.retry_at = None;
        Some((save.state.clone(), save.from, std::mem::take(&mut save.messages)))
    }

    pub(super) fn keep_waiting(&mut self, messages: Vec<Message>) {
        if let Some(save) = self.saving.as_mut() {
            save.messages = messages;
        }
    }

    /// A retry is due (after a failure or a timeout).
    pub(super) fn retry_due(&self, now: u64) -> bool {
        self.saving.as_ref().is_some_and(|s| s.retry_at.is_some_and(|t| t <= now))
    }

    /// Save op `io` did not call back in time: retry at once.
    pub(super) fn timed_out(&mut self, io: u32, now: u64) {
        if let Some(s) = self.saving.as_mut().filter(|s| s.io == io) {
            s.retry_at = Some(now);
        }
    }

    /// Save op `io` failed: retry after a pause; nothing that depends on it is sent meanwhile.
    /// False if `io` is not the current attempt.
    pub(super) fn failed(&mut self, io: u32, now: u64) -> bool {
        let Some(s) = self.saving.as_mut().filter(|s| s.io == io) else { return false };
        s.retry_at = Some(now + RETRY_MS);
        true
    }

    /// Save op `io` is durable: what waited for it.
    pub(super) fn done(&mut self, io: u32, now: u64) -> Option<Saved> {
        let save = self.saving.take_if(|s| s.io == io)?;
        self.last_done = Some(now);
        Some(Saved { token: save.token, messages: save.messages, install_mark: save.install_mark })
    }

    /// Group commit: until when to hold a `Ready` that asks for a save, if at all.
    ///
    /// Each save hands the plugin the whole log (the persisted format is one document), so
    /// saving every entry or two as it arrives costs a full copy of the log per entry. While the
    /// state machine is busy (it has entries in hand to apply, one `applyCommand` at a time), a
    /// save waits until a fair share of the log is new, or `SAVE_HOLD_MS` after the last save.
    /// Holding the `Ready` also holds the AppendEntries it carries, so followers get (and save)
    /// batches too. Term and vote changes never wait, and neither does a lone command.
    ///
    /// `now` reads the clock, only once the view would hold: this is asked several times a
    /// round, and almost always answers no before the time matters.
    pub(super) fn hold(&self, now: impl FnOnce() -> u64, view: &HoldView) -> Option<u64> {
        let done = self.last_done?;
        if !view.unsaved || !view.entries_only || view.backlog < SAVE_HOLD_BACKLOG {
            return None;
        }
        if view.waiting * SAVE_HOLD_FRACTION >= view.log_size {
            return None;
        }
        let until = done + SAVE_HOLD_MS;
        (now() < until).then_some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> JsonText {
        JsonText("{}".into())
    }

    fn msg(to: &str) -> Message {
        crate::test_support::vote(to, 1)
    }

    fn token(i: u64) -> PersistToken {
        PersistToken { last: (i, 1), term: 1 }
    }

    #[test]
    fn a_failed_save_is_retried_and_releases_its_messages_only_when_durable() {
        let mut q = SaveQueue::default();
        q.begin(doc(), 1, token(3), vec![msg("b"), msg("c")], None);
        let (_, from, waiting) = q.issue(10).unwrap();
        assert_eq!((from, waiting.len()), (1, 2));
        q.keep_waiting(vec![waiting[1].clone()]);
        assert!(!q.failed(9, 0), "a stale attempt's failure is ignored");
        assert!(q.failed(10, 1000));
        assert!(q.is_busy());
        assert!(!q.retry_due(1000 + RETRY_MS - 1));
        assert!(q.retry_due(1000 + RETRY_MS));
        let (_, _, again) = q.issue(11).unwrap();
        assert_eq!(again.len(), 1, "what did not travel with the first attempt travels with the retry");
        assert!(q.done(10, 2000).is_none(), "the first attempt's late success is not this save's");
        let saved = q.done(11, 2000).unwrap();
        assert_eq!(saved.token, token(3));
        assert!(!q.is_busy());
    }

    #[test]
    fn a_timed_out_save_is_retried_at_once() {
        let mut q = SaveQueue::default();
        q.begin(doc(), 1, token(1), vec![], Some(40));
        q.issue(5);
        q.timed_out(4, 50);
        assert!(!q.retry_due(50));
        q.timed_out(5, 50);
        assert!(q.retry_due(50));
        assert_eq!(q.done(5, 60).unwrap().install_mark, Some(40));
    }

    fn view(backlog: u64, waiting: u64) -> HoldView {
        HoldView { unsaved: true, entries_only: true, backlog, waiting, log_size: 1000 }
    }

    #[test]
    fn group_commit_holds_only_entries_while_the_state_machine_is_busy() {
        let mut q = SaveQueue::default();
        assert_eq!(q.hold(|| 0, &view(100, 1)), None, "nothing to wait for before the first save");
        q.begin(doc(), 1, token(1), vec![], None);
        q.issue(1);
        q.done(1, 100).unwrap();
        assert_eq!(q.hold(|| 101, &view(100, 1)), Some(100 + SAVE_HOLD_MS));
        assert_eq!(q.hold(|| 100 + SAVE_HOLD_MS, &view(100, 1)), None, "held at most SAVE_HOLD_MS");
        assert_eq!(q.hold(|| 101, &view(SAVE_HOLD_BACKLOG - 1, 1)), None, "a lone command never waits");
        assert_eq!(q.hold(|| 101, &view(100, 250)), None, "a fair share of the log is waiting");
        let term_change = HoldView { entries_only: false, ..view(100, 1) };
        assert_eq!(q.hold(|| 101, &term_change), None, "a new term or vote never waits");
        let nothing = HoldView { unsaved: false, ..view(100, 1) };
        assert_eq!(q.hold(|| 101, &nothing), None);
        // the clock is read only when the view would hold
        assert_eq!(q.hold(|| unreachable!("clock read"), &view(SAVE_HOLD_BACKLOG - 1, 1)), None);
    }
}
