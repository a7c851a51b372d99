//! docs/protocol.md: see the module's sections. (Being written for issue #5.)
