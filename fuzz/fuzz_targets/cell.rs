//! Cells (protocol.md 6.1): any bytes give a cell view or an error, never a panic; the header,
//! DESTROY body and CREATE/CREATED prefixes of a valid cell parse without panicking either.
#![no_main]
use globalnet::wire::cell::{Cell, CellCommand, CellHeader, DestroyBody, CELL_LEN};
use globalnet::wire::handshake::{CreateHandshake, CreatedHandshake};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cell) = Cell::new_checked(data) else {
        assert_ne!(data.len(), CELL_LEN);
        return;
    };
    let _ = (cell.circ_id(), cell.seq(), format!("{cell:?}"));
    match CellHeader::parse(&cell) {
        Ok(h) => {
            // emit writes back the same header
            let mut copy = [0u8; CELL_LEN];
            copy.copy_from_slice(data);
            Cell::new(&mut copy).emit_header(&h);
            assert_eq!(CellHeader::parse(&Cell::new(&copy)), Ok(h));
            match h.cmd {
                CellCommand::Destroy => {
                    let _ = DestroyBody::parse(cell.body());
                }
                CellCommand::Create => {
                    let _ = CreateHandshake::from_cell_body(cell.body()).map(|c| c.identity());
                }
                CellCommand::Created => {
                    let _ = CreatedHandshake::from_cell_body(cell.body()).map(|c| c.auth());
                }
                _ => {}
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
