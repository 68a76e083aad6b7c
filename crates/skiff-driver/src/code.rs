//! Every error code the engine reports, in one table.
//!
//! A code reaches JS as the `code` of an `Error` (a `done` op's error, a `warning` or `error`
//! event, a refused request's answer, or a thrown napi error). The binding exports [`ALL`] as
//! `errorCodes()`, and `__test__/codes.test.js` checks that `lib/errors.js`'s `CODES` and the
//! `ErrorCode` union of `index.d.ts` list each of them, and that no Rust source spells a code
//! outside this table. A plugin's own code (e.g. `ECONNRESET` from a transport) passes through
//! unchanged; the codes here are the ones the engine chooses itself.

/// Defines one `&str` constant per code (its value is its name) and [`ALL`], so a code cannot be
/// added without being listed.
macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        $($(#[$doc])* pub const $name: &str = stringify!($name);)*
        /// Every code above, in the order they are defined.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

codes! {
    /// The options are not valid (shape, range, or timing rules).
    EINVALIDOPTIONS,
    /// This node is not the leader; the error carries `leader` (an id, or null).
    ENOTLEADER,
    /// A request, a plugin call or a peer's reply did not finish in time.
    ETIMEDOUT,
    /// The node stopped before the request completed, or was called after stop.
    ESTOPPED,
    /// `start()` was called twice on one native node.
    ESTARTED,
    /// A command (or peer metadata) is not JSON the engine can carry, or is too large.
    EBADCOMMAND,
    /// Peer metadata given to `join` is not JSON.
    EBADMETADATA,
    /// A plugin called back with a value of the wrong shape.
    EBADRESULT,
    /// What persistence loaded is not a state the engine can start from.
    EBADSTATE,
    /// `join` named this node itself.
    EJOINSELF,
    /// The log cannot take another entry (its index would pass 2^53 - 1).
    ELOGFULL,
    /// A peer message arrived while the node was still loading its state.
    ENOTREADY,
    /// A peer message was refused: malformed, or a term that leaves no room for elections.
    EBADMESSAGE,
    /// A peer message claimed a sender other than the peer its connection was opened with.
    EBADSENDER,
    /// A persistence call failed without a code of its own.
    EPERSISTENCE,
    /// A transport call failed without a code of its own.
    ETRANSPORT,
    /// A plugin call failed without a code of its own.
    EPLUGIN,
    /// A bug in the engine (it could not encode its own operations).
    EINTERNAL,
    /// Too many reads are waiting on this node (`read()`).
    EBUSY,
    /// The leader is handing leadership over and takes no command meanwhile; the wrapper retries
    /// until the command's timeout (the hand-off takes at most an election timeout).
    ETRANSFERRING,
    /// No voter can take leadership over (`transferLeadership()`): none other answers, or the one
    /// named is not a voter or cannot take over on request.
    ENOVOTER,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_and_spelled_as_a_code() {
        let mut seen = std::collections::HashSet::new();
        for code in ALL {
            assert!(seen.insert(*code), "{code} listed twice");
            assert!(code.len() > 1 && code.starts_with('E'), "{code}");
            assert!(code.chars().all(|c| c.is_ascii_uppercase()), "{code}");
        }
        assert_eq!(ENOTLEADER, "ENOTLEADER");
    }
}
