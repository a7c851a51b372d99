//! Test tool: floods a node with valid-looking WireGuard handshake initiations, each from a fresh
//! static key and a fresh UDP source port, plus junk datagrams. Used by the netns tests to show
//! that a flood stays within the victim's memory budget. Only ever aimed at test namespaces.
//!
//! `handshake_flood --target IP:PORT --target-key HEX --seconds S [--rate PER_SECOND]`

use boringtun::noise::{Tunn, TunnResult};
use rand::rngs::OsRng;
use rand::RngCore;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use x25519_dalek::{PublicKey, StaticSecret};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: handshake_flood --target IP:PORT --target-key HEX --seconds S [--rate N]";
    let target: SocketAddr = arg(&args, "--target")
        .and_then(|s| s.parse().ok())
        .expect(usage);
    let key_hex = arg(&args, "--target-key").expect(usage);
    let seconds: u64 = arg(&args, "--seconds")
        .and_then(|s| s.parse().ok())
        .expect(usage);
    let rate: u64 = arg(&args, "--rate")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).expect("hex key");
    }
    let target_key = PublicKey::from(key);
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let junk_socket = UdpSocket::bind(bind).expect("socket");
    let start = Instant::now();
    let (mut sent, mut junk) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(seconds) {
        // A handshake initiation from a brand-new key and a brand-new source port.
        let secret = StaticSecret::random_from_rng(OsRng);
        let mut tunn = Tunn::new(secret, target_key, None, None, OsRng.next_u32() >> 8, None);
        if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut buf, true) {
            if let Ok(s) = UdpSocket::bind(bind) {
                if s.send_to(init, target).is_ok() {
                    sent += 1;
                }
            }
        }
        // And some junk.
        let len = (OsRng.next_u32() % 1400) as usize + 1;
        OsRng.fill_bytes(&mut buf[..len]);
        if junk_socket.send_to(&buf[..len], target).is_ok() {
            junk += 1;
        }
        let due = start + Duration::from_micros(1_000_000 * (sent + 1) / rate.max(1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    println!("sent {sent} initiations and {junk} junk datagrams in {seconds} s");
}
