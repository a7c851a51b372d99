//! Inner packets the in-process tests send through gn0, shared by the sim_* test files.

/// A UDP packet (checksum left zero: nothing on the way checks it).
pub fn udp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, body: &[u8]) -> Vec<u8> {
    let len = 8 + body.len();
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(body);
    p
}
