//! Endpoints, contacts and relay records (docs/protocol.md section 5).
//!
//! A relay record binds a relay's Ed25519 identity to its X25519 link key, its current onion key
//! and its endpoints, signed by the identity. It never carries anything tied to a service identity.
//! Receivers keep the record's exact bytes (PEX and the DHT pass records on verbatim) next to the
//! parsed fields.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use num_enum::{IntoPrimitive, TryFromPrimitive};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::crypto::keys::decode_public_key;
use crate::crypto::labels::LABEL_RELAY_RECORD_SIG;
use crate::crypto::sigcache::Verified;

/// Length of an endpoint.
pub const ENDPOINT_LEN: usize = 19;
/// Length of a contact (identity, link key, endpoint).
pub const CONTACT_LEN: usize = 83;
/// Length of a relay record.
pub const RELAY_RECORD_LEN: usize = 424;
/// Record kind byte of relay records.
pub const RECORD_KIND_RELAY: u8 = 0x01;
/// Relay record layout version.
pub const RELAY_RECORD_VERSION: u8 = 1;
/// Endpoint slots in a record.
pub const RECORD_MAX_ENDPOINTS: usize = 4;
/// Introducer slots in a record.
pub const RECORD_MAX_INTRODUCERS: usize = 2;
/// Clock skew tolerated between nodes (section 14.1).
pub const MAX_CLOCK_SKEW_S: u64 = 1800;
/// Lifetime of a relay record.
pub const RELAY_RECORD_LIFETIME_S: u64 = 86400;
/// How often a relay re-signs its record.
pub const RELAY_RECORD_REPUBLISH_S: u64 = 21600;

/// Record flag: carries circuits for others.
pub const FLAG_RELAY: u8 = 1 << 0;
/// Record flag: serves the DHT.
pub const FLAG_DHT: u8 = 1 << 1;
/// Record flag: may be an intro or rendezvous point.
pub const FLAG_RENDEZVOUS: u8 = 1 << 2;
/// Record flag: an exit, whose policy is an exit policy record (5.5). Taken from the top so that
/// flags added from the bottom do not collide.
pub const FLAG_EXIT: u8 = 1 << 7;

const SIGNED_LEN: usize = RELAY_RECORD_LEN - 64;

/// NAT classes (section 13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TryFromPrimitive, IntoPrimitive)]
#[repr(u8)]
pub enum NatClass {
    /// Not known yet.
    Unknown = 0,
    /// No NAT: the endpoint is the host's own address.
    Public = 1,
    /// Behind NAT but reachable unsolicited (port forward, full cone).
    Reachable = 2,
    /// Endpoint-independent mapping with filtering (port-restricted or address-restricted cone).
    Cone = 3,
    /// Endpoint-dependent mapping.
    Symmetric = 4,
}

impl NatClass {
    /// The name used in `status --json`.
    pub fn name(self) -> &'static str {
        match self {
            NatClass::Unknown => "unknown",
            NatClass::Public => "none",
            NatClass::Reachable => "reachable",
            NatClass::Cone => "cone",
            NatClass::Symmetric => "symmetric",
        }
    }

    /// Whether others can reach the relay without an introducer.
    pub fn directly_reachable(self) -> bool {
        matches!(self, NatClass::Public | NatClass::Reachable)
    }
}

/// Why a record or one of its parts was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Wrong length.
    #[error("record length {0}, expected {RELAY_RECORD_LEN}")]
    Length(usize),
    /// Unknown kind or version.
    #[error("unknown record kind {kind} version {version}")]
    UnknownVersion {
        /// The kind byte.
        kind: u8,
        /// The version byte.
        version: u8,
    },
    /// A malformed field.
    #[error("malformed record field: {0}")]
    Field(&'static str),
    /// The signature does not verify.
    #[error("record signature does not verify")]
    Signature,
    /// Expired, or valid too far in the future.
    #[error("record expired or not yet valid")]
    Expired,
    /// The sequence number is in the future.
    #[error("record sequence number is in the future")]
    FutureSeq,
}

