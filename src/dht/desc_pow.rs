//! The proof-of-work parameters a service puts in its descriptor body (docs/protocol.md 11.4,
//! 10.12): TLV type 0x01 in the body's TLV area, `seed` (16) ‖ `effort` u32. Non-critical, so a
//! client that does not know it ignores it, and a descriptor without it (older services) reads as
//! "no puzzle".

/// TLV type of the proof-of-work parameters.
pub const TLV_POW_PARAMS: u8 = 0x01;
/// Value length of the TLV.
pub const POW_PARAMS_LEN: usize = 20;

/// A service's puzzle: the seed clients bind their work to, and the effort it suggests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PowParams {
    /// Random; rotates, so work cannot be done before the descriptor is out.
    pub seed: [u8; 16],
    /// Suggested effort (expected hashes); 0: the service is not loaded.
    pub effort: u32,
}

impl std::fmt::Debug for PowParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowParams")
            .field("effort", &self.effort)
            .finish_non_exhaustive()
    }
}

impl PowParams {
    /// Writes the TLV at the start of `area` (the body's TLV area, 32 bytes); `false` if it does
    /// not fit.
    pub fn emit_tlv(&self, area: &mut [u8]) -> bool {
        let mut tlv = [0u8; 2 + POW_PARAMS_LEN];
        tlv[0] = TLV_POW_PARAMS;
        tlv[1] = POW_PARAMS_LEN as u8;
        tlv[2..18].copy_from_slice(&self.seed);
        tlv[18..].copy_from_slice(&self.effort.to_be_bytes());
        match area.get_mut(..tlv.len()) {
            Some(out) => {
                out.copy_from_slice(&tlv);
                true
            }
            None => false,
        }
    }

    /// Finds the parameters in a TLV area (8.3 format, type 0 ends it). `Err` for a critical
    /// type this version does not know or a TLV that runs past the area; `Ok(None)` if there is
    /// no well-formed type 0x01 (one of another length is ignored, as an unknown type would be).
    pub fn from_tlvs(area: &[u8]) -> Result<Option<PowParams>, &'static str> {
        let mut found = None;
        let mut rest = area;
        while let Some((&t, after)) = rest.split_first() {
            if t == 0 {
                break;
            }
            let (&len, value) = after.split_first().ok_or("TLV runs past the area")?;
            let v = value
                .get(..usize::from(len))
                .ok_or("TLV runs past the area")?;
            if t & 0x80 != 0 {
                return Err("unknown critical TLV");
            }
            if t == TLV_POW_PARAMS && found.is_none() {
                if let (Some(seed), Some(e)) = (v.get(..16), v.get(16..20)) {
                    if v.len() == POW_PARAMS_LEN {
                        let mut s = [0u8; 16];
                        s.copy_from_slice(seed);
                        let mut eb = [0u8; 4];
                        eb.copy_from_slice(e);
                        found = Some(PowParams {
                            seed: s,
                            effort: u32::from_be_bytes(eb),
                        });
                    }
                }
            }
            rest = value.get(usize::from(len)..).unwrap_or(&[]);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_round_trip_and_old_areas() {
        let p = PowParams {
            seed: [5; 16],
            effort: 123_456,
        };
        let mut area = [0u8; 32];
        assert!(p.emit_tlv(&mut area));
        assert_eq!(PowParams::from_tlvs(&area), Ok(Some(p)));
        // An area of zeros (every descriptor before this field): no puzzle.
        assert_eq!(PowParams::from_tlvs(&[0u8; 32]), Ok(None));
        // Unknown non-critical types before it are skipped; a wrong length is ignored.
        let mut b = [0u8; 32];
        b[..3].copy_from_slice(&[0x05, 1, 9]);
        assert!(p.emit_tlv(&mut b[3..]));
        assert_eq!(PowParams::from_tlvs(&b), Ok(Some(p)));
        b[4] = 19;
        assert_eq!(PowParams::from_tlvs(&b), Ok(None));
        // Critical unknown types and overruns are refused.
        assert!(PowParams::from_tlvs(&[0x85, 0]).is_err());
        assert!(PowParams::from_tlvs(&[0x01, 30, 0]).is_err());
        assert!(!p.emit_tlv(&mut [0u8; 21]));
    }
}
