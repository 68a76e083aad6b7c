//! The events the user listens to, and the `event` ops that report them.

use super::op::{Arg, Op};

/// An `error` argument: an `Error` with this code on the JS side.
pub(super) fn coded_arg(code: &str, message: impl Into<String>) -> Arg {
    Arg::Error { message: message.into(), code: code.to_string() }
}

/// Which events have listeners, so that nobody pays for events no one hears.
///
/// Invariant: `listened` is the set the wrapper last reported, sorted and without repeats;
/// `error` and `warning` always count as listened (the wrapper decides what an unheard error
/// does). A short list, not a hash set: `wants` runs on every send and event candidate (about
/// 11 times per command at 3 nodes), where hashing the name cost more than comparing it with
/// the few names listened to.
#[derive(Default)]
pub(super) struct Events {
    listened: Vec<String>,
}

impl Events {
    /// The wrapper's listener set changed.
    pub(super) fn set(&mut self, names: Vec<String>) {
        let mut names = names;
        names.sort_unstable();
        names.dedup();
        self.listened = names;
    }

    pub(super) fn wants(&self, name: &str) -> bool {
        matches!(name, "error" | "warning") || self.listened.iter().any(|n| n == name)
    }

    pub(super) fn emit(&self, ops: &mut Vec<Op>, name: &'static str, args: Vec<Arg>) {
        if self.wants(name) {
            ops.push(Op::Event { name, args });
        }
    }

    pub(super) fn warn(&self, ops: &mut Vec<Op>, code: &str, message: impl Into<String>) {
        self.emit(ops, "warning", vec![coded_arg(code, message)]);
    }

    pub(super) fn error(&self, ops: &mut Vec<Op>, code: &str, message: impl Into<String>) {
        self.emit(ops, "error", vec![coded_arg(code, message)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code;

    fn names(ops: &[Op]) -> Vec<&'static str> {
        ops.iter().filter_map(|o| if let Op::Event { name, .. } = o { Some(*name) } else { None }).collect()
    }

    #[test]
    fn only_listened_events_go_out_but_errors_and_warnings_always_do() {
        let mut ev = Events::default();
        let mut ops = Vec::new();
        ev.emit(&mut ops, "heartbeat", vec![]);
        ev.warn(&mut ops, code::ETIMEDOUT, "slow");
        ev.error(&mut ops, code::EPERSISTENCE, "broken");
        assert_eq!(names(&ops), vec!["warning", "error"]);
        ev.set(vec!["heartbeat".into()]);
        ops.clear();
        ev.emit(&mut ops, "heartbeat", vec![]);
        ev.emit(&mut ops, "leader", vec![]);
        assert_eq!(names(&ops), vec!["heartbeat"]);
        ev.set(vec![]);
        assert!(!ev.wants("heartbeat"));
    }

    #[test]
    fn a_warning_carries_its_code() {
        let mut ops = Vec::new();
        Events::default().warn(&mut ops, code::EBADMESSAGE, "junk");
        let text = serde_json::to_string(&ops).unwrap();
        assert!(text.contains(code::EBADMESSAGE) && text.contains("junk"), "{text}");
    }
}
