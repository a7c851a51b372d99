//! Minimal NFQUEUE (nfnetlink_queue) client on a raw netlink socket.
//!
//! Only what a delayer needs: bind a queue with one atomic config message
//! (bind + copy-meta + max length + flags), receive packet notifications,
//! and send (batched) verdicts. Everything that comes from the kernel is
//! parsed from byte slices with bounds checks; malformed data is reported as
//! an event, never a panic.
//!
//! Why not the `nfq` crate: it exposes no file descriptor (so no `poll` with
//! a timeout for a release-time queue, and no `SO_RCVBUF`), its config calls
//! each wait for an ACK while silently discarding packet messages that arrive
//! meanwhile (those packets would then never get a verdict), and it uses
//! `assert!` on netlink attribute lengths.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `NF_ACCEPT` verdict.
pub const NF_ACCEPT: u32 = 1;

pub const NFQNL_CFG_CMD_BIND: u8 = 1;
pub const NFQNL_CFG_CMD_UNBIND: u8 = 2;
pub const NFQNL_COPY_META: u8 = 1;
pub const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
pub const NFQA_CFG_F_GSO: u32 = 4;

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

/// Size in bytes of one verdict message built by [`append_verdict`].
pub const VERDICT_MSG_LEN: usize = NLMSG_HDRLEN + NFGEN_HDRLEN + NLA_HDRLEN + 8;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// What one netlink message from the kernel meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A packet was queued; it needs a verdict with this id.
    Packet { queue: u16, id: u32 },
    /// An ACK (errno 0) or an error reply to a request we sent with `seq`.
    Reply { seq: u32, errno: i32 },
    /// Something we could not make sense of (kept for logging).
    Malformed(&'static str),
}

fn rd_u16_ne(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}

fn rd_u32_ne(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn rd_u32_be(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parse one datagram read from the netlink socket into `out`.
/// Never panics; bad framing yields `Event::Malformed` and stops parsing.
pub fn parse(data: &[u8], out: &mut Vec<Event>) {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < NLMSG_HDRLEN {
            out.push(Event::Malformed("truncated netlink header"));
            return;
        }
        let (len, typ, seq) = match (rd_u32_ne(rest, 0), rd_u16_ne(rest, 4), rd_u32_ne(rest, 8)) {
            (Some(l), Some(t), Some(s)) => (l as usize, t, s),
            _ => {
                out.push(Event::Malformed("truncated netlink header"));
                return;
            }
        };
        if len < NLMSG_HDRLEN || len > rest.len() {
            out.push(Event::Malformed("bad netlink message length"));
            return;
        }
        let body = &rest[NLMSG_HDRLEN..len];
        if typ == NLMSG_ERROR {
            match rd_u32_ne(body, 0) {
                // nlmsgerr.error is a negative errno (0 = ACK).
                Some(e) => out.push(Event::Reply {
                    seq,
                    errno: (e as i32).checked_neg().unwrap_or(i32::MAX),
                }),
                None => out.push(Event::Malformed("truncated netlink error")),
            }
        } else if typ >> 8 == NFNL_SUBSYS_QUEUE && typ & 0xff == NFQNL_MSG_PACKET {
            out.push(parse_packet(body));
        }
        // NLMSG_NOOP / NLMSG_DONE / NLMSG_OVERRUN and other types: ignore.
        let step = align4(len).min(rest.len());
        rest = &rest[step..];
    }
}

fn parse_packet(body: &[u8]) -> Event {
    if body.len() < NFGEN_HDRLEN {
        return Event::Malformed("truncated nfgenmsg");
    }
    // nfgenmsg: family u8, version u8, res_id be16 (queue number).
    let queue = u16::from_be_bytes([body[2], body[3]]);
    let mut attrs = &body[NFGEN_HDRLEN..];
    while attrs.len() >= NLA_HDRLEN {
        let (nla_len, nla_type) = match (rd_u16_ne(attrs, 0), rd_u16_ne(attrs, 2)) {
            (Some(l), Some(t)) => (l as usize, t & NLA_TYPE_MASK),
            _ => break,
        };
        if nla_len < NLA_HDRLEN || nla_len > attrs.len() {
            return Event::Malformed("bad netlink attribute length");
        }
        if nla_type == NFQA_PACKET_HDR {
            // nfqnl_msg_packet_hdr: packet_id be32, hw_protocol be16, hook u8.
            return match rd_u32_be(&attrs[NLA_HDRLEN..nla_len], 0) {
                Some(id) => Event::Packet { queue, id },
                None => Event::Malformed("truncated packet header attribute"),
            };
        }
        let step = align4(nla_len).min(attrs.len());
        attrs = &attrs[step..];
    }
    Event::Malformed("packet message without packet header")
}

/// Start an nfnetlink_queue message; returns its start offset for [`finish_msg`].
fn begin_msg(buf: &mut Vec<u8>, msg_type: u16, flags: u16, seq: u32, queue: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched in finish_msg
    buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg_type).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: kernel fills in
                                                // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id = queue (big endian)
    buf.push(0);
    buf.push(0);
    buf.extend_from_slice(&queue.to_be_bytes());
    start
}

