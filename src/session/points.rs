//! The intro-point and rendezvous-point roles at the last hop of other people's circuits (10.6):
//! relay messages in, the role tables ([`crate::session::roles`]) decide, answers out.

use crate::session::ctx::SessionCtx;
use crate::session::layer::SessionLayer;
use crate::session::roles::{
    status, status_body, IntroPointRole, IntroduceOutcome, RendezvousOutcome, RendezvousRole,
};
use crate::time::Instant;
use crate::wire::relay::RelayCommand as C;

impl SessionLayer {
    /// A relay message at the last hop of someone else's circuit: the intro-point and
    /// rendezvous-point roles (10.6).
    pub fn on_last_hop(
        &mut self,
        ctx: &mut impl SessionCtx,
        now: Instant,
        slot: u64,
        cmd: u8,
        payload: &[u8],
    ) {
        let budget = ctx.budget().clone();
        let intro = self
            .intro_role
            .get_or_insert_with(|| IntroPointRole::new(budget.clone()));
        let intro_holds = intro.holds(slot);
        let rend = self
            .rend_role
            .get_or_insert_with(|| RendezvousRole::new(budget));
        let rend_holds = rend.holds(slot);
        let has_role = intro_holds || rend_holds;
        if !self.hooks.mute_intro_keys.is_empty()
            && self.intro_role.as_ref().is_some_and(|r| {
                r.key_of(slot)
                    .is_some_and(|k| self.hooks.mute_intro_keys.contains(&k))
            })
        {
            return;
        }
        match C::try_from(cmd).ok() {
            Some(C::EstablishIntro) => {
                let up = ctx.relayed_upstream(slot);
                // A registered circuit may ask again (10.6.1, the service's check): the role
                // answers EXISTS while it holds the registration, after the signature checks.
                let code = match (rend_holds, ctx.relayed_bind(slot), up) {
                    (false, Some(bind), Some(up)) => {
                        self.intro_role.as_mut().map_or(status::REFUSED, |r| {
                            r.establish(now, slot, up, &bind, payload)
                        })
                    }
                    _ => status::REFUSED,
                };
                let _ = ctx.reply(slot, C::IntroEstablished, &status_body(code));
                // Registrations dropped for memory: closing their circuits tells their services
                // to register elsewhere.
                let evicted = self
                    .intro_role
                    .as_mut()
                    .map(|r| r.take_evicted())
                    .unwrap_or_default();
                for s in evicted {
                    ctx.close_relayed(now, s);
                }
            }
            Some(C::Introduce1) => {
                let up = ctx.relayed_upstream(slot);
                let outcome = match (has_role, up) {
                    (false, Some(up)) => self
                        .intro_role
                        .as_mut()
                        .map_or(IntroduceOutcome::Refuse(status::REFUSED), |r| {
                            r.introduce(now, slot, up, payload)
                        }),
                    _ => IntroduceOutcome::Refuse(status::REFUSED),
                };
                let code = match outcome {
                    IntroduceOutcome::Forward { service_slot } => {
                        if self.hooks.replay_introduce2 {
                            let _ = ctx.reply(service_slot, C::Introduce2, payload);
                        }
                        match ctx.reply(service_slot, C::Introduce2, payload) {
                            Ok(()) => status::OK,
                            Err(_) => status::UNKNOWN,
                        }
                    }
                    IntroduceOutcome::Refuse(c) => c,
                };
                let _ = ctx.reply(slot, C::IntroduceAck, &status_body(code));
            }
            Some(C::EstablishRendezvous) => {
                let code = if has_role {
                    status::REFUSED
                } else {
                    self.rend_role
                        .as_mut()
                        .map_or(status::REFUSED, |r| r.establish(now, slot, payload))
                };
                let _ = ctx.reply(slot, C::RendezvousEstablished, &status_body(code));
            }
            Some(C::Rendezvous1) => {
                let outcome = if has_role {
                    RendezvousOutcome::Destroy
                } else {
                    self.rend_role
                        .as_mut()
                        .map_or(RendezvousOutcome::Destroy, |r| {
                            r.rendezvous1(now, slot, payload)
                        })
                };
                match outcome {
                    RendezvousOutcome::Splice {
                        client_slot,
                        rendezvous2,
                    } => {
                        let sent = ctx.reply(client_slot, C::Rendezvous2, &rendezvous2);
                        if sent.is_err() || ctx.splice(client_slot, slot).is_err() {
                            ctx.close_relayed(now, slot);
                        }
                    }
                    RendezvousOutcome::Destroy => ctx.close_relayed(now, slot),
                }
            }
            _ => {}
        }
    }

    /// A relayed circuit that ended here is gone: the roles forget it.
    pub fn on_relayed_closed(&mut self, _now: Instant, slot: u64) {
        if let Some(r) = self.intro_role.as_mut() {
            r.closed(slot);
        }
        if let Some(r) = self.rend_role.as_mut() {
            r.closed(slot);
        }
    }
}