/// Parses one endpoint slot: `Ok(None)` for an empty slot.
pub fn parse_endpoint(b: &[u8; ENDPOINT_LEN]) -> Result<Option<SocketAddr>, RecordError> {
    let family = b[0];
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&b[1..17]);
    let port = u16::from_be_bytes([b[17], b[18]]);
    let v6 = Ipv6Addr::from(addr);
    let ip: IpAddr = match family {
        0 => {
            return if b.iter().all(|&x| x == 0) {
                Ok(None)
            } else {
                Err(RecordError::Field("empty endpoint slot is not all zero"))
            }
        }
        4 => IpAddr::V4(
            v6.to_ipv4_mapped()
                .ok_or(RecordError::Field("IPv4 endpoint not in ::ffff:0:0/96"))?,
        ),
        6 => {
            if v6.to_ipv4_mapped().is_some() {
                return Err(RecordError::Field("IPv4-mapped address with family 6"));
            }
            IpAddr::V6(v6)
        }
        _ => return Err(RecordError::Field("unknown endpoint family")),
    };
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(RecordError::Field("endpoint address not usable"));
    }
    if port == 0 {
        return Err(RecordError::Field("endpoint port 0"));
    }
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Writes an endpoint slot (`None` = empty).
pub fn emit_endpoint(ep: Option<SocketAddr>, out: &mut [u8; ENDPOINT_LEN]) {
    out.fill(0);
    let Some(ep) = ep else { return };
    let (family, octets) = match ep.ip() {
        IpAddr::V4(v4) => (4, v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => (6, v6.octets()),
    };
    out[0] = family;
    out[1..17].copy_from_slice(&octets);
    out[17..19].copy_from_slice(&ep.port().to_be_bytes());
}

/// A relay reachable at an endpoint, known by identity and link key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    /// Ed25519 identity.
    pub identity: [u8; 32],
    /// X25519 link key.
    pub link_key: [u8; 32],
    /// Where to send datagrams.
    pub endpoint: SocketAddr,
}

impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Contact({} @ {})",
            crate::crypto::keys::fingerprint(&self.identity),
            self.endpoint
        )
    }
}

/// Parses a contact slot (5.2): `Ok(None)` for an all-zero (empty) slot; otherwise a canonical,
/// non-weak identity, a non-zero link key and an endpoint.
pub fn parse_contact(b: &[u8; CONTACT_LEN]) -> Result<Option<Contact>, RecordError> {
    let (head, ep) = b.split_at(64);
    let ep: &[u8; ENDPOINT_LEN] = ep.try_into().map_err(|_| RecordError::Field("contact"))?;
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let endpoint = parse_endpoint(ep)?.ok_or(RecordError::Field("contact without endpoint"))?;
    let (id_part, key_part) = head.split_at(32);
    let identity: [u8; 32] = id_part
        .try_into()
        .map_err(|_| RecordError::Field("contact"))?;
    let link_key: [u8; 32] = key_part
        .try_into()
        .map_err(|_| RecordError::Field("contact"))?;
    valid_identity(&identity)?;
    if link_key == [0u8; 32] {
        return Err(RecordError::Field("zero link key"));
    }
    Ok(Some(Contact {
        identity,
        link_key,
        endpoint,
    }))
}

/// Writes a contact slot (`None` = empty).
pub fn emit_contact(c: Option<&Contact>, out: &mut [u8; CONTACT_LEN]) {
    out.fill(0);
    let Some(c) = c else { return };
    out[..32].copy_from_slice(&c.identity);
    out[32..64].copy_from_slice(&c.link_key);
    let mut ep = [0u8; ENDPOINT_LEN];
    emit_endpoint(Some(c.endpoint), &mut ep);
    out[64..].copy_from_slice(&ep);
}

/// [`check_identity`] without the key, where only validity matters (no decoding of a key that
/// passed before).
fn valid_identity(identity: &[u8; 32]) -> Result<(), RecordError> {
    if crate::crypto::keys::valid_public_key(identity) {
        Ok(())
    } else {
        Err(RecordError::Field(
            "identity not a canonical point of the prime-order subgroup",
        ))
    }
}

