//! The circuit layer (DESIGN.md section 5, docs/protocol.md sections 6-8). Being written for issue #5.
