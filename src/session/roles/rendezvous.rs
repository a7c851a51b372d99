//! The rendezvous-point role (10.6): a client's cookie held until the service's RENDEZVOUS1
//! arrives, then the two circuits spliced.

use super::*;

struct Cookie {
    slot: u64,
    expires: Instant,
    _charge: Charge,
}

/// What the rendezvous point does with a RENDEZVOUS1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RendezvousOutcome {
    /// Send `rendezvous2` on `client_slot`, then splice it with the service's circuit.
    Splice {
        /// The client's circuit that registered the cookie.
        client_slot: u64,
        /// The RENDEZVOUS2 body.
        rendezvous2: [u8; RENDEZVOUS2_LEN],
    },
    /// Unknown cookie or malformed: destroy the service's circuit (10.6).
    Destroy,
}

/// The rendezvous-point role: cookies waiting for their service.
pub struct RendezvousRole {
    cookies: BTreeMap<[u8; 32], Cookie>,
    by_slot: BTreeMap<u64, [u8; 32]>,
    budget: MemoryBudget,
    /// Counters.
    pub stats: RoleStats,
}

impl RendezvousRole {
    /// An empty role charging `budget`.
    pub fn new(budget: MemoryBudget) -> RendezvousRole {
        RendezvousRole {
            cookies: BTreeMap::new(),
            by_slot: BTreeMap::new(),
            budget,
            stats: RoleStats::default(),
        }
    }

    /// Whether `slot` waits with a cookie.
    pub fn holds(&self, slot: u64) -> bool {
        self.by_slot.contains_key(&slot)
    }

    /// Cookies held.
    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    /// ESTABLISH_RENDEZVOUS on `slot` (the caller checked it has no other role). Returns the
    /// RENDEZVOUS_ESTABLISHED status.
    pub fn establish(&mut self, now: Instant, slot: u64, body: &[u8]) -> u8 {
        let code = self.try_establish(now, slot, body);
        if code == status::OK {
            self.stats.cookies += 1;
        } else {
            self.stats.refused += 1;
        }
        code
    }

    fn try_establish(&mut self, now: Instant, slot: u64, body: &[u8]) -> u8 {
        let Ok(cookie) = parse_establish_rendezvous(body) else {
            return status::REFUSED;
        };
        if self.by_slot.contains_key(&slot) || self.cookies.contains_key(&cookie.0) {
            return status::EXISTS;
        }
        if self.cookies.len() >= MAX_REND_COOKIES {
            self.expire(now);
            if self.cookies.len() >= MAX_REND_COOKIES {
                return status::RATE_LIMITED;
            }
        }
        let Some(charge) = self.budget.try_charge(REND_COOKIE_COST) else {
            return status::RATE_LIMITED;
        };
        self.by_slot.insert(slot, cookie.0);
        self.cookies.insert(
            cookie.0,
            Cookie {
                slot,
                expires: now + REND_COOKIE_LIFETIME_MS,
                _charge: charge,
            },
        );
        status::OK
    }

    /// RENDEZVOUS1 on the service's circuit `slot`. The cookie is single use.
    pub fn rendezvous1(&mut self, now: Instant, slot: u64, body: &[u8]) -> RendezvousOutcome {
        let Ok(r1) = Rendezvous1::parse(body) else {
            self.stats.refused += 1;
            return RendezvousOutcome::Destroy;
        };
        let live = self
            .cookies
            .get(&r1.cookie.0)
            .is_some_and(|c| now < c.expires && c.slot != slot);
        if !live {
            self.stats.refused += 1;
            return RendezvousOutcome::Destroy;
        }
        let Some(c) = self.cookies.remove(&r1.cookie.0) else {
            return RendezvousOutcome::Destroy;
        };
        self.by_slot.remove(&c.slot);
        self.stats.splices += 1;
        RendezvousOutcome::Splice {
            client_slot: c.slot,
            rendezvous2: r1.to_rendezvous2().emit(),
        }
    }

    /// Forgets cookies older than [`REND_COOKIE_LIFETIME_MS`].
    pub fn expire(&mut self, now: Instant) {
        let by_slot = &mut self.by_slot;
        self.cookies.retain(|_, c| {
            let keep = now < c.expires;
            if !keep {
                by_slot.remove(&c.slot);
            }
            keep
        });
    }

    /// The circuit `slot` is gone.
    pub fn closed(&mut self, slot: u64) {
        if let Some(c) = self.by_slot.remove(&slot) {
            self.cookies.remove(&c);
        }
    }
}
