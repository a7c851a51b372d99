//! NAT traversal state of the link layer (docs/protocol.md section 13): classification from the
//! endpoints neighbours observe, the constants of punching, probing and relayed links, and small
//! rate windows. The message flow itself lives in [`super::layer`].

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::budget::{Charge, MemoryBudget};
/// The fixed-window counter of the link limits and punch caps (it lives with the other rate
/// limiter in `time`).
pub use crate::time::RateWindow;
use crate::time::{Instant, Millis};
use crate::wire::record::NatClass;

/// Keepalive on links to NATed peers and on punched or relayed links (boringtun's persistent
/// keepalive value; conntrack forgets idle UDP after 30 s).
pub const LINK_KEEPALIVE_MS: Millis = 20_000;
/// A node behind NAT sends on every link at least this often, so that a rebinding of its NAT
/// (a new public port) reaches every neighbour within this time (plus a round trip).
pub const NAT_KEEPALIVE_MS: Millis = 8_000;
/// While punching, a fresh initiation replaces the repeated one this often.
pub const PUNCH_REINIT_MS: Millis = 1_000;
/// A punch lasts this long.
pub const PUNCH_DURATION_MS: Millis = 5_000;
/// When a punch sends its initiation to each endpoint, after the punch began: dense at first
/// (both sides' notifies leave the introducer together, so the holes usually open within a
/// round trip), then sparse until the punch ends. These are all the datagrams one punch sends to
/// an endpoint that has not answered: an introducer that names a stranger's endpoint gets at
/// most this many datagrams sent there, not one per interval (issue #19).
pub const PUNCH_PROBE_AT_MS: [Millis; 8] = [0, 100, 200, 300, 500, 1_000, 2_000, 3_500];
/// Window of the per-endpoint and per-IP caps on punch datagrams.
pub const PUNCH_CAP_WINDOW_MS: Millis = 60_000;
/// Punch datagrams to one endpoint per window, over all punches: the tries of one dial (through
/// each introducer in turn) and a few more.
pub const PUNCH_CAP_PER_ENDPOINT: u32 = 4 * PUNCH_PROBE_AT_MS.len() as u32;
/// Punch datagrams to one IP address per window, whatever the port. Looser than per endpoint:
/// behind a carrier-grade NAT many honest peers share one public IP with distinct ports, and a
/// cap per IP as tight as the one per endpoint would let one of them starve punching to all.
/// This allows every punch slot ([`MAX_PUNCHES`]) to aim at one IP within a window.
pub const PUNCH_CAP_PER_IP: u32 = MAX_PUNCHES as u32 * PUNCH_PROBE_AT_MS.len() as u32;
/// Entries of each cap table (endpoints, IPs); when full of live entries, punching to a new
/// address waits (failing closed: a flood of notifies must not evict honest entries' counts).
pub const PUNCH_CAP_ENTRIES: usize = 256;
/// Approximate bytes of one cap table entry.
pub const PUNCH_CAP_COST: usize = 64;
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
/// Longest wait between tries on a relayed link that carried traffic since the last try (at
/// least [`RELAY_UPGRADE_BUSY_BYTES`]): circuits over it pay the relay's extra hop, and a punch
/// that failed because a NAT held a stale entry works once the entry has timed out (~30 s).
pub const RELAY_UPGRADE_BUSY_MAX_MS: Millis = 60_000;
/// Traffic (both ways) since the last try that makes a relayed link busy: more than keepalives
/// and HELLOs, about 30 cells.
pub const RELAY_UPGRADE_BUSY_BYTES: u64 = 16 * 1024;
/// Approximate bytes of one punch, probe or relay table entry.
pub const NAT_ENTRY_COST: usize = 256;
/// Observations kept.
const OBS_MAX: usize = 16;

/// Caps on the datagrams punching sends to an address, per endpoint and per IP, in fixed windows
/// (see [`PUNCH_CAP_PER_ENDPOINT`], [`PUNCH_CAP_PER_IP`]). Both tables are bounded and every entry
/// is charged to the memory budget.
#[derive(Default)]
pub struct PunchCaps {
    endpoints: BTreeMap<SocketAddr, (RateWindow, Charge)>,
    ips: BTreeMap<IpAddr, (RateWindow, Charge)>,
    /// When the tables were last swept of expired entries.
    swept: Instant,
}

