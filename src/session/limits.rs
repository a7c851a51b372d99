//! Limits and timers of the session layer, in one place: the client and service sides share
//! several (docs/protocol.md section 10 gives the reasons for most).

use crate::time::Millis;

/// Intro points a service keeps.
pub const NUM_INTRO_POINTS: usize = 3;

/// How long a new service waits for all its intro points before publishing fewer.
pub const FIRST_DESC_WAIT_MS: Millis = 5_000;

/// With several services hosted, each one's first descriptor goes out this long (at most,
/// uniformly at random, drawn per service) after it would have: services started together would
/// otherwise publish together (threat-model 4.2a). A client of a new service waits this much more.
pub const FIRST_PUBLISH_SPREAD_MS: Millis = 30_000;

/// Intro point lifetime bounds (rotation, 10.6).
pub const INTRO_POINT_LIFETIME_MIN_MS: Millis = 64_800_000;

/// Upper bound of the intro point lifetime.
pub const INTRO_POINT_LIFETIME_MAX_MS: Millis = 86_400_000;

/// Introductions after which an intro point is rotated.
pub const INTRO_MAX_INTRODUCTIONS: u64 = 16_384;

/// Introductions a service acts on per second, and the burst.
pub const SERVICE_INTRO_RATE: (f64, f64) = (10.0, 100.0);

/// Intro points a client tries before giving up.
pub const INTRO_ATTEMPTS: usize = 3;

/// An introduction must finish this long after it started.
pub const REND_TIMEOUT_MS: Millis = 20_000;

/// A JOIN the service has not answered this long after it started is dropped and another
/// spare joined: a service that cannot find the rendezvous point's record answers nothing, and
/// the pending join kept the session without a spare for 20 s (netns: the session's last
/// circuit then died with no spare joined). Above a join's usual 0.1-0.5 s plus a record
/// lookup by the service.
pub const JOIN_TIMEOUT_MS: Millis = 8_000;

/// After INTRODUCE_ACK, the service's RENDEZVOUS1 is waited for this long before another intro
/// point is tried too (an intro point acknowledges once it passed the introduction on; a relay
/// that died on the service's side of it loses it silently).
pub const REND_AFTER_ACK_TIMEOUT_MS: Millis = 3_000;

/// What a relay-record lookup is taken to cost before this node has timed one of its own
/// (a 3-hop circuit to a last hop that runs the lookup: about 3 s at 1,000 nodes, issue #25).
pub const RELAY_LOOKUP_PRIOR_MS: Millis = 5_000;

/// The longest wait after INTRODUCE_ACK (the base wait plus a measured relay-record lookup):
/// the attempt lingers `REND_LINGER_MS` anyway, this only delays the next one.
pub const REND_AFTER_ACK_MAX_MS: Millis = 12_000;

/// Once this node has measured how long its acknowledged introductions wait for RENDEZVOUS2,
/// the wait is [`INTRO_STEP_BUILDS`] times that (a moving average), no less than this and no
/// more than the base wait plus a measured relay-record lookup (at most
/// [`REND_AFTER_ACK_MAX_MS`]): a lost session's new introduction through an intro
/// point whose circuit to the service just died is moved on from sooner (issue #20 item 5).
pub const REND_AFTER_ACK_MIN_MS: Millis = 1_500;

/// ... and an attempt that waited that long stays open beside the next one until this long
/// after its acknowledgement (a slow service still gets through).
pub const REND_LINGER_MS: Millis = 15_000;

/// An e2e PING unanswered while a later frame's PONG came back on its circuit is sent again
/// at most this often (`session/client/pings.rs`).
pub const MAX_PING_RESENDS: u8 = 3;

/// An e2e PING waits this long for its PONG: as long as its session may take to open
/// ([`SESSION_SETUP_TIMEOUT_MS`]: a first PING waits for the introduction), then 10 s for the
/// round trip and its resends. It was 30 s, less than the setup: a session that opened after
/// 30 s answered a PING already forgotten (issue #25).
pub const PING_TIMEOUT_MS: Millis = SESSION_SETUP_TIMEOUT_MS + 10_000;

/// A descriptor lookup is given up after this long.
pub const LOOKUP_TIMEOUT_MS: Millis = 30_000;

/// A new session that is not open this long after its first packet gives up (its queued
/// packets are answered unreachable). Until then failed introductions are retried with a fresh
/// descriptor: a service replaces intro points it lost within seconds, so the next revision
/// usually works.
pub const SESSION_SETUP_TIMEOUT_MS: Millis = 40_000;

