//! Domain-separation labels (docs/protocol.md section 3.3). Every hash, KDF, MAC and signature
//! input starts with one of these. No label is a prefix of another (tested below), so inputs under
//! different labels never collide. A new construction gets a new label; an old one is never reused.

/// Overlay address (3.4).
pub const LABEL_ADDRESS: &[u8] = b"globalnet address v1";
/// Relay record signature (5.4).
pub const LABEL_RELAY_RECORD_SIG: &[u8] = b"globalnet relay record sig v1";
/// Signature of an exit policy record (5.5).
pub const LABEL_EXIT_POLICY_SIG: &[u8] = b"globalnet exit policy sig v1";
/// DHT key of a relay record (12.1).
pub const LABEL_RELAY_DHT_KEY: &[u8] = b"globalnet relay dht key v1";
/// DHT node id (12.1).
pub const LABEL_DHT_NODE_ID: &[u8] = b"globalnet dht node id v1";
/// Key for the client extension area of CREATE (8.2).
pub const LABEL_CIRC_HS_CLIENT_MSG: &[u8] = b"globalnet circuit hs v1 client msg";
/// Hash of the CREATE handshake (8.2).
pub const LABEL_CIRC_HS_TRANSCRIPT: &[u8] = b"globalnet circuit hs v1 transcript";
/// Hop key material (8.2).
pub const LABEL_CIRC_HS_KEYS: &[u8] = b"globalnet circuit hs v1 keys";
/// Hash rounds of the per-hop wide-block layer (6.4).
pub const LABEL_WIDEBLOCK: &[u8] = b"globalnet wideblock v1";
/// The key of each stream round of the per-hop wide-block layer (6.4).
pub const LABEL_WIDEBLOCK_STREAM: &[u8] = b"globalnet wideblock stream key v1";
/// Descriptor index (11.1).
pub const LABEL_DESC_INDEX: &[u8] = b"globalnet desc index v1";
/// Blinding factor (11.2).
pub const LABEL_BLIND: &[u8] = b"globalnet blind v1";
/// Blinded signing nonce prefix (11.2).
pub const LABEL_BLIND_NONCE: &[u8] = b"globalnet blind nonce v1";
/// Descriptor body key and nonce (11.4).
pub const LABEL_DESC_BODY_KEY: &[u8] = b"globalnet desc body key v1";
/// Descriptor signature (11.3).
pub const LABEL_DESC_SIG: &[u8] = b"globalnet descriptor sig v1";
/// Pseudonym seed (10.1).
pub const LABEL_PSEUDONYM: &[u8] = b"globalnet pseudonym v1";
/// Initial end-to-end handshake hash and chaining key (10.3).
pub const LABEL_E2E_INIT: &[u8] = b"globalnet e2e ik v1 init";
/// End-to-end handshake transcript hashing (10.3).
pub const LABEL_E2E_HASH: &[u8] = b"globalnet e2e ik v1 hash";
/// End-to-end handshake key mixing (10.3).
pub const LABEL_E2E_MIX: &[u8] = b"globalnet e2e ik v1 mix";
/// End-to-end session keys (10.3).
pub const LABEL_E2E_SPLIT: &[u8] = b"globalnet e2e ik v1 split";
/// Proof when joining a circuit to a session (10.7).
pub const LABEL_E2E_JOIN: &[u8] = b"globalnet e2e join v1";
/// Protection of the end-to-end frame counter (10.4).
pub const LABEL_E2E_HP: &[u8] = b"globalnet e2e hp v1";
/// Intro point registration signature (10.6).
pub const LABEL_ESTABLISH_INTRO: &[u8] = b"globalnet establish intro v1";
/// Intro point replay cache tag (10.6).
pub const LABEL_INTRO_REPLAY: &[u8] = b"globalnet intro replay v1";

/// Checksum of a key name (18.1).
pub const LABEL_KEYNAME_CHECKSUM: &[u8] = b"globalnet keyname checksum v1";
/// Proof of work of a name claim (18.3).
pub const LABEL_NAME_POW: &[u8] = b"globalnet name pow v1";
/// Signature of a name claim (18.3).
pub const LABEL_NAME_CLAIM_SIG: &[u8] = b"globalnet name claim sig v1";
/// DHT key of a name's claims (18.3).
pub const LABEL_NAME_DHT_KEY: &[u8] = b"globalnet name dht key v1";

/// Proof of work of an introduction (10.12).
pub const LABEL_INTRO_POW: &[u8] = b"globalnet intro pow v1";

/// Id of an exit session: the hash of its key (7.4).
pub const LABEL_EXIT_SESSION_ID: &[u8] = b"globalnet exit session id v1";
/// Proof re-attaching a circuit to an exit session (7.4).
pub const LABEL_EXIT_SESSION_PROOF: &[u8] = b"globalnet exit session proof v1";

/// Every label, for the distinctness test and for documentation tools.
pub const ALL: &[&[u8]] = &[
    LABEL_INTRO_POW,
    LABEL_ADDRESS,
    LABEL_RELAY_RECORD_SIG,
    LABEL_EXIT_POLICY_SIG,
    LABEL_RELAY_DHT_KEY,
    LABEL_DHT_NODE_ID,
    LABEL_CIRC_HS_CLIENT_MSG,
    LABEL_CIRC_HS_TRANSCRIPT,
    LABEL_CIRC_HS_KEYS,
    LABEL_WIDEBLOCK,
    LABEL_WIDEBLOCK_STREAM,
    LABEL_DESC_INDEX,
    LABEL_BLIND,
    LABEL_BLIND_NONCE,
    LABEL_DESC_BODY_KEY,
    LABEL_DESC_SIG,
    LABEL_PSEUDONYM,
    LABEL_E2E_INIT,
    LABEL_E2E_HASH,
    LABEL_E2E_MIX,
    LABEL_E2E_SPLIT,
    LABEL_E2E_JOIN,
    LABEL_E2E_HP,
    LABEL_ESTABLISH_INTRO,
    LABEL_INTRO_REPLAY,
    LABEL_KEYNAME_CHECKSUM,
    LABEL_NAME_POW,
    LABEL_NAME_CLAIM_SIG,
    LABEL_NAME_DHT_KEY,
    LABEL_EXIT_SESSION_ID,
    LABEL_EXIT_SESSION_PROOF,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_label_is_a_prefix_of_another() {
        for (i, a) in ALL.iter().enumerate() {
            for (j, b) in ALL.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{:?} is a prefix of {:?}", a, b);
                }
            }
        }
    }

    /// The labels are the ones the independent vector script uses.
    #[test]
    fn match_the_vector_script() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/protocol.json")).unwrap();
        let text = doc.to_string();
        for label in ALL {
            let s = std::str::from_utf8(label).unwrap();
            assert!(
                text.contains(s)
                    || include_str!("../../tests/vectors/make_protocol_vectors.py").contains(s)
                    || include_str!("../../tests/vectors/make_keynames.py").contains(s)
                    || include_str!("../../tests/vectors/make_name_claims.py").contains(s)
                    || include_str!("../../tests/vectors/make_intro_pow.py").contains(s)
                    || include_str!("../../tests/vectors/make_exit_policies.py").contains(s)
                    || include_str!("../../tests/vectors/make_exit_sessions.py").contains(s),
                "label {s} not found in the vector script"
            );
        }
    }
}
