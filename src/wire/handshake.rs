//! Circuit handshake bytes (docs/protocol.md sections 8.2 and 8.3): CREATE and CREATED handshakes
//! and the extension TLV areas they carry.
//!
//! [`CreateHandshake`] and [`CreatedHandshake`] are views over fixed-size arrays; `new_checked`
//! refuses any other length and any unknown `hs_version`, `hs_type` or `status`. The extension areas
//! are parsed by [`ClientExt::parse`] and [`ServerExt::parse`] (through [`ExtTlvs`]). The
//! cryptography (GN-NTOR) lives in `crate::circuit::handshake`; nothing here allocates or panics.

use core::borrow::{Borrow, BorrowMut};
use core::fmt;

/// Circuit handshake version. It names the per-hop layer the keys are for too: version 1 keyed
/// GN-WB's stream rounds with `L ⊕ K`, version 2 with a derived key (6.4), and the two cannot
/// carry each other's cells, so a version-1 handshake is refused (DESTROY 1) rather than leave
/// a circuit that garbles every cell.
pub const HS_VERSION: u8 = 2;
/// The only circuit handshake type: GN-NTOR.
pub const HS_TYPE_GN_NTOR: u8 = 1;
/// CREATE handshake bytes.
pub const CREATE_HS_LEN: usize = 180;
/// CREATED handshake bytes.
pub const CREATED_HS_LEN: usize = 148;
/// Client extension area (plaintext).
pub const HS_CLIENT_EXT_LEN: usize = 64;
/// Relay extension area (plaintext).
pub const HS_SERVER_EXT_LEN: usize = 64;
/// ChaCha20-Poly1305 tag on each extension area.
pub const HS_TAG_LEN: usize = 16;
/// Encrypted client extension area: ciphertext + tag.
pub const HS_CLIENT_ENC_EXT_LEN: usize = HS_CLIENT_EXT_LEN + HS_TAG_LEN;
/// Encrypted relay extension area: ciphertext + tag.
pub const HS_SERVER_ENC_EXT_LEN: usize = HS_SERVER_EXT_LEN + HS_TAG_LEN;
/// Bytes of CREATE covered as associated data by the client extension area (0..100).
pub const CREATE_AD_LEN: usize = 100;
/// Bytes of CREATED covered as associated data by the relay extension area (0..68).
pub const CREATED_AD_LEN: usize = 68;
/// `status` of a CREATED handshake (failures are DESTROY cells).
pub const CREATED_STATUS_OK: u8 = 0;

/// Extension TLV type: `BACKWARD_SEQ_START` (critical, client area, required).
pub const EXT_BACKWARD_SEQ_START: u8 = 0x81;
/// Extension TLV type: `FEATURES` (both areas).
pub const EXT_FEATURES: u8 = 0x02;
/// Bit 7 of a TLV type: a receiver that does not understand the type refuses the handshake.
pub const EXT_CRITICAL_BIT: u8 = 0x80;

/// Why handshake bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeWireError {
    /// Wrong number of bytes.
    #[error("handshake of {got} bytes (expected {expected})")]
    Length {
        /// Expected.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// `hs_version` is not [`HS_VERSION`].
    #[error("unknown handshake version {0}")]
    UnknownVersion(u8),
    /// `hs_type` is not [`HS_TYPE_GN_NTOR`].
    #[error("unknown handshake type {0}")]
    UnknownType(u8),
    /// CREATED `status` is not 0.
    #[error("CREATED with status {0}")]
    Status(u8),
    /// An extension area is malformed or unacceptable.
    #[error("extension area: {0}")]
    Ext(#[from] ExtError),
}

/// Why an extension area was refused (8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtError {
    /// A TLV runs past the end of the area.
    #[error("extension TLV runs past the area")]
    Overrun,
    /// A critical type this node does not understand.
    #[error("unknown critical extension 0x{0:02x}")]
    UnknownCritical(u8),
    /// A known type with the wrong length.
    #[error("extension 0x{ty:02x} with bad length {len}")]
    BadLength {
        /// The type.
        ty: u8,
        /// Its length.
        len: u8,
    },
    /// A known type twice.
    #[error("extension 0x{0:02x} appears twice")]
    Duplicate(u8),
    /// The client area has no `BACKWARD_SEQ_START`.
    #[error("no BACKWARD_SEQ_START extension")]
    MissingBackwardSeqStart,
    /// The values do not fit the area (encoding only).
    #[error("extensions do not fit the area")]
    TooLong,
}