/// The first wait before looking the descriptor up again after every intro point failed;
/// doubles each round up to [`INTRO_ROUND_DELAY_MAX_MS`].
pub const INTRO_ROUND_DELAY_MS: Millis = 1_000;
/// While a session made again, or past its first round, cannot be set up with the cached
/// descriptor, a refresh that brought nothing newer is followed by another after this long
/// (one lookup at a time).
pub const DESC_REFRESH_RETRY_MS: Millis = 1_000;
/// A descriptor refresh unanswered this long gets a second one beside it (at most two).
pub const DESC_REFRESH_OVERLAP_MS: Millis = 4_000;

/// The longest wait between rounds.
pub const INTRO_ROUND_DELAY_MAX_MS: Millis = 8_000;

/// An intro point that is not established this long after its circuit was started (a lost
/// ESTABLISH_INTRO or a circuit stuck in extension) is replaced.
pub const INTRO_ESTABLISH_TIMEOUT_MS: Millis = 20_000;

/// A service asks each established intro point whether it still holds its registration (it sends
/// ESTABLISH_INTRO again; 10.6.1) when it has not heard from it for this long ...
pub const INTRO_CHECK_MS: Millis = 10_000;

/// ... again this long after the last ask while no answer comes (one lost cell is not a lost
/// registration) ...
pub const INTRO_CHECK_RESEND_MS: Millis = 2_500;

/// ... and ends the circuit (it is rebuilt to the same relay) when nothing came back this long
/// after the first ask. Well above a loaded 4-hop round trip, so a busy intro point under an
/// INTRODUCE1 flood is not given up.
pub const INTRO_CHECK_DEAD_MS: Millis = 7_500;

/// A relay on an established intro circuit fell under suspicion (a session circuit through it
/// went silent, or our link to it went down): the service asks the intro point at once, again
/// every [`INTRO_QUICK_RESEND_MS`], and ends the circuit (it is rebuilt) when nothing came back
/// this long after the first ask. As the session's silence verdict (10.8): a 4-hop round trip
/// is well under it, one lost cell is not a death. A wrong verdict costs a rebuild under the
/// same key, which descriptors keep listing.
pub const INTRO_QUICK_DEAD_MS: Millis = 2_000;

/// See [`INTRO_QUICK_DEAD_MS`].
pub const INTRO_QUICK_RESEND_MS: Millis = 500;

/// An intro circuit rebuilt to an intro point that is itself suspect (it was on a circuit
/// that went silent, most often behind the relay that died) is given this long to be
/// established before the intro point is replaced, instead of [`INTRO_ESTABLISH_TIMEOUT_MS`]:
/// a live one answers within a circuit build, a dead one is replaced soon.
pub const INTRO_DOUBT_ESTABLISH_MS: Millis = 2_500;

/// A service's circuit to an intro point that died is rebuilt to the same relay this many
/// times (until it is established again) before the intro point is replaced.
pub const INTRO_REBUILDS: u8 = 2;

/// A service's circuit to a client's rendezvous point is built this many times at most (a
/// relay on the first path may have died).
pub const SERVICE_REND_TRIES: u8 = 2;

/// A client session that lost its last circuit is made again at once if a flow used it this
/// recently.
pub const RESUME_ACTIVE_MS: Millis = 10_000;

/// After a failed descriptor publication, the next try.
pub const PUBLISH_RETRY_MS: Millis = 10_000;

/// A descriptor for an epoch other than the current one goes out this long after the current
/// epoch's (uniformly at random in the range), so that storage nodes and last hops do not see a
/// service's two blinded keys arrive together (12.6).
pub const DESC_SPREAD_MS: (Millis, Millis) = (5_000, 120_000);

/// The periodic republication comes up to this much before `DESC_REPUBLISH_S` (at random), so
/// that its time does not tie a service's epochs either.
pub const DESC_REPUBLISH_JITTER_MS: Millis = 900_000;

/// A revision after the first of a run is up to this much below the time it is made (and
/// still above the previous one): revisions of two epochs made at once do not match.
pub const DESC_REVISION_JITTER_MS: Millis = 60_000;

/// The last hops of a service's publications it remembers, to keep the records of two epochs
/// off one relay (12.6).
pub const DESC_VIA_MAX: usize = 32;

/// Joined, unused circuits a session keeps for new flows.
pub const SESSION_SPARE_CIRCUITS: usize = 1;

/// ... and while a flow used it within `RESUME_ACTIVE_MS`: the rendezvous point of one spare
/// may be a relay of the service's half of the flow's circuit (the client cannot know the
/// service's guard and vanguards), and that relay's death would take both; a second spare at
/// another rendezvous point keeps the session (issue #20 item 5).
pub const BUSY_SESSION_SPARE_CIRCUITS: usize = 2;

/// A session is renewed (new introduction) after this long.
pub const SESSION_MAX_AGE_MS: Millis = 86_400_000;

/// Sessions per node, both roles.
pub const MAX_SESSIONS: usize = 4096;

/// Introductions a service has in progress (rendezvous not yet joined).
pub const MAX_PENDING_INTRODUCTIONS: usize = 64;

