//! What a backend offers the control socket (`Server`), and the answer of the calls that
//! wait on another task (`Pending`).

use std::net::Ipv4Addr;

use super::types::{
    ClassMember, ControlError, LeasePage, MemberPage, MemberQuery, PageQuery, ReloadReport,
    ReservationPage, ReservationSpec, Stats, Status,
};

/// The answer of a backend call that waits on another task rather than a thread (the
/// failover link): the control runtime awaits it, within a bounded wait.
pub type Pending<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ControlError>> + Send>>;

/// The error reply of a failover command on a server without a partner.
pub const NO_PARTNER: &str = "no failover partner configured";

/// What a failover command answers on a server without a partner: `unsupported`.
pub fn no_partner<T: Send + 'static>() -> Pending<T> {
    Box::pin(std::future::ready(Err(ControlError::Unsupported(
        NO_PARTNER.into(),
    ))))
}

/// What a backend offers the control socket. Implementations answer from snapshots or by
/// messaging their workers; a call may block, but should give up with
/// `ControlError::Unavailable` after a bounded wait (a second or so) rather than hang,
/// since each pending call holds one of a few blocking threads.
pub trait Server: Send + Sync + 'static {
    /// Cheap and always answerable, even before `ready`.
    fn status(&self) -> Status;
    /// Counters since start, summed over shards (see `runtime::operate::report::add_shard`).
    fn stats(&self) -> Result<Stats, ControlError>;
    /// One lease by address, the leases of a MAC or client identifier, or a page of all,
    /// in address order starting after `query.cursor`, at most `query.limit` of them.
    fn leases(&self, query: PageQuery) -> Result<LeasePage, ControlError>;
    /// Adds a host reservation, journaled before it answers.
    fn reservation_add(&self, spec: ReservationSpec) -> Result<(), ControlError>;
    /// The reservations of addresses (the file's and the run-time ones), by address,
    /// MAC or client identifier, or a page of all in address order.
    fn reservations(&self, query: PageQuery) -> Result<ReservationPage, ControlError> {
        let _ = query;
        Err(ControlError::Unsupported(
            "this server does not list reservations".into(),
        ))
    }
    fn reservation_del(&self, address: Ipv4Addr) -> Result<(), ControlError>;
    /// Frees the address as a client's DHCPRELEASE would: still remembered for it.
    fn lease_release(&self, address: Ipv4Addr) -> Result<(), ControlError>;
    /// Forgets the lease and its client entirely: the address is free for anyone.
    fn lease_delete(&self, address: Ipv4Addr) -> Result<(), ControlError>;
    /// The members of matching classes (the file's and the run-time ones), of one class
    /// or of all, a page at a time in class and value order.
    fn class_members(&self, query: MemberQuery) -> Result<MemberPage, ControlError> {
        let _ = query;
        Err(ControlError::Unsupported(
            "this server does not list class members".into(),
        ))
    }
    /// Lists a member value in a matching class on every shard, journaled before it
    /// answers.
    fn class_member_add(&self, member: ClassMember) -> Result<(), ControlError> {
        let _ = member;
        Err(ControlError::Unsupported(
            "this server does not change class members".into(),
        ))
    }
    /// Ends a member added at run time, journaled before it answers.
    fn class_member_del(&self, member: ClassMember) -> Result<(), ControlError> {
        let _ = member;
        Err(ControlError::Unsupported(
            "this server does not change class members".into(),
        ))
    }
    /// Re-reads the configuration, validates it whole, applies the safe subset.
    fn reload(&self) -> Result<ReloadReport, ControlError>;
    /// Asks the server to stop as SIGTERM would; returns at once. The control socket
    /// has already answered the client when this is called. It runs on the control
    /// runtime's blocking pool, so it must not drop the `Handle` itself (that would wait
    /// on its own thread until the stop grace runs out).
    fn shutdown(&self);
    /// Failover: the operator declares the partner down (it must really be down). The
    /// future is awaited on the control runtime, not on a blocking thread; the default
    /// is for a server without a partner.
    fn failover_partner_down(&self) -> Pending<()> {
        no_partner()
    }
    /// Failover: ask the partner for every binding again (a full resync).
    fn failover_resync(&self) -> Pending<()> {
        no_partner()
    }
}
