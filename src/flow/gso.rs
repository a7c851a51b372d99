//! Reads from a TUN opened with `IFF_VNET_HDR` and TSO/USO offloads: a virtio-net header, then
//! either one packet (its transport checksum possibly left partial) or a TCP/UDP super-segment
//! of up to 64 KiB that we cut into packets of at most the TUN's MTU ourselves, the way the
//! kernel's GSO (and wireguard-go's `gsoSplit`) would have. One read then costs one syscall and
//! one wake-up for dozens of inner packets.
//!
//! Pure and sans-IO: [`parse`] checks the read (the kernel wrote it, but any local program's
//! packet is in it) and completes a partial checksum in place, [`Read::write_segment`] writes the
//! n-th packet into a buffer the caller recycles, so nothing allocates while the buffers are at
//! least `max_len` long. Nothing here panics on any bytes (fuzz target `tun_gso`).

use super::checksum;

/// `struct virtio_net_hdr` (the TUN's default `vnet_hdr_sz`), in host byte order.
pub const VNET_HDR_LEN: usize = 10;
/// `flags`: the transport checksum holds only the pseudo-header sum (`CHECKSUM_PARTIAL`).
const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the first segment carries CWR.
const GSO_ECN: u8 = 0x80;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a read is not cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoError {
    /// Shorter than the virtio-net header plus what it announces.
    Short,
    /// A `gso_type` we did not ask the kernel for.
    Kind,
    /// The IP header disagrees with the virtio-net header (version, length, protocol).
    Ip,
    /// The TCP data offset is not 20–60 bytes.
    Transport,
    /// The checksum to complete lies outside the packet.
    Checksum,
    /// A packet (or segment) would be longer than the caller's buffers.
    TooLong,
    /// A super-segment without payload.
    Empty,
}

/// A checked read: one packet, or how to cut a super-segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Bytes after the virtio-net header.
    len: usize,
    /// The IP header's length (the transport header's offset).
    ip_len: usize,
    /// IP and transport headers, repeated in every segment.
    hdr_len: usize,
    /// Payload bytes per segment; 0 for a single packet.
    seg: usize,
    v6: bool,
    tcp: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn ne16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([
        b.get(at).copied().unwrap_or(0),
        b.get(at + 1).copied().unwrap_or(0),
    ])
}

/// Checks one read (`read` as returned by the TUN, virtio-net header first) whose packets go
/// into buffers of `max_len` bytes. A single packet with a partial checksum has it completed in
/// place, so that [`Read::write_segment`] only copies.
pub fn parse(read: &mut [u8], max_len: usize) -> Result<Read, GsoError> {
    let (hdr, pkt) = read
        .split_at_mut_checked(VNET_HDR_LEN)
        .ok_or(GsoError::Short)?;
    let (flags, gso_type) = (hdr.first().copied(), hdr.get(1).copied());
    let (flags, gso_type) = (flags.unwrap_or(0), gso_type.unwrap_or(0));
    let gso_size = usize::from(ne16(hdr, 4));
    let csum_start = usize::from(ne16(hdr, 6));
    let csum_offset = usize::from(ne16(hdr, 8));
    let len = pkt.len();
    let v6 = match pkt.first().map(|b| b >> 4) {
        Some(4) => false,
        Some(6) => true,
        _ if gso_type == GSO_NONE && flags & F_NEEDS_CSUM == 0 => false,
        _ => return Err(GsoError::Ip),
    };
    if gso_type == GSO_NONE {
        if len > max_len {
            return Err(GsoError::TooLong);
        }
        if flags & F_NEEDS_CSUM != 0 {
            complete_checksum(pkt, csum_start, csum_offset)?;
        }
        return Ok(Read {
            len,
            ip_len: 0,
            hdr_len: len,
            seg: 0,
            v6,
            tcp: false,
        });
    }
    let tcp = match (gso_type & !GSO_ECN, v6) {
        (GSO_TCPV4, false) | (GSO_TCPV6, true) => true,
        (GSO_UDP_L4, _) => false,
        _ => return Err(GsoError::Kind),
    };
    if gso_size == 0 {
        return Err(GsoError::Kind);
    }
    // The IP header's length from the packet itself; the kernel's csum_start must agree (IPv6
    // extension headers are not cut: our kernel's TCP and UDP send none).
    let (ip_len, proto) = if v6 {
        (40, pkt.get(6).copied())
    } else {
        let ihl = usize::from(pkt.first().copied().unwrap_or(0) & 0x0f) * 4;
        (ihl, pkt.get(9).copied())
    };
    let want = if tcp { PROTO_TCP } else { PROTO_UDP };
    if ip_len < 20 || csum_start != ip_len || proto != Some(want) {
        return Err(GsoError::Ip);
    }
    // hdr_len from the kernel is not trusted (it can span the whole first packet on the forward
    // path); the transport header's own length is.
    let th_len = if tcp {
        let off = pkt.get(ip_len + 12).ok_or(GsoError::Short)?;
        let th = usize::from(off >> 4) * 4;
        if !(20..=60).contains(&th) {
            return Err(GsoError::Transport);
        }
        th
    } else {
        8
    };
    let hdr_len = ip_len + th_len;
    let payload = len.checked_sub(hdr_len).ok_or(GsoError::Short)?;
    if payload == 0 {
        return Err(GsoError::Empty);
    }
    if hdr_len + gso_size.min(payload) > max_len {
        return Err(GsoError::TooLong);
    }
    Ok(Read {
        len,
        ip_len,
        hdr_len,
        seg: gso_size,
        v6,
        tcp,
    })
}