/// Flows a session tracks (the least recently used is forgotten first).
pub const MAX_FLOWS_PER_SESSION: usize = 256;

/// Circuits one session may hold (flows share circuits beyond it).
pub const MAX_SESSION_CIRCUITS: usize = 16;

/// Packets queued per destination while a session is made.
pub const MAX_QUEUED_PACKETS: usize = 32;

/// Descriptors a client caches.
pub const MAX_CACHED_DESCRIPTORS: usize = 1024;

/// Full service keys names gave for addresses, kept at most (the oldest goes first).
pub const MAX_EXPECTED_KEYS: usize = 4096;

/// A circuit we sent on that has sent nothing back for this long gets an e2e PING (the silence
/// starts; 10.8). Above a loaded circuit's round trip, so a busy circuit is rarely probed.
pub const CIRCUIT_PROBE_AFTER_MS: Millis = 600;

/// ... another PING this long after the last while the silence lasts (one lost PING or PONG is
/// not a dead path) ...
pub const CIRCUIT_REPROBE_MS: Millis = 500;

/// ... and after this long with nothing back at all the path is dead: its flows move to the
/// spare at once. The inner TCP retransmits about 0.2, 0.6, 1.4 and 3.0 s into an outage; a
/// path replaced at 2.0 s (the node wakes at this deadline, not on a tick) lets the 3.0 s
/// retransmission through, so a stall stays near 3 s.
pub const CIRCUIT_DEAD_AFTER_MS: Millis = 2_000;

/// While a flow of the session carried a packet within `RESUME_ACTIVE_MS`, a spare not heard
/// from for this long gets an e2e PING (kept warm: a spare whose path died is found before a flow
/// moves onto it, and replaced). One PING per this interval per busy session.
pub const SPARE_WARM_MS: Millis = 5_000;

/// A flow unused this long is forgotten (its circuit goes back to being a spare).
pub const FLOW_IDLE_MS: Millis = 300_000;

/// A session circuit that sent a frame back this recently proves its relays alive: when
/// another circuit of the session dies of silence, those relays are not made suspect.
pub const HEARD_ALIVE_MS: Millis = 1_000;

/// Relays on a circuit that stopped answering are avoided for this long.
pub const SUSPECT_MS: Millis = 120_000;
/// The guard of a session circuit that stopped answering is left out of new session paths for
/// this long while another guard is usable (or until a link to it comes up): longer than its
/// link takes to be declared dead (about 4 s), short enough that a live guard (a middle relay
/// died) is soon used again. Not saved; guard choice itself is untouched (threat-model 3.1).
pub const SILENT_GUARD_MS: Millis = 15_000;

/// An introduction whose two circuits are not both ready by now is retried elsewhere (and an
/// INTRODUCE1 not acknowledged this long after it went out). The bound until this node has
/// measured its own introductions; then [`INTRO_STEP_BUILDS`] times the usual time its two
/// circuits take, no less than [`INTRO_STEP_MIN_MS`].
pub const INTRO_STEP_TIMEOUT_MS: Millis = 5_000;

/// The step timeout in units of the measured time an introduction's circuits take to be ready
/// (a moving average): a step through a relay that just died is given up as soon as it is
/// clearly late, not after the fixed bound (issue #20 item 5: a lost session's new
/// introduction through a dead guard waited the whole 5 s).
pub const INTRO_STEP_BUILDS: u64 = 3;

/// The shortest step timeout, whatever was measured (a loaded node's builds vary).
pub const INTRO_STEP_MIN_MS: Millis = 2_000;

/// Pre-built client stems (guard, middle), extended to intro points.
pub const CLIENT_POOL_STEMS: usize = 2;

/// Pre-built service stems (guard, vanguard, middle), extended to rendezvous points.
pub const SERVICE_POOL_STEMS: usize = 4;

/// Memory charged per session.
pub(in crate::session) const SESSION_COST: usize = 16 * 1024;

/// Memory charged per cached descriptor.
pub(in crate::session) const DESC_CACHE_COST: usize = 1200;

/// Paths drawn to find one without a suspect relay.
pub(in crate::session) const SUSPECT_PATH_TRIES: usize = 8;
/// Paths drawn for a session circuit built from scratch; the one sharing fewest relays with the
/// session's other circuits is built.
pub(in crate::session) const FRESH_PATH_DRAWS: usize = 4;

/// A relay whose link to us went down is avoided in new paths for this long (or until a link to
/// it is up again): its record outlives it in every view, and an EXTEND to it fails only after
/// the extending relay's dial times out.
pub(in crate::session) const LINK_DOWN_SUSPECT_MS: Millis = SUSPECT_MS;

/// Intro circuits are rebuilt no faster than this after a failure.
pub(in crate::session) const INTRO_RETRY_MS: Millis = 2_000;
