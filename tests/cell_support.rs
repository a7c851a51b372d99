//! Helpers shared by the `cell_*` tests: deterministic randomness, the vector seeds, and building
//! real circuits (every handshake and EXTEND through the public API) between in-memory relays.
#![allow(dead_code)]

use globalnet::circuit::{
    respond, ClientCircuit, Forward, HopTarget, OnionKey, RelayHandshake, RelayHop, SeqStart,
};
use globalnet::wire::cell::{Cell, CellCommand, CELL_LEN};
use globalnet::wire::handshake::ServerExt;
use globalnet::wire::relay::{Extend, RelayCommand, EXTEND_LINK_SPEC_LEN};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;

/// An "RNG" that hands out queued 32-byte values (to reproduce the vector script's ephemerals),
/// then falls back to a seeded generator.
pub struct FixedRng {
    queue: Vec<[u8; 32]>,
    fallback: rand::rngs::StdRng,
}

impl FixedRng {
    pub fn new(values: &[[u8; 32]]) -> Self {
        use rand::SeedableRng;
        FixedRng {
            queue: values.iter().rev().copied().collect(),
            fallback: rand::rngs::StdRng::seed_from_u64(1),
        }
    }
}

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.fallback.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.fallback.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        match self.queue.pop() {
            Some(v) if dest.len() == 32 => dest.copy_from_slice(&v),
            _ => self.fallback.fill_bytes(dest),
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedRng {}

/// The vector script's `seed(name)`.
pub fn seed(name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"globalnet test vector seed: ");
    h.update(name.as_bytes());
    h.finalize().into()
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn hex32(s: &str) -> [u8; 32] {
    hex(s).try_into().unwrap()
}

/// One simulated relay: identity and onion key.
pub struct Relay {
    pub identity: [u8; 32],
    pub onion: OnionKey,
}

impl Relay {
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut identity = [0u8; 32];
        rng.fill_bytes(&mut identity);
        Relay {
            identity,
            onion: OnionKey::generate(rng),
        }
    }

    pub fn from_seed(identity: [u8; 32], onion_secret: [u8; 32]) -> Self {
        Relay {
            identity,
            onion: OnionKey::from_secret(StaticSecret::from(onion_secret)),
        }
    }

    pub fn target(&self) -> HopTarget {
        HopTarget {
            identity: self.identity,
            onion_key: *self.onion.public(),
        }
    }

    pub fn respond<R: RngCore + CryptoRng>(&self, rng: &mut R, create: &[u8]) -> RelayHandshake {
        respond(
            rng,
            create,
            &self.identity,
            &[&self.onion],
            &ServerExt::default(),
        )
        .unwrap()
    }
}

/// A built circuit: the client and the relay state at each hop, plus the circuit id on each link
/// (`ids[0]` client–hop 1, `ids[j]` hop j–hop j+1).
pub struct Built {
    pub client: ClientCircuit,
    pub hops: Vec<RelayHop>,
    pub ids: Vec<u32>,
}

impl Built {
    /// Send `cell` (a forward cell from the client) through every hop. Returns the delivered
    /// relay message (command, payload) at the last hop.
    pub fn forward_all(&mut self, cell: &mut [u8; CELL_LEN]) -> (RelayCommand, Vec<u8>) {
        let n = self.hops.len();
        for (j, hop) in self.hops.iter_mut().enumerate() {
            match hop.forward(cell).unwrap() {
                Forward::Relayed => assert!(j + 1 < n),
                Forward::Delivered { message, .. } => {
                    assert_eq!(j + 1, n);
                    return (message.command().unwrap(), message.payload().to_vec());
                }
                other => panic!("hop {j}: {other:?}"),
            }
        }
        panic!("not delivered");
    }

