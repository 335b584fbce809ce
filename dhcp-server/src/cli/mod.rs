//! The command line's tools beyond `run`, built into the binary only (the library has
//! no printing): `ctl`, the control socket's client, `leasequery`, an RFC 4388
//! requester, and `history`, the lease history's questions; `docs` writes the man pages
//! and shell completions the Debian package ships.

pub mod ctl;
pub mod docs;
pub mod history;
pub mod leasequery;
