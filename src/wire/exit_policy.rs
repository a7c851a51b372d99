//! Exit policy records (docs/protocol.md 5.5): what an exit lets out, signed by its relay identity.
//!
//! The 424-byte relay record has no spare bytes and its length is fixed in HELLO, PEX and the DHT,
//! so the policy travels as its own record, bound to the relay by the identity that signs both.
//! A relay record with the `EXIT` flag says that such a record exists.

use ed25519_dalek::{Signature, Signer, SigningKey};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::record::{check_identity, check_record_time, RecordError};
use crate::crypto::labels::LABEL_EXIT_POLICY_SIG;
use crate::crypto::sigcache::Verified;

/// Length of an exit policy record.
pub const EXIT_POLICY_LEN: usize = 328;
/// Record kind byte of exit policy records.
pub const RECORD_KIND_EXIT_POLICY: u8 = 0x04;
/// Exit policy layout version.
pub const EXIT_POLICY_VERSION: u8 = 1;
/// Port slots.
pub const EXIT_POLICY_MAX_PORTS: usize = 32;
/// Network slots.
pub const EXIT_POLICY_MAX_NETWORKS: usize = 8;
/// Policy flag: reaches IPv4 destinations.
pub const EXIT_FLAG_IPV4: u8 = 1 << 0;
/// Policy flag: reaches IPv6 destinations.
pub const EXIT_FLAG_IPV6: u8 = 1 << 1;

const NETWORK_LEN: usize = 18;
const PORTS_OFF: usize = 56;
const NETWORKS_OFF: usize = PORTS_OFF + 2 * EXIT_POLICY_MAX_PORTS;
const SIGNED_LEN: usize = NETWORKS_OFF + NETWORK_LEN * EXIT_POLICY_MAX_NETWORKS;

/// The fields of an exit policy record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitPolicyFields {
    /// `EXIT_FLAG_*` bits; at least one family.
    pub flags: u8,
    /// TCP/UDP destination ports, strictly ascending, 0 to 32 of them.
    pub ports: Vec<u16>,
    /// Networks let out beyond the public internet, 0 to 8, host bits zero.
    pub networks: Vec<IpNet>,
    /// Milliseconds since the epoch when signed; strictly increasing per identity.
    pub seq: u64,
    /// Unix seconds after which the record is invalid.
    pub expires: u64,
}

/// A verified exit policy record: its exact bytes, its signer and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitPolicyRecord {
    bytes: [u8; EXIT_POLICY_LEN],
    identity: [u8; 32],
    fields: ExitPolicyFields,
}

impl ExitPolicyRecord {
    /// Signs a new record.
    pub fn sign(
        identity: &SigningKey,
        fields: ExitPolicyFields,
    ) -> Result<ExitPolicyRecord, RecordError> {
        if fields.ports.len() > EXIT_POLICY_MAX_PORTS
            || fields.networks.len() > EXIT_POLICY_MAX_NETWORKS
        {
            return Err(RecordError::Field("exit policy counts"));
        }
        let mut b = [0u8; EXIT_POLICY_LEN];
        b[0] = RECORD_KIND_EXIT_POLICY;
        b[1] = EXIT_POLICY_VERSION;
        b[2] = fields.flags;
        b[3] = fields.ports.len() as u8;
        b[4] = fields.networks.len() as u8;
        b[8..40].copy_from_slice(&identity.verifying_key().to_bytes());
        b[40..48].copy_from_slice(&fields.seq.to_be_bytes());
        b[48..56].copy_from_slice(&fields.expires.to_be_bytes());
        for (slot, port) in b[PORTS_OFF..NETWORKS_OFF]
            .chunks_exact_mut(2)
            .zip(&fields.ports)
        {
            slot.copy_from_slice(&port.to_be_bytes());
        }
        for (slot, net) in b[NETWORKS_OFF..SIGNED_LEN]
            .chunks_exact_mut(NETWORK_LEN)
            .zip(&fields.networks)
        {
            let (family, addr) = match net {
                IpNet::V4(n) => (4, n.network().to_ipv6_mapped().octets()),
                IpNet::V6(n) => (6, n.network().octets()),
            };
            let mut one = [0u8; NETWORK_LEN];
            one[0] = family;
            one[1] = net.prefix_len();
            one[2..].copy_from_slice(&addr);
            slot.copy_from_slice(&one);
        }
        let sig = identity.sign(&signed_message(&b));
        b[SIGNED_LEN..].copy_from_slice(&sig.to_bytes());
        // Parse what we built, so a record we send always passes our own checks.
        ExitPolicyRecord::parse_unchecked_time(&b)
    }