fn array32(src: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(s) = src.get(..32) {
        out.copy_from_slice(s);
    }
    out
}

/// CREATE handshake bytes (8.2), 180 bytes:
/// `hs_version` ‖ `hs_type` ‖ reserved 2 ‖ `ID` 32 ‖ `B` 32 ‖ `X` 32 ‖ `enc_ext` 80.
#[derive(Clone, Copy)]
pub struct CreateHandshake<T> {
    buf: T,
}

impl<'a> CreateHandshake<&'a [u8; CREATE_HS_LEN]> {
    /// Check length, version and type.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, HandshakeWireError> {
        let buf =
            <&[u8; CREATE_HS_LEN]>::try_from(bytes).map_err(|_| HandshakeWireError::Length {
                expected: CREATE_HS_LEN,
                got: bytes.len(),
            })?;
        let hs = CreateHandshake { buf };
        hs.check()?;
        Ok(hs)
    }

    /// The handshake at the start of a CREATE cell body (the rest of the body is padding).
    pub fn from_cell_body(body: &'a [u8]) -> Result<Self, HandshakeWireError> {
        let prefix = body
            .get(..CREATE_HS_LEN)
            .ok_or(HandshakeWireError::Length {
                expected: CREATE_HS_LEN,
                got: body.len(),
            })?;
        Self::new_checked(prefix)
    }
}

impl<T: Borrow<[u8; CREATE_HS_LEN]>> CreateHandshake<T> {
    /// A view over a buffer that is a CREATE handshake by its type (not yet checked).
    pub fn new_unchecked(buf: T) -> Self {
        CreateHandshake { buf }
    }

    /// Check version and type.
    pub fn check(&self) -> Result<(), HandshakeWireError> {
        let b = self.buf.borrow();
        if b[0] != HS_VERSION {
            return Err(HandshakeWireError::UnknownVersion(b[0]));
        }
        if b[1] != HS_TYPE_GN_NTOR {
            return Err(HandshakeWireError::UnknownType(b[1]));
        }
        Ok(())
    }

    /// All 180 bytes (the transcript that is hashed into the keys).
    pub fn as_bytes(&self) -> &[u8; CREATE_HS_LEN] {
        self.buf.borrow()
    }

    /// Bytes 0..100, the associated data of `enc_ext`.
    pub fn associated_data(&self) -> &[u8] {
        &self.buf.borrow()[..CREATE_AD_LEN]
    }

    /// `ID`: the relay identity the client means.
    pub fn identity(&self) -> [u8; 32] {
        array32(&self.buf.borrow()[4..36])
    }

    /// `B`: the onion key the client used.
    pub fn onion_key(&self) -> [u8; 32] {
        array32(&self.buf.borrow()[36..68])
    }

    /// `X`: the client's ephemeral key.
    pub fn client_key(&self) -> [u8; 32] {
        array32(&self.buf.borrow()[68..100])
    }

    /// `enc_ext`: 64 bytes of ciphertext followed by the 16-byte tag.
    pub fn enc_ext(&self) -> &[u8] {
        &self.buf.borrow()[CREATE_AD_LEN..]
    }
}

impl<T: BorrowMut<[u8; CREATE_HS_LEN]>> CreateHandshake<T> {
    /// Write version, type, `ID`, `B` and `X`; `enc_ext` is left for the sealer.
    pub fn emit_head(&mut self, identity: &[u8; 32], onion_key: &[u8; 32], x: &[u8; 32]) {
        let b = self.buf.borrow_mut();
        b[..4].copy_from_slice(&[HS_VERSION, HS_TYPE_GN_NTOR, 0, 0]);
        b[4..36].copy_from_slice(identity);
        b[36..68].copy_from_slice(onion_key);
        b[68..100].copy_from_slice(x);
    }

