//! The bootstrap peers of the config (docs/protocol.md 4.2): when to ask each for its relay
//! record, host names to resolve, and what `globalnet status` says about each.
//!
//! Sans-IO like the rest of the link layer: the layer asks [`Bootstrap::due`] what to send and
//! hands back answers; names go out through [`Bootstrap::poll_resolve`] and come back through
//! [`Bootstrap::on_resolved`] (the daemon resolves them off the event loop; nothing here blocks).

use rand::Rng;
use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::time::{Instant, Millis, RepeatLog};

/// First retry delay of a peer that does not answer; doubles per try.
pub const BOOTSTRAP_RETRY_MIN_MS: Millis = 1_000;
/// Largest retry delay.
pub const BOOTSTRAP_RETRY_MAX_MS: Millis = 15_000;
/// A record query without an answer after this long counts as unanswered.
pub const BOOTSTRAP_QUERY_TIMEOUT_MS: Millis = 2_000;
/// Addresses of one name used at most (a name with many is a pool; a few are enough).
pub const MAX_ADDRS_PER_NAME: usize = 4;
/// Unanswered queries before the peer is reported as not answering.
const REPORT_AFTER_TRIES: u32 = 2;

/// A bootstrap peer as configured: an address, or a `host:port` to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapPeer {
    /// An IP address and port.
    Addr(SocketAddr),
    /// A host name and port, as `host:port`.
    Name(String),
}

/// What `globalnet status` shows of one bootstrap peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapInfo {
    /// As configured.
    pub peer: String,
    /// Its addresses (resolved, for a name).
    pub addrs: Vec<SocketAddr>,
    /// `linked`, `answered`, `waiting`, `resolving`, `not answering` or `unresolved`.
    pub state: &'static str,
    /// Since when it has not answered (or not resolved), if it is failing.
    pub failing_since: Option<Instant>,
    /// Queries (or resolutions) without an answer since the last answer.
    pub tries: u32,
    /// The last error (resolution failure, no answer).
    pub last_error: Option<String>,
}

/// Something the link layer must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// To.
    pub addr: SocketAddr,
    /// The query's nonce.
    pub nonce: u64,
}

struct Peer {
    spec: String,
    name: bool,
    addrs: Vec<SocketAddr>,
    resolving: bool,
    /// A resolution arrived: query its addresses at once.
    fresh: bool,
    /// Pending queries: address, nonce, sent.
    pending: Vec<(SocketAddr, u64, Instant)>,
    next: Instant,
    delay: Millis,
    tries: u32,
    failing_since: Option<Instant>,
    answered: bool,
    last_error: Option<String>,
    reported: bool,
}

/// The bootstrap peers and their state.
pub struct Bootstrap {
    peers: Vec<Peer>,
    resolve: VecDeque<String>,
    summary: RepeatLog,
}

impl Bootstrap {
    /// The configured peers.
    pub fn new(peers: &[BootstrapPeer]) -> Bootstrap {
        let peers = peers
            .iter()
            .map(|p| {
                let (spec, name, addrs) = match p {
                    BootstrapPeer::Addr(a) => (a.to_string(), false, vec![*a]),
                    BootstrapPeer::Name(n) => (n.clone(), true, Vec::new()),
                };
                Peer {
                    spec,
                    name,
                    addrs,
                    resolving: false,
                    fresh: false,
                    pending: Vec::new(),
                    next: Instant::ZERO,
                    delay: BOOTSTRAP_RETRY_MIN_MS / 2,
                    tries: 0,
                    failing_since: None,
                    answered: false,
                    last_error: None,
                    reported: false,
                }
            })
            .collect();
        Bootstrap {
            peers,
            resolve: VecDeque::new(),
            summary: RepeatLog::default(),
        }
    }

    /// Whether no peer is configured.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether `addr` is one of the bootstrap peers' addresses.
    pub fn is_bootstrap(&self, addr: &SocketAddr) -> bool {
        self.peers.iter().any(|p| p.addrs.contains(addr))
    }

    /// A name the daemon should resolve now.
    pub fn poll_resolve(&mut self) -> Option<String> {
        self.resolve.pop_front()
    }

