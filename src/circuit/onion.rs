//! Onion key rotation (docs/protocol.md 14.3): a relay makes a new onion key every
//! [`ONION_KEY_ROTATION_MS`], publishes it in its relay record, and keeps accepting the previous
//! one for [`ONION_KEY_GRACE_MS`] (longer than a record lives plus the clock skew tolerated, so a
//! client holding the previous record still gets through). Older keys are dropped, which erases
//! their secrets: a relay seized later cannot open the extension areas of CREATEs sent to them.

use super::handshake::OnionKey;
use crate::time::{Instant, Millis};

const DAY_MS: Millis = 24 * 3600 * 1000;
/// A new onion key this often (`ONION_KEY_ROTATION_S`).
pub const ONION_KEY_ROTATION_MS: Millis = 7 * DAY_MS;
/// The previous key is accepted this long after it was replaced (`ONION_KEY_GRACE_S`).
pub const ONION_KEY_GRACE_MS: Millis = 2 * DAY_MS;

/// The onion keys a relay accepts: the current one and, during the grace period, the previous.
pub struct OnionKeys {
    current: OnionKey,
    /// When `current` was made.
    since: Instant,
    /// The previous key and when it was replaced.
    previous: Option<(OnionKey, Instant)>,
}

impl OnionKeys {
    /// The current key, made at `since` (a key loaded from disk keeps its age across restarts).
    pub fn new(current: OnionKey, since: Instant) -> OnionKeys {
        OnionKeys {
            current,
            since,
            previous: None,
        }
    }

    /// The key published in the record.
    pub fn current(&self) -> &OnionKey {
        &self.current
    }

    /// When the current key was made.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Sets the current key's age (the daemon knows it from the key file).
    pub fn set_since(&mut self, since: Instant) {
        self.since = since;
    }

    /// Whether the current key is due to be replaced.
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_since(self.since) >= ONION_KEY_ROTATION_MS
    }

    /// Makes `next` current; the current key becomes the previous one (an older previous key is
    /// dropped at once, whatever its grace).
    pub fn rotate(&mut self, now: Instant, next: OnionKey) {
        let old = std::mem::replace(&mut self.current, next);
        self.previous = Some((old, now));
        self.since = now;
    }

    /// Drops the previous key once its grace period is over.
    pub fn expire(&mut self, now: Instant) {
        if self
            .previous
            .as_ref()
            .is_some_and(|(_, at)| now.saturating_since(*at) >= ONION_KEY_GRACE_MS)
        {
            self.previous = None;
        }
    }

    /// The keys a CREATE may name at `now`, current first.
    pub fn accepted(&self, now: Instant) -> ([&OnionKey; 2], usize) {
        match &self.previous {
            Some((p, at)) if now.saturating_since(*at) < ONION_KEY_GRACE_MS => {
                ([&self.current, p], 2)
            }
            _ => ([&self.current, &self.current], 1),
        }
    }

    /// The next time something changes: rotation or the end of the grace period.
    pub fn next_deadline(&self) -> Instant {
        let rotate = self.since.saturating_add(ONION_KEY_ROTATION_MS);
        match &self.previous {
            Some((_, at)) => rotate.min(at.saturating_add(ONION_KEY_GRACE_MS)),
            None => rotate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::handshake::{respond, ClientHandshake, HandshakeError, HopTarget};
    use crate::wire::handshake::{ClientExt, ServerExt};
    use rand::rngs::OsRng;

    /// A CREATE towards `onion` answered by a relay holding `keys` at `now`.
    fn create_to(keys: &OnionKeys, onion: &OnionKey, now: Instant) -> Result<(), HandshakeError> {
        let identity = [7u8; 32];
        let target = HopTarget {
            identity,
            onion_key: *onion.public(),
        };
        let ext = ClientExt {
            backward_seq_start: 1 << 40,
            features: 0,
        };
        let (_client, create) = ClientHandshake::new(&mut OsRng, &target, &ext).unwrap();
        let (list, n) = keys.accepted(now);
        respond(
            &mut OsRng,
            &create,
            &identity,
            &list[..n],
            &ServerExt::default(),
        )
        .map(|_| ())
    }

    #[test]
    fn previous_key_accepted_during_grace_only_and_two_rotations_old_never() {
        let t0: Instant = Instant::from_unix_ms(1_800_000_000_000);
        let k0 = OnionKey::generate(&mut OsRng);
        let mut keys = OnionKeys::new(k0.clone(), t0);
        assert!(create_to(&keys, &k0, t0).is_ok());
        assert!(!keys.due(t0 + ONION_KEY_ROTATION_MS - 1));
        assert!(keys.due(t0 + ONION_KEY_ROTATION_MS));
        assert_eq!(keys.next_deadline(), t0 + ONION_KEY_ROTATION_MS);

        // First rotation: k1 is published, k0 still works for the grace period.
        let t1 = t0 + ONION_KEY_ROTATION_MS;
        let k1 = OnionKey::generate(&mut OsRng);
        keys.rotate(t1, k1.clone());
        assert_eq!(keys.current().public(), k1.public());
        assert_eq!(keys.next_deadline(), t1 + ONION_KEY_GRACE_MS);
        assert!(create_to(&keys, &k1, t1).is_ok());
        assert!(create_to(&keys, &k0, t1 + ONION_KEY_GRACE_MS - 1).is_ok());
        assert_eq!(
            create_to(&keys, &k0, t1 + ONION_KEY_GRACE_MS).unwrap_err(),
            HandshakeError::UnknownOnionKey
        );
        keys.expire(t1 + ONION_KEY_GRACE_MS);
        assert_eq!(keys.accepted(t1 + ONION_KEY_GRACE_MS).1, 1);

        // Second rotation: k1 within grace, k0 (two rotations old) never.
        let t2 = t1 + ONION_KEY_ROTATION_MS;
        let k2 = OnionKey::generate(&mut OsRng);
        keys.rotate(t2, k2.clone());
        assert!(create_to(&keys, &k2, t2 + 1).is_ok());
        assert!(create_to(&keys, &k1, t2 + 1).is_ok());
        assert_eq!(
            create_to(&keys, &k0, t2 + 1).unwrap_err(),
            HandshakeError::UnknownOnionKey
        );
    }

    #[test]
    fn rotating_early_drops_an_older_previous_key_at_once() {
        let k0 = OnionKey::generate(&mut OsRng);
        let mut keys = OnionKeys::new(k0.clone(), Instant::ZERO);
        keys.rotate(Instant::from_unix_ms(10), OnionKey::generate(&mut OsRng));
        keys.rotate(Instant::from_unix_ms(20), OnionKey::generate(&mut OsRng));
        assert!(create_to(&keys, &k0, Instant::from_unix_ms(21)).is_err());
    }
}