/// Decodes an Ed25519 public key received from the network: a point, canonically encoded, of
/// large order and torsion-free ([`decode_public_key`]).
pub fn check_identity(identity: &[u8; 32]) -> Result<VerifyingKey, RecordError> {
    decode_public_key(identity).ok_or(RecordError::Field(
        "identity not a canonical point of the prime-order subgroup",
    ))
}

/// Length of a link specifier (5.3): how a relay reaches the next hop of a circuit.
pub const LINK_SPEC_LEN: usize = 272;
/// Link specifier layout version.
pub const LINK_SPEC_VERSION: u8 = 1;

/// A parsed link specifier: the next hop's identity, link key, endpoints and introducers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// Ed25519 identity of the next hop.
    pub identity: [u8; 32],
    /// Its X25519 link key.
    pub link_key: [u8; 32],
    /// 1 or 2 endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// 0 to 2 introducers.
    pub introducers: Vec<Contact>,
}

impl LinkSpec {
    /// The link specifier of the relay a record describes (its first two endpoints).
    pub fn of_record(r: &RelayRecord) -> LinkSpec {
        LinkSpec {
            identity: *r.identity(),
            link_key: r.fields().link_key,
            endpoints: r.fields().endpoints.iter().take(2).copied().collect(),
            introducers: r.fields().introducers.clone(),
        }
    }

    /// Encodes it.
    pub fn emit(&self) -> Result<[u8; LINK_SPEC_LEN], RecordError> {
        if self.endpoints.is_empty() || self.endpoints.len() > 2 || self.introducers.len() > 2 {
            return Err(RecordError::Field("link specifier counts"));
        }
        let mut b = [0u8; LINK_SPEC_LEN];
        b[0] = LINK_SPEC_VERSION;
        b[2] = self.endpoints.len() as u8;
        b[3] = self.introducers.len() as u8;
        b[4..36].copy_from_slice(&self.identity);
        b[36..68].copy_from_slice(&self.link_key);
        for (i, ep) in self.endpoints.iter().enumerate() {
            let mut slot = [0u8; ENDPOINT_LEN];
            emit_endpoint(Some(*ep), &mut slot);
            let off = 68 + i * ENDPOINT_LEN;
            b.get_mut(off..off + ENDPOINT_LEN)
                .ok_or(RecordError::Field("endpoint slot"))?
                .copy_from_slice(&slot);
        }
        for (i, c) in self.introducers.iter().enumerate() {
            let mut slot = [0u8; CONTACT_LEN];
            emit_contact(Some(c), &mut slot);
            let off = 106 + i * CONTACT_LEN;
            b.get_mut(off..off + CONTACT_LEN)
                .ok_or(RecordError::Field("contact slot"))?
                .copy_from_slice(&slot);
        }
        Ok(b)
    }

    /// Decodes and checks one.
    pub fn parse(bytes: &[u8]) -> Result<LinkSpec, RecordError> {
        let b: &[u8; LINK_SPEC_LEN] = bytes
            .try_into()
            .map_err(|_| RecordError::Length(bytes.len()))?;
        if b[0] != LINK_SPEC_VERSION {
            return Err(RecordError::UnknownVersion {
                kind: 0,
                version: b[0],
            });
        }
        let (n_ep, n_intro) = (usize::from(b[2]), usize::from(b[3]));
        if !(1..=2).contains(&n_ep) || n_intro > 2 {
            return Err(RecordError::Field("link specifier counts"));
        }
        let mut identity = [0u8; 32];
        let mut link_key = [0u8; 32];
        identity.copy_from_slice(&b[4..36]);
        link_key.copy_from_slice(&b[36..68]);
        valid_identity(&identity)?;
        if link_key == [0u8; 32] {
            return Err(RecordError::Field("zero link key"));
        }
        let endpoints = slots::<ENDPOINT_LEN, _>(b, 68, 2, n_ep, parse_endpoint, "endpoint slot")?;
        let introducers =
            slots::<CONTACT_LEN, _>(b, 106, 2, n_intro, parse_contact, "contact slot")?;
        Ok(LinkSpec {
            identity,
            link_key,
            endpoints,
            introducers,
        })
    }
}

