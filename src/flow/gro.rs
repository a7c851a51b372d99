//! The inverse of [`super::gso`] for the offload TUN's writer: in one batch of packets for the
//! kernel, the TCP packets that continue an earlier packet of their flow (same headers but for
//! the sequence number, in order, full-sized but for the last) are appended to it, and the
//! result goes as one super-segment with a virtio-net header (`CHECKSUM_PARTIAL`), as the
//! kernel's own GRO (and wireguard-go's `tcpGRO`) would build it.
//!
//! The kernel trusts a `CHECKSUM_PARTIAL` packet's payload, so only packets whose TCP checksum
//! verifies are coalesced; any other packet goes alone with a plain header and the kernel checks
//! it. Pure, in place, no allocation: a head only grows within its buffer's capacity.

use super::checksum;
use super::gso::VNET_HDR_LEN;

const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Flows with an open head per batch.
const HEADS: usize = 8;

/// A packet that later ones of its flow may join.
#[derive(Clone, Copy)]
struct Head {
    /// Index of its buffer in the batch.
    at: usize,
    ip_len: usize,
    hdr_len: usize,
    /// Payload of every joined packet but the last.
    seg: usize,
    next_seq: u32,
    joined: usize,
    closed: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([
        b.get(at).copied().unwrap_or(0),
        b.get(at + 1).copied().unwrap_or(0),
    ])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([
        b.get(at).copied().unwrap_or(0),
        b.get(at + 1).copied().unwrap_or(0),
        b.get(at + 2).copied().unwrap_or(0),
        b.get(at + 3).copied().unwrap_or(0),
    ])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// `(ip_len, tcp header length)` of a TCP packet that may coalesce: IPv6 without extension
/// headers or IPv4 without options or fragmentation, lengths consistent, payload present, flags
/// ACK or ACK|PSH, checksum valid.
fn candidate(p: &[u8]) -> Option<(usize, usize)> {
    let ip_len = match p.first()? >> 4 {
        6 if p.get(6) == Some(&6) && usize::from(be16(p, 4)) + 40 == p.len() => 40,
        4 if p.first() == Some(&0x45)
            && p.get(9) == Some(&6)
            && be16(p, 6) & 0x3fff == 0
            && usize::from(be16(p, 2)) == p.len() =>
        {
            20
        }
        _ => return None,
    };
    let th = usize::from(p.get(ip_len + 12)? >> 4) * 4;
    let flags = *p.get(ip_len + 13)?;
    if th < 20 || p.len() <= ip_len + th || flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    let body = p.get(ip_len..)?;
    let sum = pseudo(p, ip_len, body.len());
    (checksum::fold(checksum::add(sum, body)) == 0xffff).then_some((ip_len, th))
}

/// The pseudo-header's sum for a TCP segment of `l4_len` bytes.
fn pseudo(p: &[u8], ip_len: usize, l4_len: usize) -> u64 {
    let addrs = if ip_len == 40 { 8..40 } else { 12..20 };
    checksum::add(0, p.get(addrs).unwrap_or(&[])) + 6 + l4_len as u64
}

/// Whether `p` (a candidate with these lengths) continues `h` in `head`'s buffer.
fn continues(head: &[u8], h: &Head, p: &[u8], ip_len: usize, th: usize) -> bool {
    let (ip, hdr) = (h.ip_len, h.hdr_len);
    if h.closed || ip_len != ip || ip + th != hdr || be32(p, ip + 4) != h.next_seq {
        return false;
    }
    let pay = p.len() - hdr;
    if pay > h.seg || head.len() - VNET_HDR_LEN + pay > usize::from(u16::MAX) {
        return false;
    }
    let Some(hh) = head.get(VNET_HDR_LEN..VNET_HDR_LEN + hdr) else {
        return false;
    };
    // Everything but lengths, IPv4 id and checksum, sequence number and PSH must match.
    let same = |r: std::ops::Range<usize>| hh.get(r.clone()).is_some_and(|a| p.get(r) == Some(a));
    let ip_same = if ip == 40 {
        same(0..4) && same(6..40)
    } else {
        same(0..2) && same(6..10) && same(12..20)
    };
    let flags_same = hh.get(ip + 13).map(|f| f | TCP_PSH) == p.get(ip + 13).map(|f| f | TCP_PSH);
    ip_same
        && same(ip..ip + 4)
        && same(ip + 8..ip + 13)
        && flags_same
        && same(ip + 14..ip + 16)
        && same(ip + 18..hdr)
}

/// Coalesces `batch` (each buffer: [`VNET_HDR_LEN`] bytes of room, then one packet) in place.
/// `write[i]` says whether buffer `i` still goes to the kernel (false: it joined an earlier one);
/// every buffer that goes has its virtio-net header set. `write` is as long as `batch`.
pub fn coalesce(batch: &mut [Vec<u8>], write: &mut [bool]) {
    let mut heads: [Option<Head>; HEADS] = [None; HEADS];
    let mut next_slot = 0;
    for j in 0..batch.len().min(write.len()) {
        if let Some(w) = write.get_mut(j) {
            *w = true;
        }
        let (before, rest) = batch.split_at_mut(j);
        let Some(buf) = rest.first_mut() else {
            break;
        };
        if let Some(hdr) = buf.get_mut(..VNET_HDR_LEN) {
            hdr.fill(0);
        }
        let Some(p) = buf.get(VNET_HDR_LEN..) else {
            continue;
        };
        let Some((ip_len, th)) = candidate(p) else {
            continue;
        };
        let mut joined = false;
        for h in heads.iter_mut().flatten() {
            let Some(head) = before.get_mut(h.at) else {
                continue;
            };
            if !continues(head, h, p, ip_len, th) {
                continue;
            }
            let payload = p.get(h.hdr_len..).unwrap_or(&[]);
            if head.len() + payload.len() > head.capacity() {
                continue;
            }
            head.extend_from_slice(payload);
            h.next_seq = h.next_seq.wrapping_add(payload.len() as u32);
            h.joined += 1;
            let psh = p.get(ip_len + 13).is_some_and(|f| f & TCP_PSH != 0);
            if psh {
                if let Some(f) = head.get_mut(VNET_HDR_LEN + ip_len + 13) {
                    *f |= TCP_PSH;
                }
            }
            h.closed = psh || payload.len() < h.seg;
            joined = true;
            break;
        }
        if joined {
            if let Some(w) = write.get_mut(j) {
                *w = false;
            }
            continue;
        }
        // A new head (a head of its flow that it did not continue stays open: a packet that
        // fills its gap later still joins it in order).
        let psh = p.get(ip_len + 13).is_some_and(|f| f & TCP_PSH != 0);
        if let Some(slot) = heads.get_mut(next_slot % HEADS) {
            if let Some(old) = slot.filter(|o| o.joined > 0) {
                if let Some(b) = before.get_mut(old.at) {
                    finish(b, &old);
                }
            }
            *slot = Some(Head {
                at: j,
                ip_len,
                hdr_len: ip_len + th,
                seg: p.len() - ip_len - th,
                next_seq: be32(p, ip_len + 4).wrapping_add((p.len() - ip_len - th) as u32),
                joined: 0,
                closed: psh,
            });
        }
        next_slot += 1;
    }
    for h in heads.iter().flatten().filter(|h| h.joined > 0) {
        if let Some(b) = batch.get_mut(h.at) {
            finish(b, h);
        }
    }
}

/// Writes a coalesced head's virtio-net header, lengths and partial checksum.
fn finish(buf: &mut [u8], h: &Head) {
    let Some((hdr, p)) = buf.split_at_mut_checked(VNET_HDR_LEN) else {
        return;
    };
    let total = p.len();
    let ip = h.ip_len;
    let v6 = ip == 40;
    hdr.copy_from_slice(&[0; VNET_HDR_LEN]);
    if let Some(b) = hdr.get_mut(..2) {
        b.copy_from_slice(&[F_NEEDS_CSUM, if v6 { GSO_TCPV6 } else { GSO_TCPV4 }]);
    }
    for (k, v) in [h.hdr_len, h.seg, ip, 16].into_iter().enumerate() {
        if let Some(b) = hdr.get_mut(2 + 2 * k..4 + 2 * k) {
            b.copy_from_slice(&(v as u16).to_ne_bytes());
        }
    }
    if v6 {
        put16(p, 4, (total - 40) as u16);
    } else {
        put16(p, 2, total as u16);
        put16(p, 10, 0);
        let c = !checksum::fold(checksum::add(0, p.get(..ip).unwrap_or(&[])));
        put16(p, 10, c);
    }
    let partial = checksum::fold(pseudo(p, ip, total - ip));
    put16(p, ip + 16, partial);
}

#[cfg(test)]
#[path = "gro_tests.rs"]
mod tests;
