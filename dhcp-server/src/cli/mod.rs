//! The command line's tools beyond `run`, built into the binary only (the library has
//! no printing): `ctl`, the control socket's client, and `leasequery`, an RFC 4388
//! requester.

pub mod ctl;
pub mod leasequery;