    /// Split into the associated data (bytes 0..100) and `enc_ext` (100..180), for sealing.
    pub fn split_ad_mut(&mut self) -> (&[u8], &mut [u8]) {
        let (ad, ext) = self.buf.borrow_mut().split_at_mut(CREATE_AD_LEN);
        (ad, ext)
    }
}

impl<T: Borrow<[u8; CREATE_HS_LEN]>> fmt::Debug for CreateHandshake<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.buf.borrow();
        f.debug_struct("CreateHandshake")
            .field("hs_version", &b[0])
            .field("hs_type", &b[1])
            .field("identity", &Short(&b[4..8]))
            .field("onion_key", &Short(&b[36..40]))
            .finish_non_exhaustive()
    }
}

/// CREATED handshake bytes (8.2), 148 bytes:
/// `hs_version` ‖ `hs_type` ‖ `status` ‖ reserved ‖ `Y` 32 ‖ `AUTH` 32 ‖ `enc_ext` 80.
#[derive(Clone, Copy)]
pub struct CreatedHandshake<T> {
    buf: T,
}

impl<'a> CreatedHandshake<&'a [u8; CREATED_HS_LEN]> {
    /// Check length, version, type and status.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, HandshakeWireError> {
        let buf =
            <&[u8; CREATED_HS_LEN]>::try_from(bytes).map_err(|_| HandshakeWireError::Length {
                expected: CREATED_HS_LEN,
                got: bytes.len(),
            })?;
        let hs = CreatedHandshake { buf };
        hs.check()?;
        Ok(hs)
    }

    /// The handshake at the start of a CREATED cell body (the rest of the body is padding).
    pub fn from_cell_body(body: &'a [u8]) -> Result<Self, HandshakeWireError> {
        let prefix = body
            .get(..CREATED_HS_LEN)
            .ok_or(HandshakeWireError::Length {
                expected: CREATED_HS_LEN,
                got: body.len(),
            })?;
        Self::new_checked(prefix)
    }
}

impl<T: Borrow<[u8; CREATED_HS_LEN]>> CreatedHandshake<T> {
    /// A view over a buffer that is a CREATED handshake by its type (not yet checked).
    pub fn new_unchecked(buf: T) -> Self {
        CreatedHandshake { buf }
    }

    /// Check version, type and status.
    pub fn check(&self) -> Result<(), HandshakeWireError> {
        let b = self.buf.borrow();
        if b[0] != HS_VERSION {
            return Err(HandshakeWireError::UnknownVersion(b[0]));
        }
        if b[1] != HS_TYPE_GN_NTOR {
            return Err(HandshakeWireError::UnknownType(b[1]));
        }
        if b[2] != CREATED_STATUS_OK {
            return Err(HandshakeWireError::Status(b[2]));
        }
        Ok(())
    }

    /// All 148 bytes.
    pub fn as_bytes(&self) -> &[u8; CREATED_HS_LEN] {
        self.buf.borrow()
    }

    /// Bytes 0..68, the associated data of `enc_ext`.
    pub fn associated_data(&self) -> &[u8] {
        &self.buf.borrow()[..CREATED_AD_LEN]
    }

    /// `Y`: the relay's ephemeral key.
    pub fn relay_key(&self) -> [u8; 32] {
        array32(&self.buf.borrow()[4..36])
    }

    /// `AUTH`.
    pub fn auth(&self) -> [u8; 32] {
        array32(&self.buf.borrow()[36..68])
    }

    /// `enc_ext`: 64 bytes of ciphertext followed by the 16-byte tag.
    pub fn enc_ext(&self) -> &[u8] {
        &self.buf.borrow()[CREATED_AD_LEN..]
    }
}

