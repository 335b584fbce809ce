//! Any octets as what a requester writes on a Bulk Leasequery connection (RFC 6926):
//! framing (`next_frame`) and query reading (`read_query`) never panic, and every
//! answer the server writes for what they return is a frame of its own, carrying the
//! query's xid, that parses back as the message type it was written as. The bindings
//! answered are made from the query itself (its address, hardware address, client id
//! and agent information, in every lease state) so the writer meets values the input
//! controls.
#![no_main]

use std::net::Ipv4Addr;

use dhcp_proto::lease::LeaseState;
use dhcp_proto::leasequery::bulk::{
    next_frame, read_query, status, xid_of, Asked, Replier, MAX_FRAME,
};
use dhcp_proto::leasequery::{msg, Binding, Key};
use dhcp_proto::wire::{Request, WireError};
use libfuzzer_sys::fuzz_target;

const STATES: [LeaseState; 8] = [
    LeaseState::Free,
    LeaseState::Offered,
    LeaseState::Active,
    LeaseState::Released,
    LeaseState::Expired,
    LeaseState::Declined,
    LeaseState::Foreign,
    LeaseState::Partner,
];

/// Checks one written answer: a whole frame, the xid, the message type.
fn check(out: &[u8], xid: u32, kind: u8) {
    let (message, used) = next_frame(out)
        .expect("our frame has a sane size")
        .expect("our frame is whole");
    assert_eq!(used, out.len());
    let back = Request::parse(message).expect("our answer parses");
    assert_eq!(back.msg.xid(), xid);
    assert_eq!(back.msg_type.to_u8(), kind);
}

fuzz_target!(|data: &[u8]| {
    let replier = Replier {
        server_id: Ipv4Addr::new(192, 0, 2, 1),
        all_local: data.len() % 2 == 0,
    };
    let now = 1_800_000_000;
    let mut out = vec![0u8; MAX_FRAME];
    let mut rest = data;
    // As the connection reads: frame after frame until one is cut short or is no frame.
    while let Ok(Some((message, used))) = next_frame(rest) {
        rest = &rest[used..];
        let refusal = match read_query(message) {
            Ok(Asked::Query(q)) => {
                let addr = match q.key {
                    Key::Address(a) => a,
                    _ => q.req.msg.yiaddr(),
                };
                let chaddr = q.req.msg.chaddr_field();
                for (i, state) in STATES.into_iter().enumerate() {
                    let b = Binding {
                        addr,
                        state,
                        htype: q.req.msg.htype(),
                        hw: *chaddr,
                        hlen: q.req.msg.hlen(),
                        client_id: q.req.client_id.map(Box::from),
                        expires: now + 60 * i as u64,
                        cltt: (now - 600).saturating_sub(q.req.msg.secs().into()),
                        agent: q.req.relay_agent_info.map(Box::from),
                    };
                    let _ = q.window.admits(&b);
                    let _ = q.key.matches(&b);
                    match replier.binding(&q, &b, now, &mut out) {
                        Ok(n) => {
                            let kind = if b.active() {
                                msg::LEASEACTIVE
                            } else {
                                msg::LEASEUNASSIGNED
                            };
                            check(&out[..n], q.xid(), kind);
                        }
                        // A client id and agent information of many kilobytes each may
                        // not fit one message beside each other.
                        Err(WireError::NoSpace) => {}
                        Err(e) => panic!("binding answer: {e}"),
                    }
                }
                let n = replier.done(&q, &mut out).expect("done always fits");
                check(&out[..n], q.xid(), msg::LEASEQUERYDONE);
                continue;
            }
            Ok(Asked::Unsupported { xid, .. }) => (xid, status::UNSPEC_FAIL),
            Err(_) => (xid_of(message), status::MALFORMED_QUERY),
        };
        let (xid, code) = refusal;
        let n = replier
            .status(xid, code, "not a query this server runs", &mut out)
            .expect("a status always fits");
        check(&out[..n], xid, msg::LEASEQUERYSTATUS);
    }
});