    /// Send a cell originated at the last hop back to the client, through every hop.
    pub fn backward_all(&mut self, cell: &mut [u8; CELL_LEN]) -> (RelayCommand, Vec<u8>) {
        let n = self.hops.len();
        for hop in self.hops[..n - 1].iter_mut().rev() {
            hop.backward(cell).unwrap();
        }
        let m = self.client.receive(cell).unwrap();
        (m.command().unwrap(), m.payload().to_vec())
    }

    /// Extend by one hop to `relay`, on circuit id `id` on the new link; `rng` supplies the
    /// client's and the relay's ephemerals in that order.
    pub fn extend<R: RngCore + CryptoRng>(&mut self, rng: &mut R, relay: &Relay, id: u32) {
        let mut cell = [0u8; CELL_LEN];
        self.client
            .extend(
                rng,
                &relay.target(),
                &[0u8; EXTEND_LINK_SPEC_LEN],
                &mut cell,
            )
            .unwrap();
        assert_eq!(Cell::new(&cell).command(), Ok(CellCommand::RelayEarly));
        let n = self.hops.len();
        let mut create = [0u8; 180];
        for (j, hop) in self.hops.iter_mut().enumerate() {
            match hop.forward(&mut cell).unwrap() {
                Forward::Relayed => assert!(j + 1 < n),
                Forward::Delivered { early, message } => {
                    assert!(early);
                    assert_eq!(message.command(), Ok(RelayCommand::Extend));
                    let ext = Extend::new_checked(message.payload()).unwrap();
                    create.copy_from_slice(ext.create_handshake());
                }
                other => panic!("hop {j}: {other:?}"),
            }
        }
        let last = self.hops.last_mut().unwrap();
        last.begin_extend(true).unwrap();
        let hs = relay.respond(rng, &create);
        let created = hs.created;
        self.hops.push(RelayHop::from_handshake(hs, id));
        let last = &mut self.hops[n - 1];
        last.finish_extend(&created, id, &mut cell).unwrap();
        for hop in self.hops[..n - 1].iter_mut().rev() {
            hop.backward(&mut cell).unwrap();
        }
        let m = self.client.receive(&mut cell).unwrap();
        assert_eq!(m.command(), Ok(RelayCommand::Extended));
        let payload = m.payload().to_vec();
        self.client.on_extended(&payload).unwrap();
        self.ids.push(id);
    }
}

/// Build a circuit through `relays` (real handshakes), with circuit ids `ids` (one per link) and
/// random sequence starts.
pub fn build<R: RngCore + CryptoRng>(rng: &mut R, relays: &[Relay], ids: &[u32]) -> Built {
    let start = SeqStart::random(rng);
    build_at(rng, relays, ids, start)
}

/// [`build`] with given sequence starts.
pub fn build_at<R: RngCore + CryptoRng>(
    rng: &mut R,
    relays: &[Relay],
    ids: &[u32],
    start: SeqStart,
) -> Built {
    let mut cell = [0u8; CELL_LEN];
    let mut client =
        ClientCircuit::create_at(rng, ids[0], &relays[0].target(), start, &mut cell).unwrap();
    assert_eq!(Cell::new(&cell).command(), Ok(CellCommand::Create));
    let hs = relays[0].respond(rng, &Cell::new(&cell).body()[..180]);
    let mut reply = [0u8; CELL_LEN];
    globalnet::wire::cell::emit_plain_cell(
        &mut reply,
        &globalnet::wire::cell::CellHeader {
            circ_id: ids[0],
            cmd: CellCommand::Created,
            seq: 0,
        },
        &hs.created,
    );
    client.on_created(&reply).unwrap();
    let mut built = Built {
        client,
        hops: vec![RelayHop::from_handshake(hs, ids[0])],
        ids: vec![ids[0]],
    };
    for (relay, &id) in relays.iter().zip(ids).skip(1) {
        built.extend(rng, relay, id);
    }
    built
}

/// Distinct random circuit ids, one per link.
pub fn random_ids<R: RngCore>(rng: &mut R, n: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = Vec::new();
    while ids.len() < n {
        let id = rng.next_u32();
        if id != 0 && !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}