impl<T: BorrowMut<[u8; CREATED_HS_LEN]>> CreatedHandshake<T> {
    /// Write version, type, status 0, `Y` and `AUTH`; `enc_ext` is left for the sealer.
    pub fn emit_head(&mut self, y: &[u8; 32], auth: &[u8; 32]) {
        let b = self.buf.borrow_mut();
        b[..4].copy_from_slice(&[HS_VERSION, HS_TYPE_GN_NTOR, CREATED_STATUS_OK, 0]);
        b[4..36].copy_from_slice(y);
        b[36..68].copy_from_slice(auth);
    }

    /// Split into the associated data (bytes 0..68) and `enc_ext` (68..148), for sealing.
    pub fn split_ad_mut(&mut self) -> (&[u8], &mut [u8]) {
        let (ad, ext) = self.buf.borrow_mut().split_at_mut(CREATED_AD_LEN);
        (ad, ext)
    }
}

impl<T: Borrow<[u8; CREATED_HS_LEN]>> fmt::Debug for CreatedHandshake<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.buf.borrow();
        f.debug_struct("CreatedHandshake")
            .field("hs_version", &b[0])
            .field("hs_type", &b[1])
            .field("status", &b[2])
            .finish_non_exhaustive()
    }
}

struct Short<'a>(&'a [u8]);

impl fmt::Debug for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// One extension TLV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtTlv<'a> {
    /// `type`.
    pub ty: u8,
    /// `value` (`len` bytes).
    pub value: &'a [u8],
}

impl ExtTlv<'_> {
    /// Whether a receiver that does not understand this type must refuse the handshake.
    pub fn is_critical(&self) -> bool {
        self.ty & EXT_CRITICAL_BIT != 0
    }
}

/// Iterator over the TLVs of an extension area: `type` u8 ‖ `len` u8 ‖ `value`, until type 0 or
/// the end of the area. Yields an error (and then stops) on a TLV that runs past the area.
#[derive(Clone, Debug)]
pub struct ExtTlvs<'a> {
    rest: &'a [u8],
}

impl<'a> ExtTlvs<'a> {
    /// TLVs of an extension area.
    pub fn new(area: &'a [u8]) -> Self {
        ExtTlvs { rest: area }
    }
}

impl<'a> Iterator for ExtTlvs<'a> {
    type Item = Result<ExtTlv<'a>, ExtError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&ty, after_ty) = self.rest.split_first()?;
        if ty == 0 {
            self.rest = &[];
            return None;
        }
        let parsed = after_ty
            .split_first()
            .and_then(|(&len, after_len)| after_len.split_at_checked(usize::from(len)));
        match parsed {
            Some((value, rest)) => {
                self.rest = rest;
                Some(Ok(ExtTlv { ty, value }))
            }
            None => {
                self.rest = &[];
                Some(Err(ExtError::Overrun))
            }
        }
    }
}

/// Appends TLVs to an extension area.
struct ExtWriter<'a> {
    area: &'a mut [u8],
    at: usize,
}

impl ExtWriter<'_> {
    fn push(&mut self, ty: u8, value: &[u8]) -> Result<(), ExtError> {
        let len = u8::try_from(value.len()).map_err(|_| ExtError::TooLong)?;
        let end = self.at + 2 + value.len();
        let dst = self.area.get_mut(self.at..end).ok_or(ExtError::TooLong)?;
        let (head, tail) = dst.split_at_mut(2);
        head.copy_from_slice(&[ty, len]);
        tail.copy_from_slice(value);
        self.at = end;
        Ok(())
    }
}

fn u64_value(ty: u8, value: &[u8]) -> Result<u64, ExtError> {
    let b = <[u8; 8]>::try_from(value).map_err(|_| ExtError::BadLength {
        ty,
        len: value.len() as u8,
    })?;
    Ok(u64::from_be_bytes(b))
}

fn u16_value(ty: u8, value: &[u8]) -> Result<u16, ExtError> {
    let b = <[u8; 2]>::try_from(value).map_err(|_| ExtError::BadLength {
        ty,
        len: value.len() as u8,
    })?;
    Ok(u16::from_be_bytes(b))
}

