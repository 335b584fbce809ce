//! The command line's tools beyond `run`, built into the binary only (the library has
//! no printing): `ctl`, the control socket's client.

pub mod ctl;
