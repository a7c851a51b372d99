//! Exit sessions (protocol.md 7.4; docs/decisions.md "Exit sessions"): the messages
//! `EXIT_SESSION` / `EXIT_SESSION_ACK` and their keys. A client holds one session key per
//! (isolation group, exit); the exit binds the inner address, and so the kernel's NAT state, to
//! the session instead of the circuit, and a later circuit re-attaches with a proof bound to that
//! circuit's `bind`, so a TCP connection through an exit outlives the circuit that carried it.
//!
//! Must never: accept a proof made for another circuit, or panic on any bytes.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::crypto::labels::{LABEL_EXIT_SESSION_ID, LABEL_EXIT_SESSION_PROOF};

/// `EXIT_SESSION` payload: version 1 + kind 1 + reserved 2 + sid 16 + key or proof 32.
pub const EXIT_SESSION_LEN: usize = 52;
/// `EXIT_SESSION_ACK` payload: version 1 + status 1 + reserved 2 + sid 16.
pub const EXIT_SESSION_ACK_LEN: usize = 20;
/// Version byte of both messages.
pub const EXIT_SESSION_VERSION: u8 = 1;
/// Session id bytes.
pub const SID_LEN: usize = 16;

/// What an `EXIT_SESSION` asks.
#[derive(Clone, PartialEq, Eq)]
pub enum SessionRequest {
    /// A new session: the key itself (only the exit reads it), whose hash is the id.
    Open {
        /// `H(LABEL_EXIT_SESSION_ID, key)[..16]`.
        sid: [u8; SID_LEN],
        /// The session key.
        key: [u8; 32],
    },
    /// Re-attach this circuit to a session: `MAC(key, LABEL_EXIT_SESSION_PROOF, bind ‖ sid)`.
    Resume {
        /// The session.
        sid: [u8; SID_LEN],
        /// The proof, valid on one circuit only.
        proof: [u8; 32],
    },
}

impl std::fmt::Debug for SessionRequest {
    // The key is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionRequest::Open { sid, .. } => write!(f, "Open({})", hex::encode(sid)),
            SessionRequest::Resume { sid, .. } => write!(f, "Resume({})", hex::encode(sid)),
        }
    }
}

/// `EXIT_SESSION_ACK` status (the codes of protocol.md 7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Attached: packets on this circuit use the session's inner address.
    Ok = 0,
    /// No such session (never opened, expired, or the exit restarted): open a new one.
    Unknown = 1,
    /// No room (memory budget, inner addresses, or attach tries on this circuit).
    Full = 3,
    /// Malformed, wrong id for the key, or a proof that does not verify.
    Refused = 4,
    /// The session id is taken, or this circuit is attached to another session or carries
    /// packets without one.
    Taken = 5,
}

impl AckStatus {
    fn from_u8(b: u8) -> Option<AckStatus> {
        Some(match b {
            0 => AckStatus::Ok,
            1 => AckStatus::Unknown,
            3 => AckStatus::Full,
            4 => AckStatus::Refused,
            5 => AckStatus::Taken,
            _ => return None,
        })
    }
}

/// Why an exit session message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionWireError {
    /// Wrong length.
    #[error("exit session message of {0} bytes")]
    Length(usize),
    /// Unknown version.
    #[error("unknown exit session version {0}")]
    Version(u8),
    /// Unknown kind or status, or reserved bytes not zero.
    #[error("unknown exit session kind or status {0}")]
    Kind(u8),
    /// An open whose id is not the hash of its key.
    #[error("session id does not match the key")]
    Sid,
}

/// The session id of `key`.
pub fn sid_of(key: &[u8; 32]) -> [u8; SID_LEN] {
    let mut h = Sha256::new();
    h.update(LABEL_EXIT_SESSION_ID);
    h.update(key);
    let d: [u8; 32] = h.finalize().into();
    let mut sid = [0u8; SID_LEN];
    sid.copy_from_slice(d.get(..SID_LEN).unwrap_or(&[0u8; SID_LEN]));
    sid
}

/// The proof that re-attaches the circuit whose exit hop has `bind` to session `sid`.
pub fn proof(key: &[u8; 32], bind: &[u8; 32], sid: &[u8; SID_LEN]) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0u8; 32];
    };
    mac.update(LABEL_EXIT_SESSION_PROOF);
    mac.update(bind);
    mac.update(sid);
    mac.finalize().into_bytes().into()
}

/// Whether `p` is the proof for this circuit, in constant time.
pub fn proof_ok(key: &[u8; 32], bind: &[u8; 32], sid: &[u8; SID_LEN], p: &[u8; 32]) -> bool {
    bool::from(proof(key, bind, sid).ct_eq(p))
}

impl SessionRequest {
    /// A resume for the circuit with `bind`.
    pub fn resume(key: &[u8; 32], bind: &[u8; 32]) -> SessionRequest {
        let sid = sid_of(key);
        SessionRequest::Resume {
            sid,
            proof: proof(key, bind, &sid),
        }
    }

    /// An open of the session `key`.
    pub fn open(key: &[u8; 32]) -> SessionRequest {
        SessionRequest::Open {
            sid: sid_of(key),
            key: *key,
        }
    }

    /// The session id.
    pub fn sid(&self) -> &[u8; SID_LEN] {
        match self {
            SessionRequest::Open { sid, .. } | SessionRequest::Resume { sid, .. } => sid,
        }
    }