/// Store a known TLV's value; a second occurrence is refused.
fn set_once<V>(slot: &mut Option<V>, ty: u8, value: V) -> Result<(), ExtError> {
    match slot.replace(value) {
        Some(_) => Err(ExtError::Duplicate(ty)),
        None => Ok(()),
    }
}

/// The client extension area of CREATE (8.3), parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientExt {
    /// `BACKWARD_SEQ_START` = `W_j`: the seq the hop's first originated backward cell leaves with.
    pub backward_seq_start: u64,
    /// `FEATURES` (all bits reserved in v1).
    pub features: u16,
}

impl ClientExt {
    /// Parse a 64-byte client area. Refuses a missing `BACKWARD_SEQ_START`, overruns, unknown
    /// critical types, and known types that are repeated or have the wrong length.
    pub fn parse(area: &[u8; HS_CLIENT_EXT_LEN]) -> Result<Self, ExtError> {
        let mut w = None;
        let mut features = None;
        for tlv in ExtTlvs::new(area) {
            let tlv = tlv?;
            match tlv.ty {
                EXT_BACKWARD_SEQ_START => set_once(&mut w, tlv.ty, u64_value(tlv.ty, tlv.value)?)?,
                EXT_FEATURES => set_once(&mut features, tlv.ty, u16_value(tlv.ty, tlv.value)?)?,
                ty if tlv.is_critical() => return Err(ExtError::UnknownCritical(ty)),
                _ => {}
            }
        }
        Ok(ClientExt {
            backward_seq_start: w.ok_or(ExtError::MissingBackwardSeqStart)?,
            features: features.unwrap_or(0),
        })
    }

    /// Encode: `BACKWARD_SEQ_START`, then `FEATURES`, then zeros.
    pub fn emit(&self) -> [u8; HS_CLIENT_EXT_LEN] {
        let mut area = [0u8; HS_CLIENT_EXT_LEN];
        let mut w = ExtWriter {
            area: &mut area,
            at: 0,
        };
        // Both fit by construction (10 + 4 ≤ 64), so the results cannot be errors.
        let _ = w.push(
            EXT_BACKWARD_SEQ_START,
            &self.backward_seq_start.to_be_bytes(),
        );
        let _ = w.push(EXT_FEATURES, &self.features.to_be_bytes());
        area
    }
}

/// The relay extension area of CREATED (8.3), parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerExt {
    /// `FEATURES` (all bits reserved in v1).
    pub features: u16,
}

impl ServerExt {
    /// Parse a 64-byte relay area.
    pub fn parse(area: &[u8; HS_SERVER_EXT_LEN]) -> Result<Self, ExtError> {
        let mut features = None;
        for tlv in ExtTlvs::new(area) {
            let tlv = tlv?;
            match tlv.ty {
                EXT_FEATURES => set_once(&mut features, tlv.ty, u16_value(tlv.ty, tlv.value)?)?,
                // BACKWARD_SEQ_START belongs to the client area: in a relay area it is not
                // understood, and it is critical.
                ty if tlv.is_critical() => return Err(ExtError::UnknownCritical(ty)),
                _ => {}
            }
        }
        Ok(ServerExt {
            features: features.unwrap_or(0),
        })
    }

    /// Encode: `FEATURES`, then zeros.
    pub fn emit(&self) -> [u8; HS_SERVER_EXT_LEN] {
        let mut area = [0u8; HS_SERVER_EXT_LEN];
        let mut w = ExtWriter {
            area: &mut area,
            at: 0,
        };
        let _ = w.push(EXT_FEATURES, &self.features.to_be_bytes());
        area
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_error_is_the_source_and_keeps_its_message() {
        use std::error::Error;
        let e = HandshakeWireError::from(ExtError::Duplicate(0x81));
        assert_eq!(
            e.to_string(),
            "extension area: extension 0x81 appears twice"
        );
        let source = e.source().map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("extension 0x81 appears twice"));
    }

