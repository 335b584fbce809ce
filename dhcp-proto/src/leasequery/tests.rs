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