    /// Parses and verifies a record at time `now_ms` (Unix milliseconds): every check of 5.5.
    pub fn parse(bytes: &[u8], now_ms: u64) -> Result<ExitPolicyRecord, RecordError> {
        let r = ExitPolicyRecord::parse_unchecked_time(bytes)?;
        check_record_time(r.fields.expires, r.fields.seq, now_ms)?;
        Ok(r)
    }

    fn parse_unchecked_time(bytes: &[u8]) -> Result<ExitPolicyRecord, RecordError> {
        let b: &[u8; EXIT_POLICY_LEN] = bytes
            .try_into()
            .map_err(|_| RecordError::Length(bytes.len()))?;
        if b[0] != RECORD_KIND_EXIT_POLICY || b[1] != EXIT_POLICY_VERSION {
            return Err(RecordError::UnknownVersion {
                kind: b[0],
                version: b[1],
            });
        }
        let flags = b[2];
        if flags & !(EXIT_FLAG_IPV4 | EXIT_FLAG_IPV6) != 0 || flags == 0 {
            return Err(RecordError::Field("exit policy flags"));
        }
        let (n_ports, n_nets) = (usize::from(b[3]), usize::from(b[4]));
        if n_ports > EXIT_POLICY_MAX_PORTS || n_nets > EXIT_POLICY_MAX_NETWORKS {
            return Err(RecordError::Field("exit policy counts"));
        }
        if b[5..8] != [0; 3] {
            return Err(RecordError::Field("reserved bytes set"));
        }
        let mut identity = [0u8; 32];
        identity.copy_from_slice(&b[8..40]);
        // As for relay records: bytes that passed before skip the point and the signature.
        let memo = Verified::key(LABEL_EXIT_POLICY_SIG, b);
        let verifying = if memo.seen() {
            None
        } else {
            Some(check_identity(&identity)?)
        };
        let mut u = [0u8; 8];
        u.copy_from_slice(&b[40..48]);
        let seq = u64::from_be_bytes(u);
        u.copy_from_slice(&b[48..56]);
        let expires = u64::from_be_bytes(u);

        let mut ports = Vec::with_capacity(n_ports);
        for (i, slot) in b[PORTS_OFF..NETWORKS_OFF].chunks_exact(2).enumerate() {
            let &[hi, lo] = slot else {
                return Err(RecordError::Field("port slot"));
            };
            let port = u16::from_be_bytes([hi, lo]);
            match (i < n_ports, port) {
                (false, 0) => {}
                (true, p) if p != 0 && ports.last().is_none_or(|&last| last < p) => ports.push(p),
                _ => return Err(RecordError::Field("ports not ascending or slots not empty")),
            }
        }
        let mut networks = Vec::with_capacity(n_nets);
        for (i, slot) in b[NETWORKS_OFF..SIGNED_LEN]
            .chunks_exact(NETWORK_LEN)
            .enumerate()
        {
            match (i < n_nets, parse_network(slot)?) {
                (true, Some(n)) => networks.push(n),
                (false, None) => {}
                _ => return Err(RecordError::Field("network slots do not match the count")),
            }
        }
        if let Some(verifying) = verifying {
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&b[SIGNED_LEN..]);
            verifying
                .verify_strict(&signed_message(b), &Signature::from_bytes(&sig))
                .map_err(|_| RecordError::Signature)?;
            memo.remember();
        }
        Ok(ExitPolicyRecord {
            bytes: *b,
            identity,
            fields: ExitPolicyFields {
                flags,
                ports,
                networks,
                seq,
                expires,
            },
        })
    }

    /// The exact bytes.
    pub fn bytes(&self) -> &[u8; EXIT_POLICY_LEN] {
        &self.bytes
    }

    /// The exit's Ed25519 identity (the same as in its relay record).
    pub fn identity(&self) -> &[u8; 32] {
        &self.identity
    }

    /// The parsed fields.
    pub fn fields(&self) -> &ExitPolicyFields {
        &self.fields
    }
}

