//! Endpoints, contacts and relay records (docs/protocol.md section 5). (Being written for issue #4.)
