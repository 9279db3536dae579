//! Credentials bound to peers: which token may claim which peer ids, and what a session
//! opened with it may send.
//!
//! A hub holds a list of [`Credential`]s. A client's `Hello` carries a token and a peer id;
//! the token must be listed, and the peer id must be one the token may claim. The role then
//! decides what the session may send (see [`Role`]). ARCHITECTURE.md ("Credentials") has the
//! model and what it does not protect against.

use serde::{Deserialize, Serialize};

use crate::clock::PeerId;
use crate::event::Event;
use crate::limits::MAX_TOKEN_LEN;

/// What a session opened with a credential may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Sends only events its own peer id authored, plus events the hub already holds
    /// (what it received from this hub, sent back); receives everything.
    Replica,
    /// Forwards any peer's events (a client bridging two hubs); receives everything.
    Relay,
    /// Receives only: any event it sends is refused.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Replica => "replica",
            Role::Relay => "relay",
            Role::ReadOnly => "read-only",
        }
    }
}

/// One token, the peer ids it may claim, and its role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub token: String,
    /// Peer ids the token may claim; `"*"` alone means any.
    pub peers: Vec<String>,
    pub role: Role,
}

/// A hub's credentials: the file `serve --credentials` reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub credentials: Vec<Credential>,
}

/// Why a credentials file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("credential {index} (0-based): {reason}")]
pub struct CredentialsError {
    pub index: usize,
    pub reason: String,
}

/// What a hello was granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub peer: String,
    pub role: Role,
    /// Whether the credential names this peer id (not `"*"`): only then is the session's
    /// claim to be that peer proven, and only then does the hub record it as a known peer.
    pub bound: bool,
}

impl Credentials {
    /// Parses and checks a credentials file (JSON): tokens non-empty, at most
    /// [`MAX_TOKEN_LEN`] bytes and distinct; peer ids valid; at least one peer each.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let c: Credentials = serde_json::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), CredentialsError> {
        for (index, c) in self.credentials.iter().enumerate() {
            let bad = |reason: String| CredentialsError { index, reason };
            if c.token.is_empty() || c.token.len() > MAX_TOKEN_LEN {
                return Err(bad(format!(
                    "a token must have 1 to {MAX_TOKEN_LEN} bytes, not {}",
                    c.token.len()
                )));
            }
            if c.token.trim() != c.token {
                return Err(bad("a token may not start or end with white space".into()));
            }
            if self.credentials[..index].iter().any(|o| o.token == c.token) {
                return Err(bad("the same token is listed twice".into()));
            }
            if c.peers.is_empty() {
                return Err(bad(
                    "no peers: list the peer ids it may claim, or \"*\"".into()
                ));
            }
            for p in &c.peers {
                if p != "*" {
                    PeerId::new(p.as_str()).map_err(|e| bad(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// The grant for a hello with `token` claiming `peer`, or the reason to refuse it.
    /// Every listed token is compared, in constant time each, so the time taken does not
    /// tell which one came close.
    pub fn grant(&self, token: Option<&str>, peer: &str) -> Result<Grant, String> {
        let Some(token) = token else {
            return Err("this hub requires an auth token and none was given".into());
        };
        let mut found = None;
        for c in &self.credentials {
            if constant_time_eq(c.token.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(c);
            }
        }
        let Some(c) = found else {
            return Err("the auth token is not valid for this hub".into());
        };
        if c.peers.iter().any(|p| p == "*" || p == peer) {
            Ok(Grant {
                peer: peer.to_string(),
                role: c.role,
                bound: c.peers.iter().any(|p| p == peer),
            })
        } else {
            Err(format!(
                "this token may not claim peer {peer:?} (it may claim {})",
                c.peers.join(", ")
            ))
        }
    }
}

impl Grant {
    /// Whether a session with this grant may send `events`; `held` tells whether this side
    /// already holds an event. The error names the first event refused.
    pub fn check_events(
        &self,
        events: &[Event],
        held: impl Fn(&Event) -> bool,
    ) -> Result<(), String> {
        match self.role {
            Role::Relay => Ok(()),
            Role::ReadOnly if events.is_empty() => Ok(()),
            Role::ReadOnly => Err(format!(
                "peer {:?} holds a read-only credential and may not send events (it sent {})",
                self.peer, events[0].id
            )),
            Role::Replica => match events
                .iter()
                .find(|e| e.id.peer.as_str() != self.peer && !held(e))
            {
                None => Ok(()),
                Some(e) => Err(format!(
                    "peer {:?} holds a replica credential and may send only its own events \
                     and events this hub holds; it sent {}, which is neither",
                    self.peer, e.id
                )),
            },
        }
    }
}

/// Compares without stopping at the first difference, so the time taken does not reveal
/// how much of a guessed token is right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::from_json(
            r#"{"credentials": [
                {"token": "t-laptop", "peers": ["laptop"], "role": "replica"},
                {"token": "t-bridge", "peers": ["*"], "role": "relay"},
                {"token": "t-dash", "peers": ["dash", "dash2"], "role": "read-only"}
            ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn tokens_are_bound_to_peers() {
        let c = creds();
        assert_eq!(
            c.grant(Some("t-laptop"), "laptop").unwrap().role,
            Role::Replica
        );
        let e = c.grant(Some("t-laptop"), "phone").unwrap_err();
        assert!(e.contains("may not claim peer \"phone\""), "{e}");
        assert_eq!(c.grant(Some("t-bridge"), "any").unwrap().role, Role::Relay);
        assert_eq!(
            c.grant(Some("t-dash"), "dash2").unwrap().role,
            Role::ReadOnly
        );
        assert!(c
            .grant(Some("nope"), "laptop")
            .unwrap_err()
            .contains("not valid"));
        assert!(c
            .grant(None, "laptop")
            .unwrap_err()
            .contains("none was given"));
    }

    #[test]
    fn bad_files_are_refused_naming_the_entry() {
        for (text, want) in [
            (
                r#"{"credentials":[{"token":"","peers":["a"],"role":"replica"}]}"#,
                "credential 0",
            ),
            (
                r#"{"credentials":[{"token":"x","peers":["a"],"role":"replica"},{"token":"x","peers":["b"],"role":"relay"}]}"#,
                "credential 1 (0-based): the same token is listed twice",
            ),
            (
                r#"{"credentials":[{"token":"x","peers":[],"role":"replica"}]}"#,
                "no peers",
            ),
            (
                r#"{"credentials":[{"token":"x","peers":["a b"],"role":"replica"}]}"#,
                "a b",
            ),
            (
                r#"{"credentials":[{"token":"x","peers":["a"],"role":"admin"}]}"#,
                "admin",
            ),
            (
                r#"{"credentials":[{"token":"x","peers":["a"],"role":"relay","x":1}]}"#,
                "unknown field",
            ),
        ] {
            let e = Credentials::from_json(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