    /// A resolution finished: the addresses, or why there are none.
    pub fn on_resolved(
        &mut self,
        now: Instant,
        name: &str,
        result: Result<Vec<SocketAddr>, String>,
    ) {
        let Some(p) = self.peers.iter_mut().find(|p| p.name && p.spec == name) else {
            return;
        };
        p.resolving = false;
        match result {
            Ok(mut addrs) if !addrs.is_empty() => {
                addrs.dedup();
                addrs.truncate(MAX_ADDRS_PER_NAME);
                if p.addrs != addrs {
                    tracing::info!(peer = %p.spec, addrs = ?addrs, "bootstrap peer resolved");
                }
                p.addrs = addrs;
                p.fresh = true;
                if p.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("does not resolve"))
                {
                    p.last_error = None;
                }
            }
            Ok(_) | Err(_) => {
                let why = match result {
                    Err(e) => e,
                    Ok(_) => "no addresses".to_string(),
                };
                p.tries = p.tries.saturating_add(1);
                p.failing_since.get_or_insert(now);
                if !p.reported {
                    p.reported = true;
                    tracing::warn!(peer = %p.spec, "bootstrap peer does not resolve: {why}; retrying");
                }
                p.last_error = Some(format!("does not resolve: {why}"));
            }
        }
    }

    /// What to send now. `linked(addr)`: a link to that address is up; `enough`: the node has
    /// relays enough that bootstrap peers are no longer needed.
    pub fn due(
        &mut self,
        now: Instant,
        enough: bool,
        linked: impl Fn(&SocketAddr) -> bool,
        rng: &mut impl Rng,
    ) -> Vec<Query> {
        let mut out = Vec::new();
        for p in &mut self.peers {
            // Unanswered queries count as failed tries.
            let before = p.pending.len();
            p.pending
                .retain(|(_, _, sent)| now.saturating_since(*sent) < BOOTSTRAP_QUERY_TIMEOUT_MS);
            if p.pending.len() < before && !p.answered {
                p.failing_since.get_or_insert(now);
                p.last_error = Some("no answer to record queries".to_string());
                if p.tries >= REPORT_AFTER_TRIES && !p.reported {
                    p.reported = true;
                    tracing::warn!(peer = %p.spec, tries = p.tries, "bootstrap peer is not answering; retrying");
                }
            }
            if p.addrs.iter().any(&linked) {
                p.tries = 0;
                p.failing_since = None;
                p.last_error = None;
                continue;
            }
            if enough || p.resolving || !p.pending.is_empty() {
                continue;
            }
            if p.name && !p.fresh {
                // Resolve again on every retry: the name may point elsewhere now.
                if now >= p.next {
                    p.resolving = true;
                    self.resolve.push_back(p.spec.clone());
                    back_off(p, now, rng);
                }
                continue;
            }
            if !p.fresh && now < p.next {
                continue;
            }
            p.fresh = false;
            for a in &p.addrs {
                let nonce: u64 = rng.gen();
                p.pending.push((*a, nonce, now));
                out.push(Query { addr: *a, nonce });
            }
            p.tries = p.tries.saturating_add(1);
            if !p.name {
                back_off(p, now, rng);
            }
        }
        out
    }

    /// A record response came from `from` with `nonce`: whether it answers one of our queries.
    pub fn on_response(&mut self, from: SocketAddr, nonce: u64) -> bool {
        for p in &mut self.peers {
            if let Some(i) = p
                .pending
                .iter()
                .position(|(a, n, _)| *a == from && *n == nonce)
            {
                p.pending.swap_remove(i);
                if p.reported {
                    tracing::info!(peer = %p.spec, "bootstrap peer answers");
                }
                p.answered = true;
                p.reported = false;
                p.tries = 0;
                p.failing_since = None;
                p.last_error = None;
                p.delay = BOOTSTRAP_RETRY_MIN_MS / 2;
                return true;
            }
        }
        false
    }

    /// The state of every peer, for `status`.
    pub fn status(&self, linked: impl Fn(&SocketAddr) -> bool) -> Vec<BootstrapInfo> {
        self.peers
            .iter()
            .map(|p| {
                let state = if p.addrs.iter().any(&linked) {
                    "linked"
                } else if p.resolving && p.addrs.is_empty() {
                    "resolving"
                } else if p.name && p.addrs.is_empty() && p.last_error.is_some() {
                    "unresolved"
                } else if p.failing_since.is_some() {
                    "not answering"
                } else if p.answered {
                    "answered"
                } else {
                    "waiting"
                };
                BootstrapInfo {
                    peer: p.spec.clone(),
                    addrs: p.addrs.clone(),
                    state,
                    failing_since: p.failing_since,
                    tries: p.tries,
                    last_error: p.last_error.clone(),
                }
            })
            .collect()
    }

    /// Why a node without links has none, in one line (`None` while it has links).
    pub fn isolation_reason(&self, now: Instant, listening: &str) -> String {
        if self.peers.is_empty() {
            return format!(
                "no links: no bootstrap peers are configured, and no node has contacted this one \
                 (listening on {listening}); list a peer under [network] bootstrap"
            );
        }
        let parts: Vec<String> = self
            .peers
            .iter()
            .map(|p| match (&p.last_error, p.failing_since) {
                (Some(e), Some(since)) => format!(
                    "{}: {e} ({} tries in {} s)",
                    p.spec,
                    p.tries,
                    now.saturating_since(since) / 1000
                ),
                (Some(e), None) => format!("{}: {e}", p.spec),
                (None, _) if p.answered => format!("{}: answered, linking", p.spec),
                (None, _) => format!("{}: waiting", p.spec),
            })
            .collect();
        format!("no links: {}", parts.join("; "))
    }

    /// Logs a one-line summary while the node has no links: when it starts or changes, and at
    /// most once a minute (`reason` from [`Bootstrap::isolation_reason`]); `None` ends it.
    pub fn log_isolation(&mut self, now: Instant, reason: Option<&str>) {
        match reason {
            Some(r) => {
                // Keyed without the counters, so a growing try count is not "a change".
                let key: String = r.chars().filter(|c| !c.is_ascii_digit()).collect();
                if self.summary.hit(now, &key).is_some() {
                    tracing::warn!("{r}");
                }
            }
            None => {
                if self.summary.clear() {
                    tracing::info!("links are up");
                }
            }
        }
    }
}

