//! What the control socket answers: the node's state as the link task last copied it, turned
//! into the typed answers of `control::proto`.

use super::*;
use crate::control::proto::ResolveAnswer;
use crate::names;

/// The link layer's state as the control socket shows it, refreshed by the link task.
#[derive(Default)]
pub(super) struct LinkSnapshot {
    pub(super) peers: Vec<PeerInfo>,
    pub(super) stats: LinkStats,
    pub(super) view: usize,
    pub(super) view_sources: usize,
    pub(super) nat: &'static str,
    pub(super) observed: Option<SocketAddr>,
    pub(super) record: bool,
    pub(super) circuits: Vec<CircuitInfo>,
    pub(super) relayed: usize,
    pub(super) circ_stats: CircuitStats,
    pub(super) path_error: Option<String>,
    pub(super) flow: FlowStats,
    pub(super) flows: usize,
    pub(super) queue_drops: u64,
    /// The kernel packets' fair queue (`flow/fq.rs`).
    pub(super) fq: crate::flow::fq::FqStats,
    /// The session packets' fair queue towards the kernel.
    pub(super) to_kernel: crate::flow::fq::FqStats,
    pub(super) foreign_prefixes: Vec<String>,
    pub(super) services: Vec<ServiceInfo>,
    /// Which service each of the services' circuits works for.
    pub(super) circuit_services: Vec<(crate::circuit::layer::CircId, [u8; 16])>,
    pub(super) sessions: Vec<SessionInfo>,
    pub(super) bootstrap: Vec<BootstrapInfo>,
    /// Why the node has no links or no circuits, in one line.
    pub(super) reason: Option<String>,
    pub(super) local_endpoints: Vec<SocketAddr>,
    /// Unix ms of the snapshot (for "since" fields).
    pub(super) at: time::Instant,
    pub(super) guards: usize,
    pub(super) guards_temporary: bool,
    pub(super) guard_save_error: Option<String>,
    pub(super) paths: crate::node::PathRelaxation,
    pub(super) exit: Option<crate::exit::gateway::ExitStats>,
    pub(super) exit_circuit: Option<crate::node::exits::ExitCircuitInfo>,
}

/// What the control socket reports.
pub(super) struct NodeState {
    pub(super) address: Ipv6Addr,
    pub(super) relay_key: String,
    pub(super) link_key: String,
    pub(super) config: Config,
    pub(super) started: Instant,
    pub(super) tun: TunCounters,
    pub(super) links: Mutex<LinkSnapshot>,
    pub(super) budget: MemoryBudget,
    pub(super) commands: mpsc::Sender<Command>,
    /// The petnames, read at start and again by [`NodeState::reload_petnames`].
    pub(super) petnames: std::sync::RwLock<names::Petnames>,
    /// The services hosted (a reload changes them).
    pub(super) hosted: Mutex<Vec<super::hosted::Hosted>>,
    /// How the last reload went.
    pub(super) reload: Mutex<super::reload::ReloadState>,
    /// The file a reload reads.
    pub(super) config_path: PathBuf,
}

impl From<&PeerInfo> for PeerAnswer {
    fn from(p: &PeerInfo) -> PeerAnswer {
        PeerAnswer {
            relay_key: p.relay_key.clone(),
            link_key: p.link_key.clone(),
            endpoint: p.endpoint.to_string(),
            direct: p.direct,
            punched: p.punched,
            punched_s: p.punched_s,
            rtt_ms: p.rtt_ms.map(tenths),
            established_s: p.established_s,
            last_handshake_s: p.last_handshake_s,
            outbound: p.outbound,
            bytes_in: p.bytes_in,
            bytes_out: p.bytes_out,
        }
    }
}

impl From<&CircuitInfo> for CircuitAnswer {
    fn from(c: &CircuitInfo) -> CircuitAnswer {
        CircuitAnswer {
            id: format!("{:x}", c.id.0),
            hops: c.hops,
            purpose: c.purpose.name().to_string(),
            age_s: c.age_s,
            state: if c.ready {
                CircuitState::Ready
            } else {
                CircuitState::Building
            },
            build_ms: c.build_ms,
            service: None,
        }
    }
}

impl From<&SessionInfo> for SessionAnswer {
    fn from(s: &SessionInfo) -> SessionAnswer {
        SessionAnswer {
            peer: s.peer.to_string(),
            role: s.role.to_string(),
            local: s.local.to_string(),
            state: s.state.to_string(),
            circuits: s.circuits,
            flows: s.flows,
            age_s: s.age_s,
        }
    }
}