/// Parses `max` fixed-size slots starting at `off`: the first `n` must hold a value, the rest must
/// be empty (the layout rule of 5.1 for endpoints and contacts).
fn slots<const L: usize, T>(
    b: &[u8],
    off: usize,
    max: usize,
    n: usize,
    parse: fn(&[u8; L]) -> Result<Option<T>, RecordError>,
    what: &'static str,
) -> Result<Vec<T>, RecordError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..max {
        let start = off + i * L;
        let slot: &[u8; L] = b
            .get(start..start + L)
            .and_then(|x| x.try_into().ok())
            .ok_or(RecordError::Field(what))?;
        match (i < n, parse(slot)?) {
            (true, Some(v)) => out.push(v),
            (false, None) => {}
            _ => return Err(RecordError::Field("slots do not match the count")),
        }
    }
    Ok(out)
}

/// The fields of a relay record.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordFields {
    /// `FLAG_*` bits.
    pub flags: u8,
    /// The relay's NAT class.
    pub nat: NatClass,
    /// X25519 link key.
    pub link_key: [u8; 32],
    /// Current X25519 onion key.
    pub onion_key: [u8; 32],
    /// Milliseconds since the epoch when signed; strictly increasing per identity.
    pub seq: u64,
    /// Unix seconds after which the record is invalid.
    pub expires: u64,
    /// 1 to 4 endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// 0 to 2 introducers.
    pub introducers: Vec<Contact>,
}

/// A verified relay record: its exact bytes and its fields.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayRecord {
    bytes: [u8; RELAY_RECORD_LEN],
    identity: [u8; 32],
    fields: RecordFields,
}

impl fmt::Debug for RelayRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayRecord")
            .field(
                "identity",
                &crate::crypto::keys::fingerprint(&self.identity),
            )
            .field("flags", &self.fields.flags)
            .field("nat", &self.fields.nat)
            .field("seq", &self.fields.seq)
            .field("endpoints", &self.fields.endpoints)
            .finish()
    }
}

/// The time checks every signed record shares (5.4, 5.5): `expires` (Unix seconds) within the
/// record lifetime of `now_ms` give or take the clock skew, and `seq` (Unix milliseconds) not
/// from the future.
pub(crate) fn check_record_time(expires: u64, seq: u64, now_ms: u64) -> Result<(), RecordError> {
    let now_s = now_ms / 1000;
    if expires <= now_s.saturating_sub(MAX_CLOCK_SKEW_S)
        || expires > now_s + RELAY_RECORD_LIFETIME_S + MAX_CLOCK_SKEW_S
    {
        return Err(RecordError::Expired);
    }
    if seq > now_ms + MAX_CLOCK_SKEW_S * 1000 {
        return Err(RecordError::FutureSeq);
    }
    Ok(())
}

impl RelayRecord {
    /// Signs a new record.
    pub fn sign(identity: &SigningKey, fields: RecordFields) -> Result<RelayRecord, RecordError> {
        if fields.endpoints.is_empty() || fields.endpoints.len() > RECORD_MAX_ENDPOINTS {
            return Err(RecordError::Field("1 to 4 endpoints"));
        }
        if fields.introducers.len() > RECORD_MAX_INTRODUCERS {
            return Err(RecordError::Field("at most 2 introducers"));
        }
        let mut b = [0u8; RELAY_RECORD_LEN];
        b[0] = RECORD_KIND_RELAY;
        b[1] = RELAY_RECORD_VERSION;
        b[2] = fields.flags;
        b[3] = fields.nat as u8;
        b[4..36].copy_from_slice(&identity.verifying_key().to_bytes());
        b[36..68].copy_from_slice(&fields.link_key);
        b[68..100].copy_from_slice(&fields.onion_key);
        b[100..108].copy_from_slice(&fields.seq.to_be_bytes());
        b[108..116].copy_from_slice(&fields.expires.to_be_bytes());
        b[116] = fields.endpoints.len() as u8;
        for (i, ep) in fields.endpoints.iter().enumerate() {
            let mut slot = [0u8; ENDPOINT_LEN];
            emit_endpoint(Some(*ep), &mut slot);
            let off = 117 + i * ENDPOINT_LEN;
            b.get_mut(off..off + ENDPOINT_LEN)
                .ok_or(RecordError::Field("endpoint slot"))?
                .copy_from_slice(&slot);
        }
        b[193] = fields.introducers.len() as u8;
        for (i, c) in fields.introducers.iter().enumerate() {
            let mut slot = [0u8; CONTACT_LEN];
            emit_contact(Some(c), &mut slot);
            let off = 194 + i * CONTACT_LEN;
            b.get_mut(off..off + CONTACT_LEN)
                .ok_or(RecordError::Field("contact slot"))?
                .copy_from_slice(&slot);
        }
        let sig = identity.sign(&signed_message(&b));
        b[SIGNED_LEN..].copy_from_slice(&sig.to_bytes());
        // Parse what we built, so a record we send always passes our own checks.
        RelayRecord::parse_unchecked_time(&b)
    }

