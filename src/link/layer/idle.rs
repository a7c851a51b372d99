//! Closing links to relays that no longer carry circuits (issue #25). A relay links to every
//! relay it extends a circuit to, and every relay that extends through it links to it; without
//! a timeout those links stay up (keepalives and their timers) after their circuits are gone,
//! and a relay tends towards a link to every relay it ever extended to: links per node grew by
//! about two a minute at 500 nodes, and with them the heap and the datagrams per node.

use crate::time::{Instant, Millis};

use super::{LinkId, LinkLayer};

/// A link to a relay that carried no circuit (and no cell) for this long is closed, unless it is
/// one of the links the node keeps anyway (below). Long enough that a relay a client or a
/// service extends to again within minutes (its intro points, a rendezvous point) still finds
/// the link up; a new one costs one handshake.
pub const RELAY_LINK_IDLE_MS: Millis = 180_000;

impl LinkLayer {
    /// Relays whose links are never closed as idle: the node's guards (a new circuit should
    /// not wait for a handshake with its first hop). The node sets them as they change.
    pub fn keep_links_to(&mut self, identities: &[[u8; 32]]) {
        if self.kept != identities {
            self.kept = identities.to_vec();
        }
    }

    /// Closes links to relays that carried no circuit for `RELAY_LINK_IDLE_MS`, longest idle
    /// first, while more than `target_links` relay links remain (those are the node's own
    /// neighbours, dialled from the view to stay connected). Kept: links with circuits (the
    /// node marks them in use at every run of its upper timers, at least once a second, which
    /// sets `held_at`), links to our guards,
    /// links dialled only for the DHT (their own, shorter timeout), links our NAT traversal
    /// uses (our introducers, relayed links through them, peers we relay for) and links from a
    /// NATed relay that lists us as its introducer (it is reachable through them).
    /// When a link last carried a cell or was held by a circuit (or came up, if neither).
    fn last_use(l: &super::link::Link) -> Instant {
        l.last_cell
            .max(l.held_at)
            .max(l.established_at.unwrap_or(l.created))
    }

    pub(super) fn close_idle_relay_links(&mut self, now: Instant) {
        let relays = self
            .links
            .values()
            .filter(|l| l.state.ready() && l.is_relay)
            .count();
        let Some(mut spare) = relays.checked_sub(self.cfg.target_links) else {
            return;
        };
        if spare == 0 {
            return;
        }
        let me = self.identity();
        let mut idle: Vec<(Instant, LinkId)> = self
            .links
            .values()
            .filter(|l| l.state.ready() && l.is_relay && !l.dht_only)
            .filter(|l| now.saturating_since(Self::last_use(l)) >= RELAY_LINK_IDLE_MS)
            .filter(|l| l.identity.is_some_and(|i| !self.kept.contains(&i)))
            .filter(|l| {
                // A NATed relay that names us as its introducer keeps its link to us.
                !l.identity
                    .and_then(|i| self.view.get(&i))
                    .is_some_and(|r| r.fields().introducers.iter().any(|c| c.identity == me))
            })
            .map(|l| (Self::last_use(l), l.id))
            .collect();
        // Longest idle first, then in link order: a simulation with a fixed seed repeats itself.
        idle.sort_unstable();
        for (_, id) in idle {
            if spare == 0 {
                break;
            }
            if self.nat_uses(id) {
                continue;
            }
            tracing::trace!(link = id.0, "closing a relay link that carries no circuit");
            self.stats.idle_closed += 1;
            self.close(now, id, 0);
            spare -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;
    use crate::crypto::Randomness;
    use crate::link::layer::{LinkConfig, LinkKeys};
    use ed25519_dalek::SigningKey;

    const NOW: Instant = Instant::from_unix_ms(1_767_225_600_000);

    fn layer() -> LinkLayer {
        LinkLayer::new(
            LinkConfig::default(),
            LinkKeys {
                identity: SigningKey::from_bytes(&[9; 32]),
                link: x25519_dalek::StaticSecret::from([9; 32]),
                onion_public: [9; 32],
            },
            MemoryBudget::new(1 << 20),
            Randomness::simulated([4; 32]),
            NOW,
        )
    }

    /// A link to relay `n` that completed HELLO at `NOW` and carried a cell then.
    fn relay_link(l: &mut LinkLayer, n: u8) -> LinkId {
        let id = l
            .new_link(
                NOW,
                [n; 32],
                format!("198.18.0.{n}:7412").parse().unwrap(),
                true,
            )
            .unwrap();
        let link = l.links.get_mut(&id).unwrap();
        link.state.on_hello_received();
        link.identity = Some([n; 32]);
        link.is_relay = true;
        link.established_at = Some(NOW);
        link.last_cell = NOW;
        id
    }

    #[test]
    fn idle_relay_links_close_beyond_the_target_and_busy_or_kept_ones_stay() {
        let mut l = layer();
        let target = l.cfg.target_links;
        // Twice the target: half of them may go.
        let ids: Vec<LinkId> = (1..=(2 * target) as u8)
            .map(|n| relay_link(&mut l, n))
            .collect();
        // Link 0 carries circuits (the node marks it in use each tick); link 1 leads to a guard.
        l.keep_links_to(&[[2; 32]]);
        let later = NOW + RELAY_LINK_IDLE_MS;
        l.mark_in_use(ids[0], NOW + (RELAY_LINK_IDLE_MS - 1_000));

        l.close_idle_relay_links(NOW + (RELAY_LINK_IDLE_MS - 1));
        assert_eq!(l.links.len(), 2 * target, "nothing is idle long enough yet");

        l.close_idle_relay_links(later);
        assert_eq!(l.links.len(), target, "down to the target, no further");
        assert!(
            l.links.contains_key(&ids[0]),
            "a link with circuits was closed"
        );
        assert!(l.links.contains_key(&ids[1]), "a guard's link was closed");
        assert_eq!(l.stats.idle_closed, target as u64);

        // At the target nothing more closes, however long the rest stays idle.
        l.close_idle_relay_links(later + 10 * RELAY_LINK_IDLE_MS);
        assert_eq!(l.links.len(), target);
    }

    #[test]
    fn a_link_that_carried_a_cell_lately_is_not_idle() {
        let mut l = layer();
        let target = l.cfg.target_links;
        let ids: Vec<LinkId> = (1..=(target + 2) as u8)
            .map(|n| relay_link(&mut l, n))
            .collect();
        let later = NOW + RELAY_LINK_IDLE_MS;
        for id in &ids {
            l.links.get_mut(id).unwrap().last_cell = NOW + (RELAY_LINK_IDLE_MS - 1);
        }
        l.close_idle_relay_links(later);
        assert_eq!(l.links.len(), target + 2);
        // A link of a client (not a relay) is none of this timer's business.
        l.links.get_mut(&ids[0]).unwrap().is_relay = false;
        l.links.get_mut(&ids[0]).unwrap().last_cell = NOW;
        l.close_idle_relay_links(later + RELAY_LINK_IDLE_MS);
        assert_eq!(
            l.links.len(),
            target + 1,
            "one idle relay link beyond the target"
        );
        assert!(l.links.contains_key(&ids[0]));
    }
}
