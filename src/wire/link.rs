//! The link frame (docs/protocol.md section 4.2). (Being written for issue #4.)
