//! Hosting services over time: taking one down while the others run (a reload), and which of
//! our circuits serve which service (for `globalnet circuits`). The services' protocol work is
//! in `service`.

use crate::circuit::layer::CircId;
use crate::session::ctx::SessionCtx;
use crate::session::layer::{Owner, SessionLayer};
use crate::time::Instant;

impl SessionLayer {
    /// Stops hosting the service at `address`: its intro circuits, rendezvous circuits and
    /// sessions close, its descriptors are no longer refreshed (those published expire); every
    /// other service keeps its circuits and sessions. `false` if it was not hosted.
    pub fn remove_service(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        address: [u8; 16],
    ) -> bool {
        let Some(k) = self.services.iter().position(|s| s.address == address) else {
            return false;
        };
        self.services.remove(k);
        let mut ours: Vec<CircId> = self
            .owners
            .iter()
            .filter(|(_, o)| o.service() == Some(address))
            .map(|(id, _)| *id)
            .collect();
        ours.sort_unstable_by_key(|id| id.0);
        for id in ours {
            self.owners.remove(&id);
            self.pending_r1.remove(&id);
            ctx.destroy(now, id);
        }
        true
    }

    /// The service (address) each of our circuits serving one works for: intro, rendezvous and
    /// session circuits.
    pub fn circuit_services(&self) -> Vec<(CircId, [u8; 16])> {
        self.owners
            .iter()
            .filter_map(|(id, o)| o.service().map(|s| (*id, s)))
            .collect()
    }
}

impl Owner {
    /// The service a circuit of ours works for, if any.
    pub(in crate::session) fn service(&self) -> Option<[u8; 16]> {
        match *self {
            Owner::Intro { svc }
            | Owner::ServiceRend { svc, .. }
            | Owner::ServiceCirc { svc, .. } => Some(svc),
            _ => None,
        }
    }
}

impl SessionLayer {
    /// The client identity's seed (the default service's key), if set.
    pub(crate) fn client_seed(&self) -> Option<[u8; 32]> {
        self.client_seed
    }
}