/// Identities one EXIT_POLICY_REQUEST names at most (protocol.md 4.4): the answers, one
/// EXIT_POLICY each, fit the asker's per-link rate beside the PEX answers'.
pub const EXIT_POLICY_REQUEST_MAX: usize = 4;

/// The payload of EXIT_POLICY_REQUEST: `count` (1..=4) ‖ reserved 0 ‖ `count` identities.
/// `None` for no identities or more than [`EXIT_POLICY_REQUEST_MAX`].
pub fn emit_policy_request(ids: &[[u8; 32]]) -> Option<Vec<u8>> {
    if ids.is_empty() || ids.len() > EXIT_POLICY_REQUEST_MAX {
        return None;
    }
    let mut p = Vec::with_capacity(2 + 32 * ids.len());
    p.push(ids.len() as u8);
    p.push(0);
    for id in ids {
        p.extend_from_slice(id);
    }
    Some(p)
}

/// Parses an EXIT_POLICY_REQUEST payload into the identities it names.
pub fn parse_policy_request(p: &[u8]) -> Result<Vec<[u8; 32]>, RecordError> {
    let (&count, rest) = p.split_first().ok_or(RecordError::Length(p.len()))?;
    let (&reserved, ids) = rest.split_first().ok_or(RecordError::Length(p.len()))?;
    let count = usize::from(count);
    if count == 0 || count > EXIT_POLICY_REQUEST_MAX {
        return Err(RecordError::Field("exit policy request count"));
    }
    if reserved != 0 {
        return Err(RecordError::Field("reserved bytes set"));
    }
    if ids.len() != 32 * count {
        return Err(RecordError::Length(p.len()));
    }
    Ok(ids
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok())
        .collect())
}

/// One network slot: `Ok(None)` when empty (all zero).
fn parse_network(slot: &[u8]) -> Result<Option<IpNet>, RecordError> {
    let bad = RecordError::Field("network slot");
    let (&family, rest) = slot.split_first().ok_or(bad.clone())?;
    let (&len, addr) = rest.split_first().ok_or(bad.clone())?;
    let addr: [u8; 16] = addr.try_into().map_err(|_| bad.clone())?;
    let v6 = Ipv6Addr::from(addr);
    let net = match family {
        0 if len == 0 && addr == [0; 16] => return Ok(None),
        4 => {
            let v4: Ipv4Addr = v6.to_ipv4_mapped().ok_or(bad.clone())?;
            IpNet::V4(Ipv4Net::new(v4, len).map_err(|_| bad.clone())?)
        }
        6 if v6.to_ipv4_mapped().is_none() => {
            IpNet::V6(Ipv6Net::new(v6, len).map_err(|_| bad.clone())?)
        }
        _ => return Err(bad),
    };
    if net.trunc() != net {
        return Err(RecordError::Field("network with host bits set"));
    }
    Ok(Some(net))
}