    /// Parses and verifies a record at time `now_ms` (Unix milliseconds): every receiver check of
    /// section 5.4.
    pub fn parse(bytes: &[u8], now_ms: u64) -> Result<RelayRecord, RecordError> {
        let r = RelayRecord::parse_unchecked_time(bytes)?;
        check_record_time(r.fields.expires, r.fields.seq, now_ms)?;
        Ok(r)
    }

    fn parse_unchecked_time(bytes: &[u8]) -> Result<RelayRecord, RecordError> {
        let b: &[u8; RELAY_RECORD_LEN] = bytes
            .try_into()
            .map_err(|_| RecordError::Length(bytes.len()))?;
        if b[0] != RECORD_KIND_RELAY || b[1] != RELAY_RECORD_VERSION {
            return Err(RecordError::UnknownVersion {
                kind: b[0],
                version: b[1],
            });
        }
        let flags = b[2];
        if flags & !(FLAG_RELAY | FLAG_DHT | FLAG_RENDEZVOUS | FLAG_EXIT) != 0 {
            return Err(RecordError::Field("reserved flag bits set"));
        }
        let nat = NatClass::try_from(b[3]).map_err(|_| RecordError::Field("unknown NAT class"))?;
        let mut identity = [0u8; 32];
        let mut link_key = [0u8; 32];
        let mut onion_key = [0u8; 32];
        identity.copy_from_slice(&b[4..36]);
        link_key.copy_from_slice(&b[36..68]);
        onion_key.copy_from_slice(&b[68..100]);
        // Bytes that passed before skip the point decoding and the verification below (the
        // field checks are cheap and run anyway; see crypto::sigcache).
        let memo = Verified::key(LABEL_RELAY_RECORD_SIG, b);
        let verifying = if memo.seen() {
            None
        } else {
            Some(check_identity(&identity)?)
        };
        if link_key == [0u8; 32] || onion_key == [0u8; 32] {
            return Err(RecordError::Field("zero link or onion key"));
        }
        let mut u = [0u8; 8];
        u.copy_from_slice(&b[100..108]);
        let seq = u64::from_be_bytes(u);
        u.copy_from_slice(&b[108..116]);
        let expires = u64::from_be_bytes(u);

        let n_ep = usize::from(b[116]);
        if !(1..=RECORD_MAX_ENDPOINTS).contains(&n_ep) {
            return Err(RecordError::Field("endpoint count"));
        }
        let endpoints = slots::<ENDPOINT_LEN, _>(
            b,
            117,
            RECORD_MAX_ENDPOINTS,
            n_ep,
            parse_endpoint,
            "endpoint slot",
        )?;
        let n_intro = usize::from(b[193]);
        if n_intro > RECORD_MAX_INTRODUCERS {
            return Err(RecordError::Field("introducer count"));
        }
        let introducers = slots::<CONTACT_LEN, _>(
            b,
            194,
            RECORD_MAX_INTRODUCERS,
            n_intro,
            parse_contact,
            "contact slot",
        )?;
        if flags & FLAG_EXIT != 0 && flags & FLAG_RELAY == 0 {
            return Err(RecordError::Field("EXIT without RELAY"));
        }
        if flags & (FLAG_DHT | FLAG_RENDEZVOUS) != 0 {
            if flags & FLAG_RELAY == 0 {
                return Err(RecordError::Field("DHT/RENDEZVOUS without RELAY"));
            }
            // Behind NAT the relay is reached through a link its introducers help set up
            // (punched or relayed, 13.2-13.4), as any hop is; a class not known yet names none.
            if !nat.directly_reachable() && introducers.is_empty() {
                return Err(RecordError::Field(
                    "DHT/RENDEZVOUS on a relay nobody can reach",
                ));
            }
        }
        if matches!(nat, NatClass::Cone | NatClass::Symmetric) && introducers.is_empty() {
            return Err(RecordError::Field("NATed relay without introducers"));
        }
        if let Some(verifying) = verifying {
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&b[SIGNED_LEN..]);
            verifying
                .verify_strict(&signed_message(b), &Signature::from_bytes(&sig))
                .map_err(|_| RecordError::Signature)?;
            memo.remember();
        }
        Ok(RelayRecord {
            bytes: *b,
            identity,
            fields: RecordFields {
                flags,
                nat,
                link_key,
                onion_key,
                seq,
                expires,
                endpoints,
                introducers,
            },
        })
    }

    /// The exact bytes.
    pub fn bytes(&self) -> &[u8; RELAY_RECORD_LEN] {
        &self.bytes
    }

    /// The Ed25519 identity.
    pub fn identity(&self) -> &[u8; 32] {
        &self.identity
    }

    /// The parsed fields.
    pub fn fields(&self) -> &RecordFields {
        &self.fields
    }

    /// Whether the relay carries circuits for others.
    pub fn is_relay(&self) -> bool {
        self.fields.flags & FLAG_RELAY != 0
    }
}

