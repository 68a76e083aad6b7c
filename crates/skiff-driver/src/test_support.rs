//! Fixtures the parts' unit tests share.

use skiff_core::message::{Body, RequestVote};
use skiff_core::Message;

/// A plain (not pre-vote) RequestVote from `a` to `to` in `term`: a request that promises nothing
/// about the log, for tests of routing and of what waits for a save.
pub(crate) fn vote(to: &str, term: u64) -> Message {
    let body = Body::RequestVote(RequestVote {
        term,
        candidate_id: "a".into(),
        last_log_index: 0,
        last_log_term: 0,
        pre_vote: false,
        transfer: false,
    });
    Message { from: "a".into(), to: to.into(), token: None, body }
}
