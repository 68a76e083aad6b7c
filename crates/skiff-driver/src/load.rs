//! Loading the persisted state: `loadMeta` and `lastAppliedCommitIndex`, both needed, and a
//! fresh start after a pause when either fails.

/// Back-off before loading again after a failure.
const LOAD_RETRY_MS: u64 = 1000;

/// The load under way.
///
/// Invariant: `meta` and `applied` hold the answers of the current attempt only; `retry_at` is
/// set exactly while the attempt failed and a new one waits.
#[derive(Default)]
pub(super) struct Load {
    meta: Option<String>,
    applied: Option<u64>,
    retry_at: Option<u64>,
}

impl Load {
    /// Starts an attempt (the driver issues both ops).
    pub(super) fn begin(&mut self) {
        *self = Load::default();
    }

    pub(super) fn meta_loaded(&mut self, meta: Option<String>) {
        self.meta = Some(meta.unwrap_or_else(|| "null".into()));
    }

    /// `lastAppliedCommitIndex` answered; an error says why its answer is no index.
    pub(super) fn applied_loaded(&mut self, result: Option<String>) -> Result<(), String> {
        self.applied = Some(parse_applied(result)?);
        Ok(())
    }

    /// Both answers, once both came.
    pub(super) fn both(&self) -> Option<(&str, u64)> {
        Some((self.meta.as_deref()?, self.applied?))
    }

    /// The attempt failed: start over after a pause.
    pub(super) fn failed(&mut self, now: u64) {
        self.retry_at = Some(now + LOAD_RETRY_MS);
    }

    pub(super) fn retry_due(&self, now: u64) -> bool {
        self.retry_at.is_some_and(|t| t <= now)
    }
}

/// Reads what `lastAppliedCommitIndex` called back with: a non-negative integer, its decimal
/// text, or nothing (a fresh node).
fn parse_applied(result: Option<String>) -> Result<u64, String> {
    let v: serde_json::Value = match result.as_deref().map(serde_json::from_str) {
        None => serde_json::Value::Null,
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(format!("lastAppliedCommitIndex returned something that is not JSON: {e}")),
    };
    match &v {
        serde_json::Value::Null => Ok(0),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(i) if i <= skiff_core::MAX_SAFE => Ok(i),
            _ => Err(format!("lastAppliedCommitIndex returned {n}, not a non-negative integer")),
        },
        serde_json::Value::String(s) => match s.trim().parse::<u64>() {
            Ok(i) if i <= skiff_core::MAX_SAFE => Ok(i),
            _ => Err(format!("lastAppliedCommitIndex returned {s:?}, not an index")),
        },
        other => Err(format!("lastAppliedCommitIndex returned {other}, not an index")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_answers_are_needed_in_either_order() {
        let mut load = Load::default();
        load.applied_loaded(Some("7".into())).unwrap();
        assert!(load.both().is_none());
        load.meta_loaded(None);
        assert_eq!(load.both(), Some(("null", 7)));
        load.begin();
        assert!(load.both().is_none(), "a new attempt forgets the old answers");
    }

    #[test]
    fn applied_index_forms() {
        assert_eq!(parse_applied(None), Ok(0));
        assert_eq!(parse_applied(Some("null".into())), Ok(0));
        assert_eq!(parse_applied(Some("12".into())), Ok(12));
        assert_eq!(parse_applied(Some("\" 12 \"".into())), Ok(12));
        assert!(parse_applied(Some("-1".into())).is_err());
        assert!(parse_applied(Some("1.5".into())).is_err());
        assert!(parse_applied(Some("{}".into())).is_err());
        assert!(parse_applied(Some("nope".into())).is_err());
        assert!(parse_applied(Some((skiff_core::MAX_SAFE + 1).to_string())).is_err());
    }

    #[test]
    fn a_failure_retries_after_a_pause() {
        let mut load = Load::default();
        assert!(!load.retry_due(0));
        load.failed(100);
        assert!(!load.retry_due(100 + LOAD_RETRY_MS - 1));
        assert!(load.retry_due(100 + LOAD_RETRY_MS));
        load.begin();
        assert!(!load.retry_due(u64::MAX));
    }
}
