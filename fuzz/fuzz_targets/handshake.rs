//! CREATE and CREATED handshake bytes (protocol.md 8.2): any bytes give a checked view or an
//! error, never a panic.
#![no_main]
use globalnet::wire::handshake::{
    CreateHandshake, CreatedHandshake, CREATED_HS_LEN, CREATE_HS_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match CreateHandshake::new_checked(data) {
        Ok(c) => {
            assert_eq!(data.len(), CREATE_HS_LEN);
            let _ = (
                c.identity(),
                c.onion_key(),
                c.client_key(),
                format!("{c:?}"),
            );
            assert_eq!(c.associated_data().len() + c.enc_ext().len(), CREATE_HS_LEN);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match CreatedHandshake::new_checked(data) {
        Ok(c) => {
            assert_eq!(data.len(), CREATED_HS_LEN);
            let _ = (c.relay_key(), c.auth(), format!("{c:?}"));
            assert_eq!(
                c.associated_data().len() + c.enc_ext().len(),
                CREATED_HS_LEN
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = CreateHandshake::from_cell_body(data);
    let _ = CreatedHandshake::from_cell_body(data);
});
