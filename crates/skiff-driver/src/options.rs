//! Node options as the JS wrapper passes them, checked again on the native side.

use serde::Deserialize;
use skiff_core::{Config, Json};

/// The options that reach the engine (`transport` and `persistence` stay in JS).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeOptions {
    pub id: String,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default = "Json::empty_object")]
    pub metadata: Json,
    #[serde(default = "defaults::heartbeat")]
    pub heartbeat_interval: u64,
    #[serde(default = "defaults::min_election")]
    pub min_election_timeout: u64,
    #[serde(default = "defaults::max_election")]
    pub max_election_timeout: u64,
    #[serde(default = "defaults::command_timeout")]
    pub command_timeout: u64,
    #[serde(default = "defaults::retained")]
    pub retained_log_entries: u64,
    /// The transport declared `pipelining: true`: its connections pair each reply with its
    /// request, so several requests may be in flight on one. Otherwise one at a time.
    #[serde(default)]
    pub pipelining: bool,
    /// Largest command `command()` takes, as JSON text in bytes. Far below what the built-in TCP
    /// transport carries in one frame (`maxFrameSize`, 16 MiB), so a batch of entries (see
    /// `Config::max_bytes_per_message`) plus one such command always fits.
    #[serde(default = "defaults::max_command_bytes")]
    pub max_command_bytes: u64,
    /// The persistence plugin has `createSnapshotReadStream`: a snapshot read is of the index it
    /// was taken at however far applying goes, so a transfer holds nothing back and a failed
    /// one can resume.
    #[serde(default)]
    pub point_in_time_snapshots: bool,
    /// `stop()` on a leader first hands leadership to the most up-to-date voter (for at most one
    /// election timeout), so the cluster does not wait out an election timeout.
    #[serde(default = "defaults::transfer_on_stop")]
    pub transfer_on_stop: bool,
}

/// The defaults of the options that reach the engine. The timing ones are the core's
/// (`Config::new`), so each number is written once; the binding exports them all as
/// `engineDefaults()` and `__test__/options.test.js` checks `lib/options.js` agrees.
pub mod defaults {
    use skiff_core::Config;

    fn core() -> Config {
        Config::new(String::new())
    }
    pub fn heartbeat() -> u64 {
        core().heartbeat_interval
    }
    pub fn min_election() -> u64 {
        core().min_election_timeout
    }
    pub fn max_election() -> u64 {
        core().max_election_timeout
    }
    pub fn retained() -> u64 {
        core().retained_log_entries
    }
    pub fn command_timeout() -> u64 {
        3000
    }
    pub fn max_command_bytes() -> u64 {
        1 << 20
    }
    pub fn transfer_on_stop() -> bool {
        true
    }

    /// Every default by its JS option name, as `lib/options.js`'s `DEFAULTS` spells them.
    pub fn to_json() -> serde_json::Value {
        serde_json::json!({
            "standby": false,
            "heartbeatInterval": heartbeat(),
            "minElectionTimeout": min_election(),
            "maxElectionTimeout": max_election(),
            "commandTimeout": command_timeout(),
            "retainedLogEntries": retained(),
            "maxCommandBytes": max_command_bytes(),
            "transferOnStop": transfer_on_stop(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("options are not valid JSON of the expected shape: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

impl NodeOptions {
    pub fn parse(text: &str) -> Result<NodeOptions, OptionsError> {
        let o: NodeOptions = serde_json::from_str(text)?;
        if o.id.is_empty() {
            return Err(OptionsError::Invalid("id must be a non-empty string".into()));
        }
        if !o.metadata.as_str().starts_with('{') {
            return Err(OptionsError::Invalid("metadata must be an object".into()));
        }
        if o.command_timeout == 0 {
            return Err(OptionsError::Invalid("commandTimeout must be positive".into()));
        }
        if o.max_command_bytes == 0 || o.max_command_bytes > skiff_core::MAX_SAFE {
            return Err(OptionsError::Invalid("maxCommandBytes must be a positive integer".into()));
        }
        o.core_config(0).validate().map_err(|e| OptionsError::Invalid(e.0))?;
        Ok(o)
    }

    pub fn core_config(&self, seed: u64) -> Config {
        let mut c = Config::new(self.id.clone());
        c.heartbeat_interval = self.heartbeat_interval;
        c.min_election_timeout = self.min_election_timeout;
        c.max_election_timeout = self.max_election_timeout;
        c.retained_log_entries = self.retained_log_entries;
        c.seed = seed;
        c
    }
}