impl PunchCaps {
    /// Counts one punch datagram to `to`; false if a cap (or the table bound, or the budget)
    /// refuses it.
    pub fn allow(&mut self, now: Instant, to: SocketAddr, budget: &MemoryBudget) -> bool {
        if now.saturating_since(self.swept) >= PUNCH_CAP_WINDOW_MS {
            self.swept = now;
            self.endpoints
                .retain(|_, (w, _)| !w.expired(now, PUNCH_CAP_WINDOW_MS));
            self.ips
                .retain(|_, (w, _)| !w.expired(now, PUNCH_CAP_WINDOW_MS));
        }
        // Check both before counting in either: a refused datagram uses up no allowance.
        let ep_ok = self
            .endpoints
            .get(&to)
            .map_or(self.endpoints.len() < PUNCH_CAP_ENTRIES, |(w, _)| {
                w.would_allow(now, PUNCH_CAP_WINDOW_MS, PUNCH_CAP_PER_ENDPOINT)
            });
        let ip_ok = self
            .ips
            .get(&to.ip())
            .map_or(self.ips.len() < PUNCH_CAP_ENTRIES, |(w, _)| {
                w.would_allow(now, PUNCH_CAP_WINDOW_MS, PUNCH_CAP_PER_IP)
            });
        if !ep_ok || !ip_ok {
            return false;
        }
        if let Entry::Vacant(v) = self.endpoints.entry(to) {
            let Some(c) = budget.try_charge(PUNCH_CAP_COST) else {
                return false;
            };
            v.insert((RateWindow::default(), c));
        }
        if let Entry::Vacant(v) = self.ips.entry(to.ip()) {
            let Some(c) = budget.try_charge(PUNCH_CAP_COST) else {
                return false;
            };
            v.insert((RateWindow::default(), c));
        }
        let e = self
            .endpoints
            .get_mut(&to)
            .is_some_and(|(w, _)| w.allow(now, PUNCH_CAP_WINDOW_MS, PUNCH_CAP_PER_ENDPOINT));
        let i = self
            .ips
            .get_mut(&to.ip())
            .is_some_and(|(w, _)| w.allow(now, PUNCH_CAP_WINDOW_MS, PUNCH_CAP_PER_IP));
        e && i
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
    fn punch_caps_per_endpoint_and_per_ip() {
        let budget = MemoryBudget::new(1 << 20);
        let mut caps = PunchCaps::default();
        let victim: SocketAddr = "198.18.250.9:7412".parse().unwrap();
        let n = (0..1000)
            .filter(|_| caps.allow(Instant::from_unix_ms(1000), victim, &budget))
            .count();
        assert_eq!(n, PUNCH_CAP_PER_ENDPOINT as usize);
        // Other ports of the same IP (a CGNAT's other customers, or a victim's other ports) share
        // the looser per-IP cap.
        let mut n2 = n;
        for port in 1..=100u16 {
            let ep = SocketAddr::new(victim.ip(), port);
            n2 += (0..1000)
                .filter(|_| caps.allow(Instant::from_unix_ms(1000), ep, &budget))
                .count();
        }
        assert_eq!(n2, PUNCH_CAP_PER_IP as usize);
        // A new window allows again.
        assert!(caps.allow(
            Instant::from_unix_ms(1000 + PUNCH_CAP_WINDOW_MS),
            victim,
            &budget
        ));
        // The tables stay bounded.
        let budget = MemoryBudget::new(1 << 20);
        let mut caps = PunchCaps::default();
        for i in 0..1000u32 {
            let ep = SocketAddr::from((std::net::Ipv4Addr::from(0xc612_0000 + i), 7412));
            let _ = caps.allow(Instant::from_unix_ms(5), ep, &budget);
        }
        assert_eq!(caps.endpoints.len(), PUNCH_CAP_ENTRIES);
        assert_eq!(caps.ips.len(), PUNCH_CAP_ENTRIES);
        assert_eq!(budget.used(), 2 * PUNCH_CAP_ENTRIES * PUNCH_CAP_COST);
    }

    #[test]
    fn rate_window() {
        let mut w = RateWindow::default();
        assert!(w.allow(Instant::from_unix_ms(1000), 1000, 2));
        assert!(w.allow(Instant::from_unix_ms(1001), 1000, 2));
        assert!(!w.allow(Instant::from_unix_ms(1002), 1000, 2));
        assert!(w.allow(Instant::from_unix_ms(2000), 1000, 2));
    }
}