    #[test]
    fn client_ext_round_trip_and_layout() {
        let e = ClientExt {
            backward_seq_start: 0x0102_0304_0506_0708,
            features: 0,
        };
        let area = e.emit();
        assert_eq!(&area[..14], &[0x81, 8, 1, 2, 3, 4, 5, 6, 7, 8, 2, 2, 0, 0]);
        assert!(area[14..].iter().all(|&b| b == 0));
        assert_eq!(ClientExt::parse(&area), Ok(e));
    }

    #[test]
    fn client_ext_refusals() {
        let mut a = [0u8; 64];
        assert_eq!(ClientExt::parse(&a), Err(ExtError::MissingBackwardSeqStart));
        // unknown non-critical: ignored; unknown critical: refused
        a[..14].copy_from_slice(&[0x05, 2, 9, 9, 0x81, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(ClientExt::parse(&a).unwrap().backward_seq_start, 7);
        a[0] = 0x85;
        assert_eq!(ClientExt::parse(&a), Err(ExtError::UnknownCritical(0x85)));
        // duplicate, bad length
        let mut a = [0u8; 64];
        a[..20].copy_from_slice(&[
            0x81, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0x81, 8, 0, 0, 0, 0, 0, 0, 0, 2,
        ]);
        assert_eq!(ClientExt::parse(&a), Err(ExtError::Duplicate(0x81)));
        let mut a = [0u8; 64];
        a[..6].copy_from_slice(&[0x81, 4, 0, 0, 0, 1]);
        assert_eq!(
            ClientExt::parse(&a),
            Err(ExtError::BadLength { ty: 0x81, len: 4 })
        );
        // overrun: a TLV at the very end, and a length past the end
        let mut a = [0u8; 64];
        a[..10].copy_from_slice(&[0x81, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        a[10] = 0x05;
        a[11] = 51; // value 12..63
        assert!(ClientExt::parse(&a).is_ok());
        a[63] = 0x02; // a type byte with no room for its length
        assert_eq!(ClientExt::parse(&a), Err(ExtError::Overrun));
        a[11] = 53; // value runs past byte 64
        assert_eq!(ClientExt::parse(&a), Err(ExtError::Overrun));
        // after type 0, the rest is padding
        let mut a = [0u8; 64];
        a[..10].copy_from_slice(&[0x81, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        a[11] = 0xff;
        assert!(ClientExt::parse(&a).is_ok());
    }

    #[test]
    fn server_ext() {
        let area = ServerExt::default().emit();
        assert_eq!(&area[..4], &[2, 2, 0, 0]);
        assert_eq!(ServerExt::parse(&area), Ok(ServerExt::default()));
        let mut a = [0u8; 64];
        a[..10].copy_from_slice(&[0x81, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(ServerExt::parse(&a), Err(ExtError::UnknownCritical(0x81)));
    }

    #[test]
    fn views_refuse() {
        assert!(matches!(
            CreateHandshake::new_checked(&[1u8; 179]),
            Err(HandshakeWireError::Length { .. })
        ));
        let mut c = [0u8; CREATE_HS_LEN];
        c[0] = 1;
        assert_eq!(
            CreateHandshake::new_checked(&c).unwrap_err(),
            HandshakeWireError::UnknownVersion(1),
            "version 1 keyed the old GN-WB"
        );
        c[0] = HS_VERSION;
        c[1] = 2;
        assert_eq!(
            CreateHandshake::new_checked(&c).unwrap_err(),
            HandshakeWireError::UnknownType(2)
        );
        let mut d = [0u8; CREATED_HS_LEN];
        d[0] = HS_VERSION;
        d[1] = 1;
        d[2] = 3;
        assert_eq!(
            CreatedHandshake::new_checked(&d).unwrap_err(),
            HandshakeWireError::Status(3)
        );
        d[2] = 0;
        assert!(CreatedHandshake::new_checked(&d).is_ok());
        assert!(CreatedHandshake::from_cell_body(&[0u8; 10]).is_err());
    }
}