fn put_attr(buf: &mut Vec<u8>, typ: u16, payload: &[u8]) {
    let len = (NLA_HDRLEN + payload.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn finish_msg(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Settings for one config request; every field is optional and the kernel
/// applies all present ones in a single atomic step.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConfigReq {
    pub cmd: Option<u8>,
    /// (copy_mode, copy_range)
    pub params: Option<(u8, u32)>,
    pub queue_maxlen: Option<u32>,
    /// (flags, mask)
    pub flags: Option<(u32, u32)>,
}

/// Build a config request (with NLM_F_ACK) for `queue`.
pub fn build_config(queue: u16, seq: u32, req: &ConfigReq) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let start = begin_msg(
        &mut buf,
        NFQNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        queue,
    );
    if let Some(cmd) = req.cmd {
        // nfqnl_msg_config_cmd: command u8, _pad u8, pf be16 (unused since 3.8)
        put_attr(&mut buf, NFQA_CFG_CMD, &[cmd, 0, 0, 0]);
    }
    if let Some((mode, range)) = req.params {
        // nfqnl_msg_config_params (packed): copy_range be32, copy_mode u8
        let mut p = [0u8; 5];
        p[..4].copy_from_slice(&range.to_be_bytes());
        p[4] = mode;
        put_attr(&mut buf, NFQA_CFG_PARAMS, &p);
    }
    if let Some(maxlen) = req.queue_maxlen {
        put_attr(&mut buf, NFQA_CFG_QUEUE_MAXLEN, &maxlen.to_be_bytes());
    }
    if let Some((flags, mask)) = req.flags {
        put_attr(&mut buf, NFQA_CFG_FLAGS, &flags.to_be_bytes());
        put_attr(&mut buf, NFQA_CFG_MASK, &mask.to_be_bytes());
    }
    finish_msg(&mut buf, start);
    buf
}

/// Append a verdict message for packet `id` to `buf` (several may be sent in one datagram).
pub fn append_verdict(buf: &mut Vec<u8>, queue: u16, seq: u32, id: u32, verdict: u32) {
    let start = begin_msg(buf, NFQNL_MSG_VERDICT, NLM_F_REQUEST, seq, queue);
    // nfqnl_msg_verdict_hdr: verdict be32, id be32
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&verdict.to_be_bytes());
    v[4..].copy_from_slice(&id.to_be_bytes());
    put_attr(buf, NFQA_VERDICT_HDR, &v);
    finish_msg(buf, start);
}

