//! Full service keys from names (docs/protocol.md 18.1): an address is 120 bits of a hash of the
//! service key, so a descriptor is normally checked only against that hash. A name that carries
//! the whole key (a key name, a petname naming one, a claim) lets the client check more: once such
//! a name resolved to an address, a descriptor for that address is used only if its key is that
//! key. An attacker who found a second key for the address (a birthday search of ~2^60 for a pair
//! of its own) can then not serve its other key to a client that came by the key name.

use crate::crypto::address_of;
use crate::dht::descriptor::DescriptorContent;
use crate::session::layer::SessionLayer;
use crate::session::limits::MAX_EXPECTED_KEYS;
use crate::time::Instant;

impl SessionLayer {
    /// A name carrying the service key `key` resolved to `address`: descriptors for `address`
    /// must carry `key` from now on. `false` (and nothing kept) when `key` does not hash to
    /// `address`. The oldest expectation goes when [`MAX_EXPECTED_KEYS`] are kept.
    pub fn expect_service_key(&mut self, now: Instant, address: [u8; 16], key: [u8; 32]) -> bool {
        if address_of(&key).octets() != address && !self.hooks.expect_colliding_key {
            return false;
        }
        if self.expected_keys.len() >= MAX_EXPECTED_KEYS
            && !self.expected_keys.contains_key(&address)
        {
            let oldest = self
                .expected_keys
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.expected_keys.remove(&a);
            }
        }
        self.expected_keys.insert(address, (key, now));
        true
    }

    /// Whether `content` (a descriptor opened for `address`) carries the key a name gave for
    /// `address`, if one did.
    pub(in crate::session) fn key_as_expected(
        &self,
        address: &[u8; 16],
        content: &DescriptorContent,
    ) -> bool {
        self.expected_keys
            .get(address)
            .is_none_or(|(k, _)| *k == content.service_key)
    }
}