/// Milliseconds rounded to a tenth, as the answers show them.
pub(super) fn tenths(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// An answer as the control socket carries it. The JSON value's object keys are sorted, which
/// keeps the bytes on the wire what they were when the answers were built by hand.
pub(super) fn to_result<T: serde::Serialize>(answer: &T) -> Result<Value, String> {
    serde_json::to_value(answer).map_err(|e| format!("internal error: {e}"))
}

impl control::Handler for NodeState {
    fn handle(&self, req: &Request) -> Answer {
        if req.cmd == Cmd::Ping {
            return self.ping(req.addr.as_deref());
        }
        if req.cmd == Cmd::Resolve {
            return self.resolve(req.name.as_deref());
        }
        if req.cmd == Cmd::Accept {
            return self.accept(req.name.as_deref());
        }
        Answer::Now(self.snapshot_answer(&req.cmd))
    }
}

impl NodeState {
    /// The petnames now (a copy of the lock's contents is not needed: readers hold it briefly).
    pub(super) fn pets(&self) -> std::sync::RwLockReadGuard<'_, names::Petnames> {
        self.petnames.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the names file and `[names] local` again (on SIGHUP, or when the file changed). A
    /// file that no longer parses (or that the dropped user may not read) keeps the old names,
    /// with the error logged: a typo must not make every petname vanish.
    pub fn reload_petnames(&self) {
        match self.config.petnames() {
            Ok(p) => {
                tracing::info!(count = p.len(), file = %self.config.names.file.display(), "petnames reloaded");
                *self.petnames.write().unwrap_or_else(|e| e.into_inner()) = p;
            }
            Err(e) => tracing::warn!("{e}; keeping the petnames read before"),
        }
    }

    pub(super) fn ping(&self, addr: Option<&str>) -> Answer {
        let Some(addr) = addr else {
            return Answer::Now(Err("ping needs an address (`addr`)".into()));
        };
        let dst = match addr.parse::<Ipv6Addr>() {
            Ok(a) if is_overlay(&a) => a,
            _ => {
                return Answer::Now(Err(format!(
                    "`{addr}` is not an overlay address; GlobalNet addresses are in fd00::/8"
                )))
            }
        };
        if dst == self.address {
            return Answer::Now(Err(
                "that is this node's own address; ping another node's address".into(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Ping {
            dst: dst.octets(),
            reply: tx,
        };
        match self.commands.try_send(cmd) {
            Ok(()) => Answer::Later(rx),
            Err(_) => Answer::Now(Err("the daemon is busy; try again".into())),
        }
    }

    pub(super) fn resolve(&self, name: Option<&str>) -> Answer {
        let Some(name) = name else {
            return Answer::Now(Err("resolve needs a name (`name`)".into()));
        };
        let found = match names::resolve_local(name, &self.pets()) {
            Ok(names::Local::Found(r)) => r,
            Ok(names::Local::Network(label)) => return self.resolve_network(name, label),
            Ok(names::Local::NotFound) => {
                return Answer::Now(Err(format!(
                    "{name}: no such name (not a petname, not a key name, and not claimed in the network)"
                )))
            }
            Err(e) => return Answer::Now(Err(format!("{name}: {e}"))),
        };
        if let Some(k) = &found.key {
            super::dns::expect_key(&self.commands, found.address, k.key());
        }
        let origin = match &found.source {
            names::Source::Petname { origin } => Some(origin.clone()),
            _ => None,
        };
        Answer::Now(to_result(&ResolveAnswer {
            name: found.name,
            address: found.address.to_string(),
            key: found.key.map(|k| k.to_string()),
            source: found.source.as_str().into(),
            origin,
        }))
    }

    /// The user accepts the key the network named for a pinned name (`globalnet name accept`).
    pub(super) fn accept(&self, name: Option<&str>) -> Answer {
        let Some(name) = name else {
            return Answer::Now(Err("accept needs a name (`name`)".into()));
        };
        let label = match names::resolve_local(name, &self.pets()) {
            Ok(names::Local::Network(label)) => label,
            Ok(_) => {
                return Answer::Now(Err(format!(
                "{name} is not a network-issued name (a petname or a key name): nothing to accept"
            )))
            }
            Err(e) => return Answer::Now(Err(format!("{name}: {e}"))),
        };
        let (tx, rx) = oneshot::channel();
        let (reply, got) = oneshot::channel();
        let cmd = Command::AcceptName {
            name: label.clone(),
            reply,
        };
        if self.commands.try_send(cmd).is_err() {
            return Answer::Now(Err("the daemon is busy; try again".into()));
        }
        tokio::spawn(async move {
            let answer = match got.await {
                Ok(Some(key)) => match super::names::key_name(&key) {
                    Some(k) => to_result(&ResolveAnswer {
                        name: format!("{label}.{}", names::SUFFIX),
                        address: k.address().to_string(),
                        key: Some(k.to_string()),
                        source: "network (accepted)".into(),
                        origin: None,
                    }),
                    None => Err("the claim's key is not usable".into()),
                },
                Ok(None) => Err(format!(
                    "{label}.{}: no conflict to accept (`globalnet resolve {label}` shows one when the network names another key than the pinned one)",
                    names::SUFFIX
                )),
                Err(_) => Err("the daemon is stopping".into()),
            };
            let _ = tx.send(answer);
        });
        Answer::Later(rx)
    }

    /// A name only the DHT can answer: the owner among its claims, after the pin.
    fn resolve_network(&self, name: &str, label: String) -> Answer {
        let (tx, rx) = oneshot::channel();
        let commands = self.commands.clone();
        let canon = format!("{label}.{}", names::SUFFIX);
        let name = name.to_string();
        tokio::spawn(async move {
            let wait = Duration::from_secs(8);
            let answer = match super::names::lookup(&commands, label, wait).await {
                names::network::NetAnswer::Owner { key, conflict } => {
                    match super::names::key_name(&key) {
                        Some(k) => {
                            let mut source = "network".to_string();
                            if let Some(other) = conflict.and_then(|o| super::names::key_name(&o)) {
                                // Shown, never used: the pinned key stays until the user accepts.
                                source = format!("network (pinned; the network now names {other})");
                            }
                            to_result(&ResolveAnswer {
                                name: canon,
                                address: k.address().to_string(),
                                key: Some(k.to_string()),
                                source,
                                origin: None,
                            })
                        }
                        None => Err(format!("{name}: the claim's key is not usable")),
                    }
                }
                names::network::NetAnswer::NoSuchName => Err(format!(
                    "{name}: no such name (not a petname, not a key name, and not claimed in the network)"
                )),
                names::network::NetAnswer::Unavailable(why) => {
                    Err(format!("{name}: could not ask the network: {why}"))
                }
            };
            let _ = tx.send(answer);
        });
        Answer::Later(rx)
    }

    pub(super) fn snapshot_answer(&self, cmd: &Cmd) -> Result<Value, String> {
        let links = self
            .links
            .lock()
            .map_err(|_| "internal error: state lock poisoned".to_string())?;
        match cmd {
            Cmd::Status => to_result(&self.status(&links)),
            Cmd::Peers => to_result(&links.peers.iter().map(PeerAnswer::from).collect::<Vec<_>>()),
            Cmd::Circuits => to_result(&self.circuits(&links)),
            Cmd::Services => to_result(&self.services(&links.services)),
            Cmd::Sessions => to_result(
                &links
                    .sessions
                    .iter()
                    .map(SessionAnswer::from)
                    .collect::<Vec<_>>(),
            ),
            // `ping` never gets here: the link task answers it (see `handle`).
            Cmd::Ping | Cmd::Resolve | Cmd::Accept | Cmd::Unknown(_) => Err(format!(
                "unknown command `{cmd}`; this daemon knows status, peers, circuits, services, sessions, ping, resolve, accept"
            )),
        }
    }

    pub(super) fn status(&self, links: &LinkSnapshot) -> StatusAnswer {
        let strings = |addrs: &[SocketAddr]| addrs.iter().map(|a| a.to_string()).collect();
        StatusAnswer {
            version: env!("CARGO_PKG_VERSION").to_string(),
            address: self.address.to_string(),
            relay_key: self.relay_key.clone(),
            link_key: self.link_key.clone(),
            interface: self.config.tun.name.clone(),
            mtu: self.config.tun.mtu,
            relay: self.config.relay_enabled(),
            peers: links.peers.len(),
            nat: links.nat.to_string(),
            observed_endpoint: links.observed.map(|e| e.to_string()),
            relay_record: links.record,
            local_endpoints: strings(&links.local_endpoints),
            bootstrap: links
                .bootstrap
                .iter()
                .map(|b| BootstrapStatus {
                    peer: b.peer.clone(),
                    addrs: strings(&b.addrs),
                    state: b.state.to_string(),
                    failing_s: b.failing_since.map(|t| links.at.saturating_since(t) / 1000),
                    tries: b.tries,
                    last_error: b.last_error.clone(),
                })
                .collect(),
            reason: links.reason.clone(),
            guards: GuardStatus {
                count: links.guards,
                temporary: links.guards_temporary,
                save_error: links.guard_save_error.clone(),
            },
            paths: crate::control::proto::PathStatus {
                public_relays: links.paths.public_relays,
                natted_vanguards: links.paths.natted_vanguards,
                relaxed: links.paths.notes.clone(),
            },
            view: ViewStatus {
                relays: links.view,
                sources: links.view_sources,
            },
            links: LinkCounts {
                datagrams_in: links.stats.datagrams_in,
                datagrams_out: links.stats.datagrams_out,
                dropped: links.stats.dropped,
                refused: links.stats.refused,
                malformed: links.stats.malformed,
                bad_records: links.stats.bad_records,
            },
            memory: MemoryStatus {
                used: self.budget.used(),
                limit: self.budget.limit(),
            },
            circuits: CircuitCounts {
                own: links.circuits.len(),
                ready: links.circuits.iter().filter(|c| c.ready).count(),
                relayed: links.relayed,
                relayed_cells: links.circ_stats.relayed_cells,
                built: links.circ_stats.built,
                build_failures: links.circ_stats.build_failures,
                creates_refused: links.circ_stats.creates_refused,
                path_error: links.path_error.clone(),
            },
            sessions: links.sessions.len(),
            services: self.hosted.lock().map_or(0, |h| h.len()),
            config: self.reload.lock().map(|r| r.status()).unwrap_or_default(),
            flows: FlowCounts {
                active: links.flows,
                to_peers: links.flow.to_peers,
                to_kernel: links.flow.to_kernel,
                refused: links.flow.refused,
                icmp_to_kernel: links.flow.icmp_to_kernel,
                dropped_from_kernel: links.flow.dropped_from_kernel,
                dropped_from_peers: links.flow.dropped_from_peers,
                foreign_sources: links.flow.foreign_sources,
                foreign_prefixes: links.foreign_prefixes.clone(),
            },
            uptime_s: self.started.elapsed().as_secs(),
            pid: std::process::id(),
            tun: TunCounts {
                packets_in: self.tun.packets_in.load(Ordering::Relaxed),
                packets_out: self.tun.packets_out.load(Ordering::Relaxed),
                icmp_replies: self.tun.icmp_replies.load(Ordering::Relaxed),
                dropped: links.flow.dropped_from_kernel + links.queue_drops,
                write_errors: self.tun.write_errors.load(Ordering::Relaxed),
                aqm_drops: links.fq.codel_drops + links.fq.overflow_drops,
                ce_marked: links.fq.marked,
                queue_peak: links.fq.peak_packets as u64,
                queue_max_sojourn_us: links.fq.max_sojourn_us,
                in_aqm_drops: links.to_kernel.codel_drops + links.to_kernel.overflow_drops,
                in_ce_marked: links.to_kernel.marked,
                in_queue_peak: links.to_kernel.peak_packets as u64,
                in_queue_max_sojourn_us: links.to_kernel.max_sojourn_us,
                offload: self.tun.offload.load(Ordering::Relaxed),
                offload_reads: self.tun.reads.load(Ordering::Relaxed),
                offload_writes: self.tun.writes.load(Ordering::Relaxed),
                read_errors: self.tun.read_errors.load(Ordering::Relaxed),
            },
            exit: links.exit.clone(),
            exit_circuit: links.exit_circuit.clone(),
        }
    }

    /// Our circuits, those of a service with its name.
    fn circuits(&self, links: &LinkSnapshot) -> Vec<CircuitAnswer> {
        let hosted = self.hosted.lock().map(|h| h.clone()).unwrap_or_default();
        links
            .circuits
            .iter()
            .map(|c| {
                let mut a = CircuitAnswer::from(c);
                a.service = links
                    .circuit_services
                    .iter()
                    .find(|(id, _)| *id == c.id)
                    .and_then(|(_, svc)| {
                        hosted
                            .iter()
                            .find(|h| h.address.octets() == *svc)
                            .map(|h| h.name.clone())
                    });
                a
            })
            .collect()
    }

    /// The services the node hosts, with the ports open on each one's address. A configured
    /// service is listed at once, published or not yet.
    pub(super) fn services(&self, hosted: &[ServiceInfo]) -> Vec<ServiceAnswer> {
        let list = self.hosted.lock().map(|h| h.clone()).unwrap_or_default();
        list.iter()
            .map(|h| {
                let s = hosted.iter().find(|s| s.address == h.address);
                ServiceAnswer {
                    name: h.name.clone(),
                    address: h.address.to_string(),
                    tcp: h.tcp.clone(),
                    udp: h.udp.clone(),
                    intro_points: s.map(|s| s.intro_points.clone()).unwrap_or_default(),
                    descriptor_age_s: s.and_then(|s| s.descriptor_age_s),
                    published: s.is_some_and(|s| s.descriptor_age_s.is_some()),
                    sessions: s.map_or(0, |s| s.sessions),
                    intro_missing: s.and_then(|s| s.intro_missing.clone()),
                    pow_effort: s.map_or(0, |s| s.pow_effort),
                    intros_with_pow: s.map_or(0, |s| s.intros_with_pow),
                }
            })
            .collect()
    }
}