fn signed_message(b: &[u8; RELAY_RECORD_LEN]) -> Vec<u8> {
    let mut m = Vec::with_capacity(LABEL_RELAY_RECORD_SIG.len() + SIGNED_LEN);
    m.extend_from_slice(LABEL_RELAY_RECORD_SIG);
    m.extend_from_slice(&b[..SIGNED_LEN]);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    const NOW_MS: u64 = 1_767_225_600_000 + 60_000;

    #[test]
    fn independent_vector_verifies_and_re_signs_identically() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/protocol.json")).unwrap();
        let v = &doc["relay_record"];
        let bytes = unhex(v["record"].as_str().unwrap());
        let r = RelayRecord::parse(&bytes, NOW_MS).unwrap();
        assert!(r.is_relay());
        assert_eq!(
            r.fields().endpoints,
            vec!["198.18.0.11:7412".parse().unwrap()]
        );
        // Ed25519 is deterministic: signing the same fields with the same seed gives the same bytes.
        let seed: [u8; 32] = unhex(v["identity_seed"].as_str().unwrap())
            .try_into()
            .unwrap();
        let key = SigningKey::from_bytes(&seed);
        let again = RelayRecord::sign(&key, r.fields().clone()).unwrap();
        assert_eq!(again.bytes()[..], bytes[..]);
    }

    /// The verified-signature cache (crypto::sigcache) remembers bytes that passed and never
    /// bytes that failed: a record whose signature was altered fails every time, before and
    /// after the genuine one was remembered, and so does a record whose signed part was altered
    /// under the genuine signature.
    #[test]
    fn verified_records_are_remembered_and_forgeries_never() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/protocol.json")).unwrap();
        let bytes = unhex(doc["relay_record"]["record"].as_str().unwrap());
        let mut bad_sig = bytes.clone();
        *bad_sig.last_mut().unwrap() ^= 1;
        let mut bad_msg = bytes.clone();
        bad_msg[100] ^= 1; // the sequence number, under the genuine signature
        for _ in 0..2 {
            assert_eq!(
                RelayRecord::parse(&bad_sig, NOW_MS).unwrap_err(),
                RecordError::Signature
            );
            RelayRecord::parse(&bytes, NOW_MS).unwrap();
            assert!(Verified::key(LABEL_RELAY_RECORD_SIG, &bytes).seen());
            assert!(!Verified::key(LABEL_RELAY_RECORD_SIG, &bad_sig).seen());
            assert!(RelayRecord::parse(&bad_msg, NOW_MS).is_err());
            assert!(!Verified::key(LABEL_RELAY_RECORD_SIG, &bad_msg).seen());
        }
    }

    /// Issue #20: a NATed relay that names an introducer carries the DHT and RENDEZVOUS flags;
    /// with class unknown and no introducer the same flags are refused.
    #[test]
    fn independent_natted_vector() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/protocol.json")).unwrap();
        let v = &doc["relay_record_natted"];
        let bytes = unhex(v["record"].as_str().unwrap());
        let r = RelayRecord::parse(&bytes, NOW_MS).unwrap();
        let f = r.fields();
        assert_eq!(f.nat, NatClass::Cone);
        assert_eq!(f.flags, FLAG_RELAY | FLAG_DHT | FLAG_RENDEZVOUS);
        assert_eq!(f.introducers.len(), 1);
        let seed: [u8; 32] = unhex(v["identity_seed"].as_str().unwrap())
            .try_into()
            .unwrap();
        let again = RelayRecord::sign(&SigningKey::from_bytes(&seed), f.clone()).unwrap();
        assert_eq!(again.bytes()[..], bytes[..]);
        let refused = unhex(v["refused_unknown_without_introducer"].as_str().unwrap());
        assert!(matches!(
            RelayRecord::parse(&refused, NOW_MS),
            Err(RecordError::Field(_))
        ));
    }

    fn sample(key: &SigningKey) -> RecordFields {
        RecordFields {
            flags: FLAG_RELAY | FLAG_DHT,
            nat: NatClass::Public,
            link_key: [7; 32],
            onion_key: [9; 32],
            seq: NOW_MS,
            expires: NOW_MS / 1000 + RELAY_RECORD_LIFETIME_S,
            endpoints: vec![
                "198.18.0.1:7412".parse().unwrap(),
                "[2001:db8::1]:7412".parse().unwrap(),
            ],
            introducers: vec![Contact {
                identity: key.verifying_key().to_bytes(),
                link_key: [3; 32],
                endpoint: "198.18.0.2:7412".parse().unwrap(),
            }],
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let r = RelayRecord::sign(&key, sample(&key)).unwrap();
        let parsed = RelayRecord::parse(r.bytes(), NOW_MS).unwrap();
        assert_eq!(parsed, r);
        assert_eq!(parsed.fields().endpoints.len(), 2);
        assert_eq!(parsed.fields().introducers.len(), 1);

        // Any flipped bit breaks it.
        for i in [0, 2, 5, 40, 100, 117, 200, 359, 360, 423] {
            let mut b = *r.bytes();
            b[i] ^= 0x01;
            assert!(
                RelayRecord::parse(&b, NOW_MS).is_err(),
                "bit flip at {i} accepted"
            );
        }
        // Expiry and clock skew.
        let late = NOW_MS + (RELAY_RECORD_LIFETIME_S + MAX_CLOCK_SKEW_S) * 1000;
        assert_eq!(
            RelayRecord::parse(r.bytes(), late).unwrap_err(),
            RecordError::Expired
        );
        let mut f = sample(&key);
        f.seq = NOW_MS + (MAX_CLOCK_SKEW_S + 10) * 1000;
        let future = RelayRecord::sign(&key, f).unwrap();
        assert_eq!(
            RelayRecord::parse(future.bytes(), NOW_MS).unwrap_err(),
            RecordError::FutureSeq
        );
        // Wrong length, unknown version.
        assert_eq!(
            RelayRecord::parse(&r.bytes()[..423], NOW_MS).unwrap_err(),
            RecordError::Length(423)
        );
    }

    #[test]
    fn semantic_rules() {
        let key = SigningKey::from_bytes(&[2; 32]);
        let mut f = sample(&key);
        f.nat = NatClass::Cone;
        // Behind NAT with an introducer: reachable through a link, so DHT and RENDEZVOUS too.
        f.flags = FLAG_RELAY | FLAG_DHT | FLAG_RENDEZVOUS;
        assert!(RelayRecord::sign(&key, f.clone()).is_ok());
        f.nat = NatClass::Symmetric;
        assert!(RelayRecord::sign(&key, f.clone()).is_ok());
        f.flags = FLAG_RELAY;
        assert!(RelayRecord::sign(&key, f.clone()).is_ok());
        f.introducers.clear();
        assert!(
            RelayRecord::sign(&key, f.clone()).is_err(),
            "NATed without introducers"
        );
        // A class not known yet names no introducer: no DHT or RENDEZVOUS flag.
        f.nat = NatClass::Unknown;
        assert!(RelayRecord::sign(&key, f.clone()).is_ok());
        f.flags = FLAG_RELAY | FLAG_RENDEZVOUS;
        assert!(
            RelayRecord::sign(&key, f.clone()).is_err(),
            "RENDEZVOUS flag on a relay nobody can reach"
        );
        let mut f = sample(&key);
        f.flags = FLAG_DHT;
        assert!(RelayRecord::sign(&key, f).is_err(), "DHT without RELAY");
        let mut f = sample(&key);
        f.endpoints = vec!["127.0.0.1:1".parse().unwrap()];
        assert!(RelayRecord::sign(&key, f).is_err(), "loopback endpoint");
        let mut f = sample(&key);
        f.endpoints.clear();
        assert!(RelayRecord::sign(&key, f).is_err());
    }

    #[test]
    fn endpoints() {
        for ep in ["198.18.0.1:7412", "[2001:db8::5]:1"] {
            let ep: SocketAddr = ep.parse().unwrap();
            let mut b = [0u8; ENDPOINT_LEN];
            emit_endpoint(Some(ep), &mut b);
            assert_eq!(parse_endpoint(&b).unwrap(), Some(ep));
        }
        let mut b = [0u8; ENDPOINT_LEN];
        assert_eq!(parse_endpoint(&b).unwrap(), None);
        b[18] = 1;
        assert!(parse_endpoint(&b).is_err());
        let mut b = [0u8; ENDPOINT_LEN];
        emit_endpoint(Some("198.18.0.1:7412".parse().unwrap()), &mut b);
        b[0] = 6;
        assert!(parse_endpoint(&b).is_err(), "mapped address with family 6");
    }

    #[test]
    fn non_canonical_identity_is_refused() {
        // y = p (2^255 - 19) encodes the same point as y = 0 but is not canonical.
        let mut y_is_p = [0xffu8; 32];
        y_is_p[0] = 0xed;
        y_is_p[31] = 0x7f;
        assert!(check_identity(&y_is_p).is_err());
        let good = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
        assert!(check_identity(&good).is_ok());
    }

    /// A relay identity with a torsion component would give one key up to eight DHT node ids.
    #[test]
    fn identity_with_torsion_is_refused() {
        let good = SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .to_edwards();
        for t in crate::crypto::keys::eight_torsion().iter().skip(1) {
            assert!(check_identity(&(good + t).compress().to_bytes()).is_err());
        }
    }

    #[test]
    fn link_spec_round_trip() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let r = RelayRecord::sign(&key, sample(&key)).unwrap();
        let spec = LinkSpec::of_record(&r);
        let bytes = spec.emit().unwrap();
        assert_eq!(LinkSpec::parse(&bytes).unwrap(), spec);
        let mut bad = bytes;
        bad[0] = 2;
        assert!(LinkSpec::parse(&bad).is_err());
        let mut bad = bytes;
        bad[2] = 0;
        assert!(LinkSpec::parse(&bad).is_err());
        assert!(LinkSpec::parse(&bytes[..100]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn link_spec_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 272..=272)) {
            let _ = LinkSpec::parse(&bytes);
        }

        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 424..=424)) {
            let _ = RelayRecord::parse(&bytes, NOW_MS);
        }

        #[test]
        fn parser_never_panics_on_near_valid(idx in 0usize..424, val in proptest::num::u8::ANY) {
            let key = SigningKey::from_bytes(&[4; 32]);
            let r = RelayRecord::sign(&key, sample(&key)).unwrap();
            let mut b = *r.bytes();
            b[idx] = val;
            let _ = RelayRecord::parse(&b, NOW_MS);
        }
    }
}