/// A NETLINK_NETFILTER socket.
pub struct Socket {
    fd: OwnedFd,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain syscall; the returned fd is owned by OwnedFd below.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        })?;
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        Ok(Socket { fd })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn setsockopt_int(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        val: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: val lives across the call; size matches.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &val as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    /// Set the receive buffer (SO_RCVBUFFORCE, falling back to SO_RCVBUF);
    /// returns the size the kernel reports afterwards.
    pub fn set_rcvbuf(&self, bytes: usize) -> io::Result<usize> {
        let val = bytes.min(i32::MAX as usize / 2) as libc::c_int;
        if self
            .setsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, val)
            .is_err()
        {
            self.setsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUF, val)?;
        }
        let mut out: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: out/len are valid for writes of the given size.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &mut out as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        })?;
        Ok(usize::try_from(out).unwrap_or(0))
    }

    /// Ask the kernel to report ENOBUFS on recv when it could not queue a message to us.
    pub fn report_enobufs(&self, enable: bool) -> io::Result<()> {
        self.setsockopt_int(
            libc::SOL_NETLINK,
            libc::NETLINK_NO_ENOBUFS,
            libc::c_int::from(!enable),
        )
    }

    /// Send one datagram (one or more netlink messages) to the kernel.
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data; all-zero (pid 0) is the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: data and addr are valid for the given lengths.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    data.as_ptr() as *const libc::c_void,
                    data.len(),
                    0,
                    &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n as usize != data.len() {
                return Err(io::Error::other("short netlink send"));
            }
            return Ok(());
        }
    }

    /// Non-blocking receive of one datagram. `Ok(None)` when nothing is pending.
    /// A datagram larger than `buf` is reported as an `InvalidData` error.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: buf is valid for writes of buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(None),
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            if n > buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("netlink datagram truncated ({n} > {} bytes)", buf.len()),
                ));
            }
            return Ok(Some(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_msg(queue: u16, id: u32, extra_attr_first: bool) -> Vec<u8> {
        let mut buf = Vec::new();
        let start = begin_msg(&mut buf, NFQNL_MSG_PACKET, 0, 0, queue);
        if extra_attr_first {
            put_attr(&mut buf, 3, &7u32.to_be_bytes()); // NFQA_MARK
        }
        let mut hdr = [0u8; 7];
        hdr[..4].copy_from_slice(&id.to_be_bytes());
        put_attr(&mut buf, NFQA_PACKET_HDR, &hdr);
        finish_msg(&mut buf, start);
        buf
    }

    #[test]
    fn parses_packets_and_acks() {
        let mut data = packet_msg(5, 0xdead_beef, true);
        data.extend(packet_msg(5, 2, false));
        // NLMSG_ERROR with error = -1 (EPERM), seq 9
        let mut err = Vec::new();
        err.extend_from_slice(&36u32.to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&0u16.to_ne_bytes());
        err.extend_from_slice(&9u32.to_ne_bytes());
        err.extend_from_slice(&0u32.to_ne_bytes());
        err.extend_from_slice(&(-1i32).to_ne_bytes());
        err.extend_from_slice(&[0u8; 16]);
        data.extend(err);
        let mut ev = Vec::new();
        parse(&data, &mut ev);
        assert_eq!(
            ev,
            vec![
                Event::Packet {
                    queue: 5,
                    id: 0xdead_beef
                },
                Event::Packet { queue: 5, id: 2 },
                Event::Reply { seq: 9, errno: 1 },
            ]
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        let good = packet_msg(1, 1, true);
        let mut ev = Vec::new();
        // Every truncation and every single-byte corruption of a valid message.
        for cut in 0..=good.len() {
            parse(&good[..cut], &mut ev);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 3, 4, 0x7f, 0x80, 0xff] {
                let mut g = good.clone();
                g[i] = v;
                parse(&g, &mut ev);
            }
        }
        // Pseudo-random garbage.
        let mut x: u64 = 0x1234_5678;
        for len in 0..300usize {
            let mut g = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                g.push(x as u8);
            }
            parse(&g, &mut ev);
        }
    }

    #[test]
    fn builds_well_formed_messages() {
        let mut v = Vec::new();
        append_verdict(&mut v, 3, 1, 42, NF_ACCEPT);
        append_verdict(&mut v, 3, 2, 43, NF_ACCEPT);
        assert_eq!(v.len(), 2 * VERDICT_MSG_LEN);
        assert_eq!(rd_u32_ne(&v, 0), Some(VERDICT_MSG_LEN as u32));
        assert_eq!(rd_u32_be(&v, VERDICT_MSG_LEN - 4), Some(42));
        let c = build_config(
            7,
            1,
            &ConfigReq {
                cmd: Some(NFQNL_CFG_CMD_BIND),
                params: Some((NFQNL_COPY_META, 0)),
                queue_maxlen: Some(100),
                flags: Some((NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN)),
            },
        );
        assert_eq!(rd_u32_ne(&c, 0), Some(c.len() as u32));
        assert_eq!(c.len() % 4, 0);
        // cmd(8) + params(12) + maxlen(8) + flags(8) + mask(8)
        assert_eq!(c.len(), NLMSG_HDRLEN + NFGEN_HDRLEN + 44);
    }
}