    /// The payload.
    pub fn to_bytes(&self) -> [u8; EXIT_SESSION_LEN] {
        let mut b = [0u8; EXIT_SESSION_LEN];
        let (kind, sid, tail) = match self {
            SessionRequest::Open { sid, key } => (0, sid, key),
            SessionRequest::Resume { sid, proof } => (1, sid, proof),
        };
        b[0] = EXIT_SESSION_VERSION;
        b[1] = kind;
        b[4..20].copy_from_slice(sid);
        b[20..].copy_from_slice(tail);
        b
    }

    /// Parses a payload; an open's id must be its key's hash.
    pub fn parse(b: &[u8]) -> Result<SessionRequest, SessionWireError> {
        let b = <&[u8; EXIT_SESSION_LEN]>::try_from(b)
            .map_err(|_| SessionWireError::Length(b.len()))?;
        let [version, kind, r0, r1, rest @ ..] = b;
        if *version != EXIT_SESSION_VERSION {
            return Err(SessionWireError::Version(*version));
        }
        if (*r0, *r1) != (0, 0) {
            return Err(SessionWireError::Kind(*kind));
        }
        let (sid_b, tail_b) = rest.split_at(SID_LEN);
        let mut sid = [0u8; SID_LEN];
        sid.copy_from_slice(sid_b);
        let mut tail = [0u8; 32];
        tail.copy_from_slice(tail_b);
        match kind {
            0 if sid_of(&tail) == sid => Ok(SessionRequest::Open { sid, key: tail }),
            0 => Err(SessionWireError::Sid),
            1 => Ok(SessionRequest::Resume { sid, proof: tail }),
            k => Err(SessionWireError::Kind(*k)),
        }
    }
}

/// An `EXIT_SESSION_ACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionAck {
    /// The outcome.
    pub status: AckStatus,
    /// The session asked about (zero when the request did not parse).
    pub sid: [u8; SID_LEN],
}

impl SessionAck {
    /// The payload.
    pub fn to_bytes(&self) -> [u8; EXIT_SESSION_ACK_LEN] {
        let mut b = [0u8; EXIT_SESSION_ACK_LEN];
        b[0] = EXIT_SESSION_VERSION;
        b[1] = self.status as u8;
        b[4..].copy_from_slice(&self.sid);
        b
    }

    /// Parses a payload.
    pub fn parse(b: &[u8]) -> Result<SessionAck, SessionWireError> {
        let b = <&[u8; EXIT_SESSION_ACK_LEN]>::try_from(b)
            .map_err(|_| SessionWireError::Length(b.len()))?;
        let [version, status, r0, r1, rest @ ..] = b;
        if *version != EXIT_SESSION_VERSION {
            return Err(SessionWireError::Version(*version));
        }
        if (*r0, *r1) != (0, 0) {
            return Err(SessionWireError::Kind(*status));
        }
        let status = AckStatus::from_u8(*status).ok_or(SessionWireError::Kind(*status))?;
        Ok(SessionAck { status, sid: *rest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// Bytes, ids and proofs from tests/vectors/make_exit_sessions.py (Python's hashlib/hmac,
    /// not this code).
    #[test]
    fn independent_vectors() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/exit_sessions.json")).unwrap();
        let key: [u8; 32] = unhex(doc["key"].as_str().unwrap()).try_into().unwrap();
        let bind: [u8; 32] = unhex(doc["bind"].as_str().unwrap()).try_into().unwrap();
        let sid = sid_of(&key);
        assert_eq!(hex::encode(sid), doc["sid"].as_str().unwrap());
        let open = SessionRequest::open(&key);
        assert_eq!(hex::encode(open.to_bytes()), doc["open"].as_str().unwrap());
        let resume = SessionRequest::resume(&key, &bind);
        assert_eq!(
            hex::encode(resume.to_bytes()),
            doc["resume"].as_str().unwrap()
        );
        assert_eq!(
            SessionRequest::parse(&unhex(doc["resume"].as_str().unwrap())).unwrap(),
            resume
        );
        assert_eq!(
            SessionRequest::parse(&unhex(doc["open"].as_str().unwrap())).unwrap(),
            open
        );
        let ack = SessionAck::parse(&unhex(doc["ack_ok"].as_str().unwrap())).unwrap();
        assert_eq!(ack.status, AckStatus::Ok);
        assert_eq!(ack.sid, sid);
        assert_eq!(hex::encode(ack.to_bytes()), doc["ack_ok"].as_str().unwrap());
        for bad in doc["invalid_requests"].as_array().unwrap() {
            assert!(
                SessionRequest::parse(&unhex(bad[1].as_str().unwrap())).is_err(),
                "{}",
                bad[0]
            );
        }
        for bad in doc["invalid_acks"].as_array().unwrap() {
            assert!(
                SessionAck::parse(&unhex(bad[1].as_str().unwrap())).is_err(),
                "{}",
                bad[0]
            );
        }
    }

    /// A proof made for one circuit does not verify on another (replaying a re-attach).
    #[test]
    fn proofs_are_bound_to_the_circuit() {
        let key = [7u8; 32];
        let sid = sid_of(&key);
        let SessionRequest::Resume { proof: p, .. } = SessionRequest::resume(&key, &[1; 32]) else {
            panic!()
        };
        assert!(proof_ok(&key, &[1; 32], &sid, &p));
        assert!(!proof_ok(&key, &[2; 32], &sid, &p));
        assert!(!proof_ok(&[8; 32], &[1; 32], &sid, &p));
        assert!(!format!("{:?}", SessionRequest::open(&key)).contains("0707"));
    }
}
