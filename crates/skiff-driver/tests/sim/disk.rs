//! The fake persistence of one node: what `saveMeta` made durable (and what the checker needs to
//! know of it), and the state machine, which persists its applied index atomically with each
//! command, as `lib/persistence` does.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// One log entry as `saveMeta` received it: its position, and its JSON text.
#[derive(Debug)]
pub struct SavedEntry {
    pub index: u64,
    pub term: u64,
    pub text: Box<str>,
}

/// A state handed to `saveMeta`, in the persisted format, with what the checker reads from it.
/// Invariant: `entries` are contiguous from `snap.0 + 1`.
#[derive(Clone, Debug)]
pub struct Saved {
    pub term: u64,
    pub vote: Option<String>,
    /// (lastIncludedIndex, lastIncludedTerm).
    pub snap: (u64, u64),
    /// `log.meta.pendingSnapshot`: the index of a snapshot install under way.
    pub install_mark: Option<u64>,
    /// `log.meta` and `peers` as JSON text.
    meta: Arc<str>,
    peers: Arc<str>,
    /// Shared with the host's copy of the last save's entries (what the wrapper keeps for `from`).
    pub entries: Arc<Vec<Arc<SavedEntry>>>,
    /// A state loaded as is (the original-format start): `loadMeta` returns this text.
    original: Option<Arc<str>>,
}

// The persisted format read on its own here, not with skiff-core's `restore`: the checker
// compares what the driver loaded with what this independent reading says was saved.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateIn<'a> {
    #[serde(default)]
    current_term: u64,
    #[serde(default)]
    voted_for: Option<String>,
    #[serde(borrow)]
    log: LogIn<'a>,
    #[serde(borrow)]
    peers: &'a RawValue,
}

#[derive(Deserialize)]
struct LogIn<'a> {
    #[serde(borrow)]
    meta: &'a RawValue,
    #[serde(borrow)]
    entries: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaIn {
    #[serde(default)]
    last_included_index: u64,
    #[serde(default)]
    last_included_term: u64,
    #[serde(default)]
    pending_snapshot: Option<PendingIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingIn {
    last_included_index: u64,
}

#[derive(Deserialize)]
struct EntryHead {
    term: u64,
    index: u64,
}

impl Saved {
    /// Nothing saved yet: `loadMeta` answers `null`.
    pub fn null() -> Saved {
        Saved {
            term: 0,
            vote: None,
            snap: (0, 0),
            install_mark: None,
            meta: Arc::from(""),
            peers: Arc::from(""),
            entries: Arc::default(),
            original: Some(Arc::from("null")),
        }
    }

    /// A state in the original (skiff-algorithm) format, as a node migrated from it finds on disk.
    pub fn original(text: &str) -> Result<Saved, String> {
        let mut s = Saved::parse(text, None, &[])?;
        s.original = Some(Arc::from(text));
        Ok(s)
    }

    /// The whole state a `saveMeta` op asks to write. With `from`, the op holds only the log
    /// entries from that index on and the earlier ones are those of the previous save, `prev`
    /// (what the wrapper keeps in memory, `lib/node/save-meta.js`).
    pub fn parse(text: &str, from: Option<u64>, prev: &[Arc<SavedEntry>]) -> Result<Saved, String> {
        let s: StateIn = serde_json::from_str(text).map_err(|e| format!("saveMeta state: {e}"))?;
        let meta: MetaIn = serde_json::from_str(s.log.meta.get()).map_err(|e| format!("log.meta: {e}"))?;
        let first = meta.last_included_index + 1;
        let mut entries = Vec::with_capacity(s.log.entries.len());
        if let (Some(from), Some(base)) = (from, prev.first().map(|e| e.index)) {
            let end = (from.saturating_sub(base) as usize).min(prev.len());
            let start = (first.saturating_sub(base) as usize).min(end);
            entries.extend(prev[start..end].iter().cloned());
        }
        for raw in s.log.entries {
            let head: EntryHead = serde_json::from_str(raw.get()).map_err(|e| format!("log entry: {e}"))?;
            entries.push(Arc::new(SavedEntry { index: head.index, term: head.term, text: raw.get().into() }));
        }
        for (k, e) in entries.iter().enumerate() {
            if e.index != first + k as u64 {
                return Err(format!("saved log is not contiguous: entry {} at position of {}", e.index, first + k as u64));
            }
        }
        Ok(Saved {
            term: s.current_term,
            vote: s.voted_for,
            snap: (meta.last_included_index, meta.last_included_term),
            install_mark: meta.pending_snapshot.map(|p| p.last_included_index),
            meta: Arc::from(s.log.meta.get()),
            peers: Arc::from(s.peers.get()),
            entries: Arc::new(entries),
            original: None,
        })
    }

    /// What `loadMeta` returns.
    pub fn text(&self) -> String {
        if let Some(t) = &self.original {
            return t.to_string();
        }
        let mut out = String::with_capacity(64 + self.entries.iter().map(|e| e.text.len() + 1).sum::<usize>());
        out.push_str(&format!(
            r#"{{"currentTerm":{},"votedFor":{},"log":{{"meta":{},"entries":["#,
            self.term,
            serde_json::to_string(&self.vote).unwrap_or_else(|_| "null".into()),
            self.meta
        ));
        for (k, e) in self.entries.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            out.push_str(&e.text);
        }
        out.push_str(&format!(r#"]}},"peers":{}}}"#, self.peers));
        out
    }

    /// The term of the entry at `index` in the saved log (`None` if absent or compacted).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snap.0 {
            return Some(self.snap.1);
        }
        if index < self.snap.0 {
            return None;
        }
        self.entries.get((index - self.snap.0 - 1) as usize).map(|e| e.term)
    }

    pub fn last_index(&self) -> u64 {
        self.snap.0 + self.entries.len() as u64
    }

    pub fn terms(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.term).collect()
    }
}

/// What survives a crash of one node.
pub struct Disk {
    /// The last completed save.
    pub durable: Saved,
    /// The one before it (for the `LoseLastSave` mutation).
    pub previous: Option<Saved>,
    /// The state machine: applied commands by index, and the applied index persisted atomically
    /// with them (`lastAppliedCommitIndex`).
    pub sm: Vec<(u64, String)>,
    pub sm_applied: u64,
}

impl Disk {
    pub fn new(durable: Saved) -> Disk {
        Disk { durable, previous: None, sm: Vec::new(), sm_applied: 0 }
    }

    /// A save completed.
    pub fn commit(&mut self, saved: Saved) {
        let old = std::mem::replace(&mut self.durable, saved);
        self.previous = Some(old);
    }

    /// `removeAllState`.
    pub fn clear_state_machine(&mut self) {
        self.sm.clear();
        self.sm_applied = 0;
    }

    pub fn has_command(&self, cmd: &str) -> bool {
        self.sm.iter().any(|(_, c)| c == cmd)
    }
}
