//! Known-answer tests for the circuit layer against tests/vectors/protocol.json (made by the
//! independent script tests/vectors/make_protocol_vectors.py): the GN-NTOR handshake, the key
//! schedule, GN-WB, and every cell on every link of a 1-hop and a 3-hop circuit in both
//! directions. Everything goes through the public API; the circuits are built with real
//! handshakes and EXTENDs, with the script's ephemeral keys fed in through the RNG.

mod cell_support;

use cell_support::{build_at, hex, hex32, seed, FixedRng, Relay};
use globalnet::circuit::{
    respond, wideblock, ClientHandshake, HopKeys, HopTarget, OnionKey, SeqStart, WbKeys,
    HOP_KEYS_LEN,
};
use globalnet::wire::cell::{Cell, CellCommand, CELL_LEN};
use globalnet::wire::handshake::{ClientExt, ServerExt};
use globalnet::wire::relay::{RelayCommand, RelayMessage};
use serde_json::Value;
use x25519_dalek::StaticSecret;

fn doc() -> Value {
    serde_json::from_str(include_str!("vectors/protocol.json")).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn keys4(v: &Value) -> [[u8; 32]; 4] {
    let a: Vec<[u8; 32]> = v.as_array().unwrap().iter().map(|k| hex32(s(k))).collect();
    a.try_into().unwrap()
}

fn hop_keys(v: &Value, bind: [u8; 32]) -> HopKeys {
    HopKeys::new(
        keys4(&v["kf"]),
        keys4(&v["kb"]),
        v["df"].as_u64().unwrap(),
        v["db"].as_u64().unwrap(),
        bind,
    )
}

#[test]
fn constants_match() {
    let c = &doc()["constants"];
    use globalnet::wire::{cell, relay};
    assert_eq!(c["CELL_LEN"], cell::CELL_LEN);
    assert_eq!(c["CELL_HEADER_LEN"], cell::CELL_HEADER_LEN);
    assert_eq!(c["CELL_BODY_LEN"], cell::CELL_BODY_LEN);
    assert_eq!(c["RELAY_HEADER_LEN"], relay::RELAY_HEADER_LEN);
    assert_eq!(c["RELAY_PAYLOAD_LEN"], relay::RELAY_PAYLOAD_LEN);
    assert_eq!(c["HOP_KEYS_LEN"], HOP_KEYS_LEN);
}

#[test]
fn gn_ntor_handshake() {
    let d = doc();
    let v = &d["circuit_handshake"];
    let i = &v["inputs"];
    let identity = hex32(s(&i["relay_identity"]));
    let onion = OnionKey::from_secret(StaticSecret::from(hex32(s(&i["onion_secret"]))));
    assert_eq!(onion.public(), &hex32(s(&i["onion_key_B"])));
    let target = HopTarget {
        identity,
        onion_key: *onion.public(),
    };
    let ext = ClientExt::parse(&hex(s(&i["client_ext_plaintext"])).try_into().unwrap()).unwrap();
    assert_eq!(
        ext,
        ClientExt {
            backward_seq_start: i["backward_seq_start"].as_u64().unwrap(),
            features: 0
        }
    );
    assert_eq!(ext.emit().to_vec(), hex(s(&i["client_ext_plaintext"])));
    assert_eq!(
        ServerExt::default().emit().to_vec(),
        hex(s(&i["server_ext_plaintext"]))
    );

    // client: CREATE
    let x = hex32(s(&i["client_ephemeral_secret_x"]));
    let (client, create) = ClientHandshake::new(&mut FixedRng::new(&[x]), &target, &ext).unwrap();
    assert_eq!(create.to_vec(), hex(s(&v["create_handshake"])));

    // relay: CREATED and keys
    let y = hex32(s(&i["relay_ephemeral_secret_y"]));
    let out = respond(
        &mut FixedRng::new(&[y]),
        &create,
        &identity,
        &[&onion],
        &ServerExt::default(),
    )
    .unwrap();
    assert_eq!(out.created.to_vec(), hex(s(&v["created_handshake"])));
    assert_eq!(out.client_ext, ext);
    let k = &v["keys"];
    let expected = hop_keys(k, hex32(s(&k["bind"])));
    assert!(
        out.keys.ct_eq(&expected),
        "relay keys differ from the vector"
    );

    // client: finish
    let (keys, server_ext) = client.finish(&out.created).unwrap();
    assert!(keys.ct_eq(&expected), "client keys differ from the vector");
    assert_eq!(server_ext, ServerExt::default());
    assert_eq!(keys.bind(), &hex32(s(&k["bind"])));
}

#[test]
fn key_schedule() {
    let d = doc();
    let v = &d["circuit_handshake"];
    let km: [u8; HOP_KEYS_LEN] = hex(s(&v["key_material"])).try_into().unwrap();
    let k = &v["keys"];
    let keys = HopKeys::from_material(&km);
    assert!(keys.ct_eq(&hop_keys(k, hex32(s(&k["bind"])))));
    assert_eq!(keys.forward_offset(), k["df"].as_u64().unwrap());
    assert_eq!(keys.backward_offset(), k["db"].as_u64().unwrap());
    // the split order of 8.2: AUTH ‖ k_sm ‖ bind ‖ Kf ‖ Kb ‖ Df ‖ Db
    assert_eq!(&km[..32], &hex(s(&k["auth"]))[..]);
    assert_eq!(&km[32..64], &hex(s(&k["k_sm"]))[..]);
    assert_eq!(&km[64..96], &hex(s(&k["bind"]))[..]);
}

#[test]
fn wideblock_layer() {
    let d = doc();
    let v = &d["wideblock"];
    let keys = WbKeys::new(keys4(&v["keys"]));
    let tw: [u8; 12] = hex(s(&v["tweak"])).try_into().unwrap();
    assert_eq!(
        tw,
        wideblock::tweak(0x0102030405060708, CellCommand::Relay as u8)
    );
    let plain = hex(s(&v["plaintext"]));
    let mut b = plain.clone();
    keys.encrypt(&tw, &mut b).unwrap();
    assert_eq!(b, hex(s(&v["ciphertext"])));
    let mut flipped = b.clone();
    keys.decrypt(&tw, &mut b).unwrap();
    assert_eq!(b, plain);
    flipped[700] ^= 1;
    keys.decrypt(&tw, &mut flipped).unwrap();
    assert_eq!(
        flipped,
        hex(s(&v["decrypt_after_flipping_bit0_of_byte700"]))
    );
}

fn cell_at(v: &Value) -> [u8; CELL_LEN] {
    hex(s(&v["cell"])).try_into().unwrap()
}

/// Build the vector's circuit with real handshakes, send its relay message forward and back, and
/// compare every cell on every link.
fn cells(name: &str) {
    let d = doc();
    let v = &d[name];
    let hops = v["hops"].as_array().unwrap();
    let n = hops.len();
    let relays: Vec<Relay> = (1..=n)
        .map(|i| {
            Relay::from_seed(
                hex32(s(&hops[i - 1]["identity"])),
                seed(&format!("relay {i} onion")),
            )
        })
        .collect();
    let mut ephemerals = Vec::new();
    for i in 1..=n {
        ephemerals.push(seed(&format!("client eph {i}")));
        ephemerals.push(seed(&format!("relay eph {i}")));
    }
    let fwd = v["forward"]["cells"].as_array().unwrap();
    let bwd = v["backward"]["cells"].as_array().unwrap();
    let ids: Vec<u32> = fwd
        .iter()
        .map(|c| c["circ_id"].as_u64().unwrap() as u32)
        .collect();
    // The vector's sequence starts (a real client draws both at random, 6.5, 6.6).
    let start = SeqStart {
        forward: v["seq_start"]["forward_counter"].as_u64().unwrap(),
        backward: v["seq_start"]["backward_W_1"].as_u64().unwrap(),
    };
    let mut circ = build_at(&mut FixedRng::new(&ephemerals), &relays, &ids, start);

    // The keys the handshakes produced are the vector's.
    for (j, h) in hops.iter().enumerate() {
        assert_eq!(
            h["backward_seq_start_W"].as_u64().unwrap(),
            if j == 0 {
                start.backward
            } else {
                globalnet::circuit::next_backward_seq_start(
                    hops[j - 1]["backward_seq_start_W"].as_u64().unwrap(),
                    hops[j - 1]["db"].as_u64().unwrap(),
                )
            }
        );
    }

    let plain = hex(s(&v["relay_message_plaintext"]));
    let msg = RelayMessage::new_checked(&plain).unwrap();
    assert_eq!(msg.command(), Ok(RelayCommand::Data));
    let payload = msg.payload().to_vec();

    // Forward: bring the client counter to the vector's value with DROP cells, then send.
    let counter = v["forward"]["client_counter"].as_u64().unwrap();
    assert_eq!(
        counter,
        start
            .forward
            .wrapping_add(v["forward"]["cells_before"].as_u64().unwrap())
    );
    // the build took one RELAY_EARLY (EXTEND) per hop after the first
    assert_eq!(
        circ.client.next_forward_seq(),
        start.forward.wrapping_add(n as u64 - 1)
    );
    while circ.client.next_forward_seq() != counter {
        let mut c = [0u8; CELL_LEN];
        circ.client.send(RelayCommand::Drop, &[], &mut c).unwrap();
        assert_eq!(circ.forward_all(&mut c).0, RelayCommand::Drop);
    }
    let mut cell = [0u8; CELL_LEN];
    circ.client
        .send(RelayCommand::Data, &payload, &mut cell)
        .unwrap();
    for (j, expected) in fwd.iter().enumerate() {
        assert_eq!(
            cell.to_vec(),
            cell_at(expected).to_vec(),
            "{name} forward cell on link {}",
            s(&expected["link"])
        );
        assert_eq!(Cell::new(&cell).seq(), expected["seq"].as_u64().unwrap());
        match circ.hops[j].forward(&mut cell).unwrap() {
            globalnet::circuit::Forward::Relayed => assert!(j + 1 < n),
            globalnet::circuit::Forward::Delivered { early, message } => {
                assert!(!early && j + 1 == n);
                assert_eq!(&message.as_bytes()[..], &plain[..]);
            }
            other => panic!("{other:?}"),
        }
    }

    // The link frame of the first forward cell carries exactly that cell after its 40-byte header.
    let frame = hex(s(&v["link_frame_of_first_forward_cell"]));
    assert_eq!(frame.len(), 40 + CELL_LEN);
    assert_eq!(&frame[40..], &cell_at(&fwd[0])[..]);

    // Backward: the last hop originates, the others add their layers, the client removes them.
    let mut cell = [0u8; CELL_LEN];
    circ.hops[n - 1]
        .originate(RelayCommand::Data, &payload, &mut cell)
        .unwrap();
    let origin = v["backward"]["origin_seq_at_last_hop"].as_u64().unwrap();
    assert_eq!(
        Cell::new(&cell).seq(),
        origin.wrapping_add(hops[n - 1]["db"].as_u64().unwrap())
    );
    for (k, expected) in bwd.iter().enumerate() {
        assert_eq!(
            cell.to_vec(),
            cell_at(expected).to_vec(),
            "{name} backward cell on link {}",
            s(&expected["link"])
        );
        let j = n - 1 - k; // the hop that sent it
        if j > 0 {
            circ.hops[j - 1].backward(&mut cell).unwrap();
        }
    }
    let m = circ.client.receive(&mut cell).unwrap();
    assert_eq!(&m.as_bytes()[..], &plain[..]);
}

#[test]
fn cells_one_hop() {
    cells("cells_1_hop");
}

#[test]
fn cells_three_hops() {
    cells("cells_3_hops");
}