/// `CHECKSUM_PARTIAL`: the field at `start + offset` holds the pseudo-header sum; the checksum
/// is the complement of the sum from `start` to the end (field included).
fn complete_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), GsoError> {
    let at = start.checked_add(offset).ok_or(GsoError::Checksum)?;
    let initial = be16(pkt, at).ok_or(GsoError::Checksum)?;
    put16(pkt, at, 0);
    let body = pkt.get(start..).ok_or(GsoError::Checksum)?;
    let c = !checksum::fold(checksum::add(u64::from(initial), body));
    put16(pkt, at, c);
    Ok(())
}

impl Read {
    /// How many packets the read holds.
    pub fn count(&self) -> usize {
        if self.seg == 0 {
            return 1;
        }
        (self.len - self.hdr_len).div_ceil(self.seg)
    }

    /// Whether the read was a super-segment (cut by us) rather than one packet.
    pub fn is_segmented(&self) -> bool {
        self.seg != 0
    }

    /// Writes packet `i` (of [`Read::count`]) of `read` (the same bytes [`parse`] checked) into
    /// `out`, with its lengths, IPv4 identification, TCP sequence number and flags, and
    /// checksums as the kernel's segmentation would have set them.
    pub fn write_segment(&self, read: &[u8], i: usize, out: &mut Vec<u8>) -> Result<(), GsoError> {
        let pkt = read
            .get(VNET_HDR_LEN..VNET_HDR_LEN + self.len)
            .ok_or(GsoError::Short)?;
        out.clear();
        if self.seg == 0 {
            out.extend_from_slice(pkt);
            return Ok(());
        }
        let start = i
            .checked_mul(self.seg)
            .and_then(|o| o.checked_add(self.hdr_len))
            .ok_or(GsoError::Short)?;
        let end = start.saturating_add(self.seg).min(self.len);
        let (Some(headers), Some(payload)) = (pkt.get(..self.hdr_len), pkt.get(start..end)) else {
            return Err(GsoError::Short);
        };
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        let total = out.len();
        let l4_len = total - self.ip_len;
        let ip = self.ip_len;
        if self.v6 {
            put16(out, 4, l4_len as u16);
        } else {
            put16(out, 2, total as u16);
            let id = be16(out, 4).unwrap_or(0).wrapping_add(i as u16);
            put16(out, 4, id);
            put16(out, 10, 0);
            let c = !checksum::fold(checksum::add(0, out.get(..ip).unwrap_or(&[])));
            put16(out, 10, c);
        }
        let csum_at = if self.tcp {
            let seq = out
                .get(ip + 4..ip + 8)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
                .map(u32::from_be_bytes)
                .unwrap_or(0)
                .wrapping_add((self.seg * i) as u32);
            if let Some(s) = out.get_mut(ip + 4..ip + 8) {
                s.copy_from_slice(&seq.to_be_bytes());
            }
            if let Some(f) = out.get_mut(ip + 13) {
                if end != self.len {
                    *f &= !(TCP_FIN | TCP_PSH);
                }
                if i != 0 {
                    *f &= !TCP_CWR;
                }
            }
            ip + 16
        } else {
            put16(out, ip + 4, l4_len as u16);
            ip + 6
        };
        put16(out, csum_at, 0);
        let pseudo = if self.v6 {
            checksum::add(0, out.get(8..40).unwrap_or(&[]))
        } else {
            checksum::add(0, out.get(12..20).unwrap_or(&[]))
        };
        let proto = if self.tcp { PROTO_TCP } else { PROTO_UDP };
        let sum = pseudo + u64::from(proto) + l4_len as u64;
        let mut c = !checksum::fold(checksum::add(sum, out.get(ip..).unwrap_or(&[])));
        if !self.tcp && c == 0 {
            // UDP sends "no checksum" as 0; a computed 0 goes as its other form.
            c = 0xffff;
        }
        put16(out, csum_at, c);
        Ok(())
    }
}

#[cfg(test)]
#[path = "gso_tests.rs"]
mod tests;