fn back_off(p: &mut Peer, now: Instant, rng: &mut impl Rng) {
    p.delay = (p.delay * 2).clamp(BOOTSTRAP_RETRY_MIN_MS, BOOTSTRAP_RETRY_MAX_MS);
    // Jitter, so that nodes started together do not retry in lockstep.
    p.next = now + p.delay + rng.gen_range(0..=p.delay / 2);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn literal_peer_is_queried_with_backoff_and_reported() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut b = Bootstrap::new(&[BootstrapPeer::Addr(addr("198.18.0.1:7412"))]);
        let q = b.due(Instant::ZERO, false, |_| false, &mut rng);
        assert_eq!(q.len(), 1);
        assert!(
            b.due(Instant::from_unix_ms(500), false, |_| false, &mut rng)
                .is_empty(),
            "one query at a time"
        );
        let mut sent = 1;
        let mut t = 0;
        while t < 60_000 {
            t += 250;
            sent += b
                .due(Instant::from_unix_ms(t), false, |_| false, &mut rng)
                .len();
        }
        assert!(
            (4..=12).contains(&sent),
            "backed off: {sent} queries in a minute"
        );
        let s = &b.status(|_| false)[0];
        assert_eq!(s.state, "not answering");
        assert_eq!(s.tries as usize, sent);
        assert!(b
            .isolation_reason(Instant::from_unix_ms(t), "0.0.0.0:7412")
            .contains("no answer"));
        // An answer clears it.
        let q = loop {
            t += 250;
            if let Some(q) = b
                .due(Instant::from_unix_ms(t), false, |_| false, &mut rng)
                .pop()
            {
                break q;
            }
        };
        assert!(b.on_response(q.addr, q.nonce));
        assert!(!b.on_response(q.addr, q.nonce), "once");
        assert_eq!(b.status(|_| false)[0].state, "answered");
        assert_eq!(b.status(|_| true)[0].state, "linked");
    }

    #[test]
    fn names_are_resolved_then_queried_and_resolved_again_on_retry() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut b = Bootstrap::new(&[BootstrapPeer::Name("seed.example.net:7412".into())]);
        assert!(b.due(Instant::ZERO, false, |_| false, &mut rng).is_empty());
        assert_eq!(b.poll_resolve().as_deref(), Some("seed.example.net:7412"));
        assert_eq!(b.poll_resolve(), None);
        assert_eq!(b.status(|_| false)[0].state, "resolving");
        b.on_resolved(
            Instant::from_unix_ms(10),
            "seed.example.net:7412",
            Err("no such host".into()),
        );
        assert_eq!(b.status(|_| false)[0].state, "unresolved");
        assert!(b
            .isolation_reason(Instant::from_unix_ms(10), "x")
            .contains("does not resolve"));
        // Retried later, not at once.
        assert!(b
            .due(Instant::from_unix_ms(20), false, |_| false, &mut rng)
            .is_empty());
        assert_eq!(b.poll_resolve(), None);
        let mut t = 20;
        while b.poll_resolve().is_none() {
            t += 250;
            assert!(t < 10_000, "resolution retried");
            b.due(Instant::from_unix_ms(t), false, |_| false, &mut rng);
        }
        let a = addr("198.18.0.9:7412");
        b.on_resolved(
            Instant::from_unix_ms(t),
            "seed.example.net:7412",
            Ok(vec![a]),
        );
        let q = b.due(Instant::from_unix_ms(t), false, |_| false, &mut rng);
        assert_eq!(q.len(), 1, "queried as soon as resolved");
        assert_eq!(q[0].addr, a);
        assert!(b.is_bootstrap(&a));
        // No answer: the next retry resolves the name again first.
        let mut resolved_again = false;
        for _ in 0..100 {
            t += 250;
            b.due(Instant::from_unix_ms(t), false, |_| false, &mut rng);
            if b.poll_resolve().is_some() {
                resolved_again = true;
                break;
            }
        }
        assert!(resolved_again);
    }

    #[test]
    fn nothing_is_sent_once_linked_or_enough() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let a = addr("198.18.0.1:7412");
        let mut b = Bootstrap::new(&[BootstrapPeer::Addr(a)]);
        assert!(b
            .due(Instant::ZERO, false, |x| *x == a, &mut rng)
            .is_empty());
        assert!(b.due(Instant::ZERO, true, |_| false, &mut rng).is_empty());
        assert!(Bootstrap::new(&[])
            .isolation_reason(Instant::ZERO, "0.0.0.0:7412")
            .contains("no bootstrap peers"));
    }
}
