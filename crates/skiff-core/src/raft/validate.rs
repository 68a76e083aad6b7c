//! Validation of peer messages: what no correct peer sends is refused before it changes anything.

use super::read_index::validate_read_ctx;
use super::{MAX_SAFE, MAX_TERM};
use crate::message::Body;

/// Checks a message for things no correct peer sends. Nothing about the receiver's state is
/// consulted, so a malformed message changes nothing.
pub(super) fn validate(body: &Body) -> Result<(), String> {
    let term = body.term();
    if term > MAX_TERM {
        return Err(format!("term {term} is too large: it leaves no room for elections"));
    }
    let check = |what: &str, v: u64| if v > MAX_SAFE { Err(format!("{what} {v} is too large")) } else { Ok(()) };
    match body {
        Body::AppendEntries(a) => {
            check("prevLogIndex", a.prev_log_index)?;
            check("leaderCommit", a.leader_commit)?;
            if a.prev_log_term > a.term {
                return Err("prevLogTerm is past the message term".into());
            }
            let mut last_term = a.prev_log_term;
            for (expect, e) in (a.prev_log_index + 1..).zip(a.entries.iter()) {
                if e.index != expect {
                    return Err(format!("entry index {} where {} was expected", e.index, expect));
                }
                if e.term < last_term || e.term > a.term {
                    return Err(format!("entry {} has term {} out of order", e.index, e.term));
                }
                check("index", e.index)?;
                last_term = e.term;
            }
            if a.leader_id.is_empty() {
                return Err("empty leaderId".into());
            }
            validate_read_ctx(a.read_ctx)?;
            if a.transfer_to.as_ref().is_some_and(|t| t.is_empty()) {
                return Err("empty transferTo".into());
            }
        }
        Body::AppendEntriesResponse(r) => {
            check("matchIndex", r.match_index)?;
            check("rejectIndex", r.reject_index)?;
            check("lastApplied", r.last_applied)?;
            validate_read_ctx(r.read_ctx)?;
            if let Some(ci) = r.conflict_index {
                check("conflictIndex", ci)?;
            }
        }
        Body::RequestVote(rv) => {
            check("lastLogIndex", rv.last_log_index)?;
            if rv.last_log_term > rv.term {
                return Err("lastLogTerm is past the message term".into());
            }
            if rv.candidate_id.is_empty() {
                return Err("empty candidateId".into());
            }
        }
        Body::RequestVoteResponse(_) => {}
        Body::InstallSnapshot(s) => {
            check("lastIncludedIndex", s.last_included_index)?;
            if s.last_included_term > s.term {
                return Err("lastIncludedTerm is past the message term".into());
            }
        }
        Body::InstallSnapshotResponse(r) => check("installedIndex", r.installed_index)?,
        Body::ReadIndex(r) => {
            check("id", r.id)?;
            if r.follower_id.is_empty() {
                return Err("empty followerId".into());
            }
        }
        Body::ReadIndexResponse(r) => {
            check("id", r.id)?;
            check("index", r.index)?;
        }
        Body::TimeoutNow(t) => {
            if t.leader_id.is_empty() {
                return Err("empty leaderId".into());
            }
        }
        Body::TimeoutNowResponse(_) => {}
    }
    Ok(())
}

