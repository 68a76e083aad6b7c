//! The wire codec: a peer message's type name and JSON text ↔ the core's [`Body`].
//!
//! A request travels as `send(type, args)`; its response travels as the reply to that request,
//! so a response is read knowing the type of the request it answers. The message types are
//! listed once, in the `wire!` table below, which writes the conversions from it; their
//! names are the core's (`AppendEntries::TYPE`, ...).

use super::op::JsonText;
use skiff_core::message::{
    AppendEntries, AppendEntriesResponse, InstallSnapshot, InstallSnapshotResponse, ReadIndex, ReadIndexResponse,
    RequestVote, RequestVoteResponse, TimeoutNow, TimeoutNowResponse,
};
use skiff_core::Body;

/// The node a request speaks for, which must be the peer its connection was opened with.
trait Sender {
    fn sender(&self) -> &str;
}

impl Sender for AppendEntries {
    fn sender(&self) -> &str {
        &self.leader_id
    }
}

impl Sender for RequestVote {
    fn sender(&self) -> &str {
        &self.candidate_id
    }
}

impl Sender for InstallSnapshot {
    fn sender(&self) -> &str {
        &self.leader_id
    }
}

impl Sender for ReadIndex {
    fn sender(&self) -> &str {
        &self.follower_id
    }
}

impl Sender for TimeoutNow {
    fn sender(&self) -> &str {
        &self.leader_id
    }
}

/// Writes [`request`], [`sender`], [`response`] and `serde_text` from one list of `Request / Response`.
macro_rules! wire {
    ($($req:ident / $res:ident,)*) => {
        /// A request of type `kind` from its JSON text.
        pub fn request(kind: &str, text: &str) -> Result<Body, String> {
            match kind {
                $($req::TYPE => serde_json::from_str::<$req>(text).map(Body::$req).map_err(|e| e.to_string()),)*
                other => Err(format!("unknown message type {other:?}")),
            }
        }

        /// The node a request speaks for (`None` for a response).
        pub fn sender(body: &Body) -> Option<&str> {
            match body {
                $(Body::$req(m) => Some(m.sender()),)*
                _ => None,
            }
        }

        /// The reply to a request of type `kind`, from its JSON text.
        pub fn response(kind: &str, text: &str) -> Result<Body, String> {
            match kind {
                $($req::TYPE => serde_json::from_str::<$res>(text).map(Body::$res).map_err(|e| e.to_string()),)*
                other => Err(format!("unknown message type {other:?}")),
            }
        }

        /// A body as serde writes it: the form `to_json` writes.
        fn serde_text(body: &Body) -> String {
            let text = match body {
                $(Body::$req(m) => serde_json::to_string(m),
                  Body::$res(m) => serde_json::to_string(m),)*
            };
            // The core's messages are plain data; serialising them cannot fail.
            text.unwrap_or_else(|_| "null".into())
        }
    };
}

/// A body as the JSON text that goes on the wire. The AppendEntries exchange (every command's)
/// is written by hand, the rest through serde.
pub fn to_json(body: &Body) -> JsonText {
    // Reserved up front: grown piece by piece, the text was reallocated several times.
    let mut out = match body {
        Body::AppendEntries(m) => String::with_capacity(160 + m.entries.iter().map(|e| e.json_len_hint()).sum::<usize>()),
        _ => String::with_capacity(128),
    };
    match body {
        Body::AppendEntries(m) => m.write_json(&mut out),
        Body::AppendEntriesResponse(m) => m.write_json(&mut out),
        other => out = serde_text(other),
    }
    JsonText(out)
}

wire! {
    AppendEntries / AppendEntriesResponse,
    RequestVote / RequestVoteResponse,
    InstallSnapshot / InstallSnapshotResponse,
    ReadIndex / ReadIndexResponse,
    TimeoutNow / TimeoutNowResponse,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_reads_back_what_it_writes_under_the_core_s_name() {
        let requests = [
            r#"{"term":2,"leaderId":"a","prevLogIndex":1,"prevLogTerm":1,"entries":[],"leaderCommit":1}"#,
            r#"{"term":2,"candidateId":"b","lastLogIndex":3,"lastLogTerm":1}"#,
        ];
        for text in requests {
            let kind = if text.contains("candidateId") { "RequestVote" } else { "AppendEntries" };
            let body = request(kind, text).expect("a well-formed request");
            let from = sender(&body).expect("a request names its sender");
            assert_eq!(body.type_name(), kind);
            assert!(body.is_request());
            assert_eq!(from, if kind == "RequestVote" { "b" } else { "a" });
            assert_eq!(to_json(&body).as_str(), serde_text(&body));
            let again = request(kind, to_json(&body).as_str()).expect("reads back");
            assert_eq!(again, body);
        }
        let reply = response("RequestVote", r#"{"term":2,"voteGranted":true}"#).expect("a vote");
        assert_eq!(reply.type_name(), "RequestVote");
        assert!(!reply.is_request());
        assert_eq!(response("RequestVote", to_json(&reply).as_str()).expect("reads back"), reply);
    }

    #[test]
    fn an_unknown_type_or_a_wrong_shape_is_an_error() {
        assert!(request("Gossip", "{}").unwrap_err().contains("unknown message type"));
        assert!(response("Gossip", "{}").is_err());
        assert!(request("AppendEntries", r#"{"term":"x"}"#).is_err());
        assert!(request("InstallSnapshot", "null").is_err());
    }
}
