//! The choices RFC 4388 leaves open, as dhcpd makes them: which binding of a client
//! answers, which are associated, and how the keys of a query are read.

use super::*;
use crate::wire::Message;

fn binding(addr: [u8; 4], state: LeaseState, cltt: u64, expires: u64) -> Binding {
    Binding {
        addr: addr.into(),
        state,
        htype: 1,
        hw: [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        hlen: 6,
        client_id: None,
        expires,
        cltt,
        agent: Some(vec![2, 3, b'r', b'e', b'm'].into()),
    }
}

#[test]
fn a_client_is_answered_with_its_newest_active_binding_and_the_rest_associated() {
    let key = Key::Hardware {
        htype: 1,
        hw: binding([0; 4], LeaseState::Free, 0, 0).hw,
        hlen: 6,
    };
    let found = [
        binding([192, 0, 2, 10], LeaseState::Active, 100, 700),
        binding([192, 0, 2, 11], LeaseState::Active, 200, 800),
        binding([192, 0, 2, 12], LeaseState::Expired, 300, 900),
    ];
    match Answer::pick(&key, &found, false) {
        Answer::Active {
            binding,
            associated,
        } => {
            assert_eq!(binding.addr, Ipv4Addr::new(192, 0, 2, 11));
            assert_eq!(associated, vec![Ipv4Addr::new(192, 0, 2, 10)]);
        }
        other => panic!("{other:?}"),
    }
    // None active: the one that ended last, unassigned.
    let ended = [
        binding([192, 0, 2, 10], LeaseState::Expired, 100, 700),
        binding([192, 0, 2, 12], LeaseState::Released, 100, 900),
    ];
    assert_eq!(
        Answer::pick(&key, &ended, false),
        Answer::Unassigned(Ipv4Addr::new(192, 0, 2, 12))
    );
    assert_eq!(Answer::pick(&key, &[], false), Answer::Unknown);
}

#[test]
fn relay_and_remote_ids_match_the_stored_agent_information() {
    let b = binding([192, 0, 2, 10], LeaseState::Active, 1, 2);
    assert!(Key::RemoteId(b"rem".to_vec().into()).matches(&b));
    assert!(!Key::RemoteId(b"re".to_vec().into()).matches(&b));
    assert!(!Key::RelayId(b"rem".to_vec().into()).matches(&b));
    assert!(Key::All.matches(&b));
}

#[test]
fn t1_and_t2_are_left_out_once_passed() {
    let b = binding([192, 0, 2, 10], LeaseState::Active, 1000, 1600);
    let mut buf = [0u8; 600];
    let req = {
        let mut q = vec![0u8; 240];
        q[0] = 1;
        q[24..28].copy_from_slice(&[198, 51, 100, 1]);
        q[236..240].copy_from_slice(&crate::wire::layout::MAGIC_COOKIE);
        q.extend_from_slice(&[53, 1, 10, 255]);
        q
    };
    let req = Request::parse(&req).unwrap();
    let answer = Answer::Active {
        binding: b,
        associated: vec![],
    };
    // 1000 + 300 is T1, 1000 + 525 T2: at 1400 only T2 and the lease time remain.
    let len = write_reply(&req, &answer, Ipv4Addr::new(192, 0, 2, 1), 1400, &mut buf).unwrap();
    let m = Message::parse(&buf[..len]).unwrap();
    assert_eq!(m.option(code::RENEWAL_TIME), None);
    assert_eq!(
        m.option(code::REBINDING_TIME),
        Some(&125u32.to_be_bytes()[..])
    );
    assert_eq!(m.option(code::LEASE_TIME), Some(&200u32.to_be_bytes()[..]));
    assert_eq!(
        m.option(code::RELAY_AGENT_INFO),
        Some(&[2, 3, b'r', b'e', b'm'][..])
    );
    assert_eq!(m.chaddr(), &[2, 0, 0, 0, 0, 1]);
}

#[test]
fn a_requester_s_query_is_read_back_as_the_key_it_names() {
    let giaddr = Ipv4Addr::new(192, 0, 2, 1);
    let mut hw = [0u8; 16];
    hw[..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    let keys = [
        Key::Address(Ipv4Addr::new(198, 51, 100, 10)),
        Key::ClientId(vec![1, 2, 0, 0, 0, 0, 9].into()),
        Key::Hardware {
            htype: 1,
            hw,
            hlen: 6,
        },
    ];
    let mut buf = [0u8; 600];
    for key in &keys {
        let len = write_query(msg::LEASEQUERY, key, giaddr, 7, Some(&[51, 92]), &mut buf).unwrap();
        let req = Request::parse(&buf[..len]).unwrap();
        assert_eq!(req.msg_type.to_u8(), msg::LEASEQUERY);
        assert_eq!(req.msg.giaddr(), giaddr);
        assert_eq!(req.msg.xid(), 7);
        assert_eq!(req.parameter_list, Some(&[51, 92][..]));
        assert_eq!(Key::of(&req).as_ref(), Ok(key));
    }
    for key in [
        Key::RemoteId(b"modem-1".to_vec().into()),
        Key::RelayId(b"bng-7".to_vec().into()),
        Key::All,
    ] {
        let len = write_query(msg::BULKLEASEQUERY, &key, giaddr, 8, None, &mut buf).unwrap();
        let req = Request::parse(&buf[..len]).unwrap();
        assert_eq!(Key::of_bulk(&req), key);
    }
    let long = Key::ClientId(vec![1; 256].into());
    assert!(write_query(msg::LEASEQUERY, &long, giaddr, 9, None, &mut buf).is_err());
    assert_eq!(
        write_query(msg::LEASEQUERY, &keys[0], giaddr, 9, None, &mut [0u8; 100]),
        Err(WireError::NoSpace)
    );
}

#[test]
fn a_reply_is_read_back_with_every_field_the_server_wrote() {
    let mut b = binding([198, 51, 100, 10], LeaseState::Active, 1000, 4600);
    b.client_id = Some(vec![1, 2, 0, 0, 0, 0, 1].into());
    let mut q = [0u8; 600];
    let key = Key::Hardware {
        htype: 1,
        hw: b.hw,
        hlen: 6,
    };
    let giaddr = Ipv4Addr::new(192, 0, 2, 1);
    let len = write_query(msg::LEASEQUERY, &key, giaddr, 42, None, &mut q).unwrap();
    let req = Request::parse(&q[..len]).unwrap();
    let answer = Answer::Active {
        binding: b,
        associated: vec![Ipv4Addr::new(198, 18, 0, 20)],
    };
    let mut buf = [0u8; 600];
    let server = Ipv4Addr::new(203, 0, 113, 2);
    let len = write_reply(&req, &answer, server, 1600, &mut buf).unwrap();
    let r = LeaseReply::parse(&buf[..len]).unwrap();
    assert_eq!(r.kind, msg::LEASEACTIVE);
    assert_eq!(r.msg.xid(), 42);
    assert_eq!(r.addr, Ipv4Addr::new(198, 51, 100, 10));
    assert_eq!(r.server_id, Some(server));
    assert_eq!(r.lease_time, Some(3000));
    assert_eq!(r.renewal_time, Some(1200));
    assert_eq!(r.rebinding_time, Some(2550));
    assert_eq!(r.last_transaction, Some(600));
    assert_eq!(r.client_id, Some(&[1, 2, 0, 0, 0, 0, 1][..]));
    assert_eq!(
        r.associated_ips().collect::<Vec<_>>(),
        vec![Ipv4Addr::new(198, 18, 0, 20)]
    );
    assert_eq!(r.relay_agent_info, Some(&[2, 3, b'r', b'e', b'm'][..]));
    assert_eq!(r.msg.chaddr(), &[2, 0, 0, 0, 0, 1]);
    // The query itself is no reply, and a bad option 92 is refused, not cut.
    assert!(LeaseReply::parse(&q[..300]).is_err());
    let at = buf[..len]
        .windows(2)
        .position(|w| w == [opt::ASSOCIATED_IP, 4])
        .unwrap();
    buf[at + 1] = 3;
    buf[at + 5] = 255;
    assert!(LeaseReply::parse(&buf[..len]).is_err());
}

#[test]
fn an_unknown_address_is_named_in_the_answer_as_dhcpd_does() {
    let asked = Ipv4Addr::new(192, 0, 2, 200);
    let mut q = [0u8; 600];
    let giaddr = Ipv4Addr::new(192, 0, 2, 1);
    let len = write_query(
        msg::LEASEQUERY,
        &Key::Address(asked),
        giaddr,
        1,
        None,
        &mut q,
    )
    .unwrap();
    let req = Request::parse(&q[..len]).unwrap();
    let mut buf = [0u8; 600];
    let len = write_reply(&req, &Answer::Unknown, giaddr, 0, &mut buf).unwrap();
    let r = LeaseReply::parse(&buf[..len]).unwrap();
    assert_eq!((r.kind, r.addr), (msg::LEASEUNKNOWN, asked));
}