fn signed_message(b: &[u8; EXIT_POLICY_LEN]) -> Vec<u8> {
    let mut m = Vec::with_capacity(LABEL_EXIT_POLICY_SIG.len() + SIGNED_LEN);
    m.extend_from_slice(LABEL_EXIT_POLICY_SIG);
    m.extend_from_slice(&b[..SIGNED_LEN]);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/vectors/exit_policies.json")).unwrap()
    }

    #[test]
    fn independent_vector_verifies_and_re_signs_identically() {
        let doc = vectors();
        let v = &doc["valid"];
        let bytes = unhex(v["record"].as_str().unwrap());
        let now_ms = v["seq"].as_u64().unwrap();
        let r = ExitPolicyRecord::parse(&bytes, now_ms).unwrap();
        let f = r.fields();
        assert_eq!(f.flags, 3);
        assert_eq!(f.ports, vec![80, 443]);
        let nets: Vec<String> = f.networks.iter().map(|n| n.to_string()).collect();
        let want: Vec<String> = v["networks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        assert_eq!(nets, want);
        assert_eq!(hex::encode(r.identity()), v["identity"].as_str().unwrap());
        let seed: [u8; 32] = unhex(v["seed"].as_str().unwrap()).try_into().unwrap();
        let again = ExitPolicyRecord::sign(&SigningKey::from_bytes(&seed), f.clone()).unwrap();
        assert_eq!(again.bytes().as_slice(), bytes.as_slice());
    }

    #[test]
    fn independent_link_message_vector() {
        let doc = vectors();
        let record = unhex(doc["valid"]["record"].as_str().unwrap());
        let want = unhex(doc["link_message"]["frame"].as_str().unwrap());
        let mut buf = vec![0u8; want.len() + 64];
        let n =
            crate::wire::link::emit(&mut buf, crate::wire::link::MsgType::ExitPolicy, 0, &record)
                .unwrap();
        assert_eq!(&buf[..n], want.as_slice());
        let f = crate::wire::link::LinkFrame::new_checked(&want).unwrap();
        assert_eq!(f.msg_type(), crate::wire::link::MsgType::ExitPolicy);
        assert_eq!(f.payload(), record.as_slice());
    }

    #[test]
    fn independent_request_vectors() {
        let doc = vectors();
        let v = &doc["request_message"];
        let ids: Vec<[u8; 32]> = v["identities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| unhex(i.as_str().unwrap()).try_into().unwrap())
            .collect();
        let payload = unhex(v["payload"].as_str().unwrap());
        assert_eq!(emit_policy_request(&ids).unwrap(), payload);
        assert_eq!(parse_policy_request(&payload).unwrap(), ids);
        let want = unhex(v["frame"].as_str().unwrap());
        let mut buf = vec![0u8; want.len() + 64];
        let t = crate::wire::link::MsgType::ExitPolicyRequest;
        let n = crate::wire::link::emit(&mut buf, t, 0, &payload).unwrap();
        assert_eq!(&buf[..n], want.as_slice());
        let f = crate::wire::link::LinkFrame::new_checked(&want).unwrap();
        assert_eq!((f.msg_type(), f.payload()), (t, payload.as_slice()));
        for case in v["invalid"].as_array().unwrap() {
            let p = unhex(case["payload"].as_str().unwrap());
            assert!(
                parse_policy_request(&p).is_err(),
                "accepted: {}",
                case["why"]
            );
        }
        assert_eq!(emit_policy_request(&[]), None);
        assert_eq!(emit_policy_request(&[[1; 32]; 5]), None);
    }

    #[test]
    fn independent_invalid_vectors_are_refused() {
        let doc = vectors();
        let now_ms = doc["valid"]["seq"].as_u64().unwrap();
        for case in doc["invalid"].as_array().unwrap() {
            let bytes = unhex(case["record"].as_str().unwrap());
            assert!(
                ExitPolicyRecord::parse(&bytes, now_ms).is_err(),
                "accepted: {}",
                case["why"]
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let doc = vectors();
        let now_ms = doc["valid"]["seq"].as_u64().unwrap();
        let bytes = unhex(doc["valid"]["record"].as_str().unwrap());
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(ExitPolicyRecord::parse(&b, now_ms).is_err(), "bit {i}");
        }
        assert!(ExitPolicyRecord::parse(&bytes[1..], now_ms).is_err());
        // Expired a day and an hour later.
        assert_eq!(
            ExitPolicyRecord::parse(&bytes, now_ms + (86400 + 3600) * 1000),
            Err(RecordError::Expired)
        );
    }
}
