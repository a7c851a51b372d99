//! NAT traversal state of the link layer (docs/protocol.md section 13): classification from the
//! endpoints neighbours observe, the constants of punching, probing and relayed links, and small
//! rate windows. The message flow itself lives in [`super::layer`].

use std::net::{IpAddr, SocketAddr};

use crate::time::Millis;
use crate::wire::record::NatClass;

/// Keepalive on links to NATed peers and on punched or relayed links (boringtun's persistent
/// keepalive value; conntrack forgets idle UDP after 30 s).
pub const LINK_KEEPALIVE_MS: Millis = 20_000;
/// A node behind NAT sends on every link at least this often, so that a rebinding of its NAT
/// (a new public port) reaches every neighbour within this time (plus a round trip).
pub const NAT_KEEPALIVE_MS: Millis = 8_000;
/// Handshake initiations are re-sent this often while punching.
pub const PUNCH_INTERVAL_MS: Millis = 100;
/// While punching, a fresh initiation replaces the repeated one this often.
pub const PUNCH_REINIT_MS: Millis = 1_000;
/// A punch lasts this long.
pub const PUNCH_DURATION_MS: Millis = 5_000;
/// Punch attempts (through the target's introducers in turn) before a dial gives up.
pub const PUNCH_TRIES: u8 = 3;
/// PUNCH_REQUESTs an introducer serves per link and second; also PUNCH_NOTIFYs a node acts on.
pub const PUNCH_REQUEST_RATE: u32 = 2;
/// Most punches running at once (each a table entry a neighbour can create).
pub const MAX_PUNCHES: usize = 32;
/// PROBE_REQUESTs served per link and minute.
pub const PROBE_REQUEST_RATE: u32 = 1;
/// A probe must arrive within this window.
pub const PROBE_WINDOW_MS: Millis = 10_000;
/// Reclassification period (and the probe period once a probe succeeded).
pub const NAT_RECHECK_MS: Millis = 600_000;
/// Probe retry while no probe has succeeded yet.
pub const PROBE_RETRY_MS: Millis = 15_000;
/// Most pending probe PINGs a node owes others (filled by PROBE_FORWARD).
pub const MAX_PROBE_PINGS: usize = 16;
/// RELAY_REQUESTs an introducer serves per link and second.
pub const RELAY_REQUEST_RATE: u32 = 1;
/// Relayed links an introducer carries.
pub const MAX_RELAYED_LINKS: usize = 64;
/// Datagrams per second and token an introducer forwards.
pub const RELAYED_LINK_RATE: u32 = 2_000;
/// An idle relayed link is forgotten after this long.
pub const RELAYED_LINK_IDLE_MS: Millis = 120_000;
/// First try to make a relayed link direct, after it came up; the wait doubles per try.
pub const RELAY_UPGRADE_FIRST_MS: Millis = 10_000;
/// Longest wait between tries to make a relayed link direct.
pub const RELAY_UPGRADE_MAX_MS: Millis = 900_000;
/// Approximate bytes of one punch, probe or relay table entry.
pub const NAT_ENTRY_COST: usize = 256;
/// Observations kept.
const OBS_MAX: usize = 16;

/// A fixed window counter: at most `limit` events per `period`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateWindow {
    start: Millis,
    count: u32,
}

impl RateWindow {
    /// Counts one event; false if it exceeds the limit.
    pub fn allow(&mut self, now: Millis, period: Millis, limit: u32) -> bool {
        if now.saturating_sub(self.start) >= period {
            self.start = now;
            self.count = 0;
        }
        if self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }
}

/// Endpoints neighbours with distinct IP addresses observed us at (section 13.1).
#[derive(Debug, Default, Clone)]
pub struct Observations {
    /// (reporter's IP, what it saw), oldest first.
    entries: Vec<(IpAddr, SocketAddr)>,
    class: Option<NatClass>,
}

impl Observations {
    /// Records one reflection. A reporter that sees us at a new endpoint means our NAT rebound
    /// (or we moved): every older observation is stale and forgotten.
    pub fn add(&mut self, reporter: IpAddr, observed: SocketAddr) {
        match self.entries.iter().position(|(r, _)| *r == reporter) {
            Some(i) if self.entries.get(i).map(|e| e.1) == Some(observed) => return,
            Some(_) => self.entries.clear(),
            None => {}
        }
        if self.entries.len() >= OBS_MAX {
            self.entries.remove(0);
        }
        self.entries.push((reporter, observed));
        if self.entries.len() >= 2 {
            let first = self.entries.first().map(|e| e.1);
            let all_same = self.entries.iter().all(|e| Some(e.1) == first);
            self.class = Some(if all_same {
                NatClass::Cone
            } else {
                NatClass::Symmetric
            });
        }
    }

    /// The class the mappings show: cone (endpoint-independent) or symmetric; `Unknown` until two
    /// neighbours reported. A single report after a rebinding keeps the previous verdict.
    pub fn class(&self) -> NatClass {
        self.class.unwrap_or(NatClass::Unknown)
    }

    /// The endpoint to publish: the oldest current observation (stable under a symmetric NAT,
    /// where every neighbour sees another port).
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.entries.first().map(|e| e.1)
    }

    /// Number of distinct reporters.
    pub fn reporters(&self) -> usize {
        self.entries.len()
    }
}

/// Whether our own class means we sit behind a NAT that forgets idle mappings.
pub fn behind_nat(c: NatClass) -> bool {
    !c.directly_reachable()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_cone_symmetric_and_rebinding() {
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let c: IpAddr = "198.18.0.3".parse().unwrap();
        let e1: SocketAddr = "198.18.9.1:4000".parse().unwrap();
        let e2: SocketAddr = "198.18.9.1:4001".parse().unwrap();
        let mut o = Observations::default();
        o.add(a, e1);
        assert_eq!(o.class(), NatClass::Unknown);
        o.add(b, e1);
        assert_eq!(o.class(), NatClass::Cone);
        o.add(c, e2);
        assert_eq!(o.class(), NatClass::Symmetric);
        assert_eq!(o.endpoint(), Some(e1));
        // a sees a new port: rebinding; older reports are dropped, the verdict stays.
        let mut o = Observations::default();
        o.add(a, e1);
        o.add(b, e1);
        o.add(a, e2);
        assert_eq!(o.reporters(), 1);
        assert_eq!(o.class(), NatClass::Cone);
        assert_eq!(o.endpoint(), Some(e2));
        o.add(b, e2);
        assert_eq!(o.class(), NatClass::Cone);
    }

    #[test]
    fn rate_window() {
        let mut w = RateWindow::default();
        assert!(w.allow(1000, 1000, 2));
        assert!(w.allow(1001, 1000, 2));
        assert!(!w.allow(1002, 1000, 2));
        assert!(w.allow(2000, 1000, 2));
    }
}
