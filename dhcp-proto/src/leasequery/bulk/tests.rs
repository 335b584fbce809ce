//! The framing, the reading of a query and the replies, checked octet by octet against
//! RFC 6926; the frame reader and the query reader against arbitrary input.

use proptest::prelude::*;

use super::*;
use crate::wire::layout::MAGIC_COOKIE;
use crate::wire::OptionIter;

const REPLIER: Replier = Replier {
    server_id: Ipv4Addr::new(192, 0, 2, 1),
    all_local: true,
};

/// A BOOTREQUEST of message type `kind` with xid 0x01020304 and `options` after 53.
fn query(kind: u8, ciaddr: [u8; 4], options: &[u8]) -> Vec<u8> {
    let mut q = vec![0u8; 240];
    q[0] = 1;
    q[4..8].copy_from_slice(&[1, 2, 3, 4]);
    q[12..16].copy_from_slice(&ciaddr);
    q[236..240].copy_from_slice(&MAGIC_COOKIE);
    q.extend_from_slice(&[53, 1, kind]);
    q.extend_from_slice(options);
    q.push(255);
    q
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut f = (message.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(message);
    f
}

fn read(message: &[u8]) -> Query<'_> {
    match read_query(message).unwrap() {
        Asked::Query(q) => q,
        other => panic!("{other:?}"),
    }
}

fn binding(state: LeaseState, cltt: u64, expires: u64) -> Binding {
    Binding {
        addr: Ipv4Addr::new(192, 0, 2, 10),
        state,
        htype: 1,
        hw: [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        hlen: 6,
        client_id: Some(vec![1, 2, 0, 0, 0, 0, 1].into()),
        expires,
        cltt,
        agent: Some(vec![2, 3, b'r', b'e', b'm'].into()),
    }
}

/// The options of a framed reply, by code, and its message type.
fn options(reply: &[u8]) -> (u8, Vec<(u8, Vec<u8>)>) {
    let (m, _) = next_frame(reply).unwrap().unwrap();
    let msg = Message::parse(m).unwrap();
    let opts: Vec<(u8, Vec<u8>)> = OptionIter::new(m, msg.overload())
        .map(|o| o.unwrap())
        .map(|o| (o.code, o.value.to_vec()))
        .collect();
    let kind = opts.iter().find(|o| o.0 == 53).unwrap().1[0];
    (kind, opts)
}

fn find(opts: &[(u8, Vec<u8>)], c: u8) -> Option<&[u8]> {
    opts.iter().find(|o| o.0 == c).map(|o| &o.1[..])
}

#[test]
fn a_frame_is_its_size_then_that_many_octets() {
    let q = query(msg::BULKLEASEQUERY, [0; 4], &[]);
    let mut stream = framed(&q);
    stream.extend_from_slice(&framed(&q));
    let (m, used) = next_frame(&stream).unwrap().unwrap();
    assert_eq!((m, used), (&q[..], q.len() + 2));
    let (m2, _) = next_frame(&stream[used..]).unwrap().unwrap();
    assert_eq!(m2, &q[..]);
    // Every cut short of the whole frame waits for more.
    for cut in 0..used {
        assert_eq!(next_frame(&stream[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn a_size_below_a_dhcp_header_is_refused_before_its_body() {
    assert_eq!(next_frame(&[0, 5]), Err(FrameError::TooShort(5)));
    assert_eq!(next_frame(&[0, 239]), Err(FrameError::TooShort(239)));
    assert_eq!(next_frame(&[0, 240]), Ok(None));
    // The largest size is only waited for.
    assert_eq!(next_frame(&[0xff, 0xff, 1, 2, 3]), Ok(None));
}

#[test]
fn the_query_types_of_section_6_2_are_read_in_order() {
    let all = query(msg::BULKLEASEQUERY, [0; 4], &[]);
    assert_eq!(read(&all).key, Key::All);
    let by_addr = query(msg::BULKLEASEQUERY, [192, 0, 2, 10], &[]);
    assert_eq!(
        read(&by_addr).key,
        Key::Address(Ipv4Addr::new(192, 0, 2, 10))
    );
    let by_id = query(msg::BULKLEASEQUERY, [0; 4], &[61, 3, 1, 2, 3]);
    assert_eq!(read(&by_id).key, Key::ClientId(vec![1, 2, 3].into()));
    let by_remote = query(
        msg::BULKLEASEQUERY,
        [0; 4],
        &[82, 5, 2, 3, b'r', b'e', b'm'],
    );
    assert_eq!(read(&by_remote).key, Key::RemoteId(b"rem".to_vec().into()));
    let by_relay = query(
        msg::BULKLEASEQUERY,
        [0; 4],
        &[82, 9, 2, 1, b'x', 12, 4, 0, 1, 2, 3],
    );
    assert_eq!(read(&by_relay).key, Key::RelayId(vec![0, 1, 2, 3].into()));
    let mut by_mac = query(msg::BULKLEASEQUERY, [0; 4], &[]);
    by_mac[1] = 1;
    by_mac[2] = 6;
    by_mac[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    assert!(matches!(read(&by_mac).key, Key::Hardware { hlen: 6, .. }));
}

#[test]
fn the_time_window_limits_by_when_the_state_began() {
    let q = query(
        msg::BULKLEASEQUERY,
        [0; 4],
        &[154, 4, 0, 0, 0x03, 0xe8, 155, 4, 0, 0, 0x07, 0xd0],
    );
    let w = read(&q).window;
    assert_eq!((w.start, w.end), (Some(1000), Some(2000)));
    assert!(w.admits(&binding(LeaseState::Active, 1000, 5000)));
    assert!(w.admits(&binding(LeaseState::Active, 2000, 5000)));
    assert!(!w.admits(&binding(LeaseState::Active, 999, 5000)));
    assert!(!w.admits(&binding(LeaseState::Active, 2001, 5000)));
    // An expired lease's state began when it ran out.
    assert!(w.admits(&binding(LeaseState::Expired, 10, 1500)));
    assert!(!w.admits(&binding(LeaseState::Expired, 1500, 2500)));
    // Unknown start: outside any window, inside none at all.
    assert!(!w.admits(&binding(LeaseState::Offered, 1500, 1500)));
    assert!(Window::default().admits(&binding(LeaseState::Offered, 0, 0)));
}

#[test]
fn bad_times_and_other_message_types_are_told_apart() {
    let short = query(msg::BULKLEASEQUERY, [0; 4], &[154, 2, 0, 1]);
    assert_eq!(read_query(&short).unwrap_err(), Malformed::BadTime(154));
    let reversed = query(
        msg::BULKLEASEQUERY,
        [0; 4],
        &[154, 4, 0, 0, 0, 9, 155, 4, 0, 0, 0, 8],
    );
    assert_eq!(read_query(&reversed).unwrap_err(), Malformed::EmptyWindow);
    let single = query(msg::LEASEQUERY, [192, 0, 2, 10], &[]);
    assert!(matches!(
        read_query(&single),
        Ok(Asked::Unsupported {
            xid: 0x01020304,
            ..
        })
    ));
    let mut reply = query(msg::BULKLEASEQUERY, [0; 4], &[]);
    reply[0] = 2;
    assert_eq!(read_query(&reply).unwrap_err(), Malformed::NotRequest);
    assert!(matches!(read_query(&[0; 100]), Err(Malformed::Wire(_))));
    assert_eq!(xid_of(&reply), 0x01020304);
    assert_eq!(xid_of(&[1, 2, 3]), 0);
}

#[test]
fn an_active_binding_carries_its_times_state_and_agent_information() {
    let q = query(msg::BULKLEASEQUERY, [0; 4], &[]);
    let q = read(&q);
    let mut out = vec![0u8; MAX_FRAME];
    let b = binding(LeaseState::Active, 1000, 4600);
    let len = REPLIER.binding(&q, &b, 1600, &mut out).unwrap();
    let reply = &out[..len];
    assert_eq!(
        usize::from(u16::from_be_bytes([reply[0], reply[1]])),
        len - 2
    );
    let m = Message::parse(&reply[2..]).unwrap();
    assert_eq!(m.xid(), 0x01020304);
    assert_eq!(m.op(), crate::wire::BOOTREPLY);
    assert_eq!(m.ciaddr(), b.addr);
    assert_eq!(m.chaddr(), b.hw());
    let (kind, opts) = options(reply);
    assert_eq!(kind, msg::LEASEACTIVE);
    assert_eq!(find(&opts, 51), Some(&3000u32.to_be_bytes()[..]));
    assert_eq!(find(&opts, 61), Some(&[1, 2, 0, 0, 0, 0, 1][..]));
    assert_eq!(find(&opts, 91), Some(&600u32.to_be_bytes()[..]));
    assert_eq!(find(&opts, 82), Some(&[2, 3, b'r', b'e', b'm'][..]));
    assert_eq!(find(&opts, 152), Some(&1600u32.to_be_bytes()[..]));
    // The state began at the last transaction, 600 s before base-time.
    assert_eq!(find(&opts, 153), Some(&600u32.to_be_bytes()[..]));
    assert_eq!(find(&opts, 156), Some(&[state::ACTIVE][..]));
    assert_eq!(find(&opts, 157), Some(&[0][..]));
    assert_eq!(find(&opts, 54), Some(&[192, 0, 2, 1][..]));
}

#[test]
fn an_ended_binding_is_unassigned_with_its_last_client_and_no_lease_times() {
    let q = query(msg::BULKLEASEQUERY, [0; 4], &[]);
    let q = read(&q);
    let mut out = vec![0u8; MAX_FRAME];
    let with_partner = Replier {
        all_local: false,
        ..REPLIER
    };
    for (state, dhcp) in [
        (LeaseState::Expired, state::EXPIRED),
        (LeaseState::Released, state::RELEASED),
        (LeaseState::Declined, state::ABANDONED),
        (LeaseState::Partner, state::REMOTE),
    ] {
        let b = binding(state, 1000, 1500);
        let len = with_partner.binding(&q, &b, 1600, &mut out).unwrap();
        let (kind, opts) = options(&out[..len]);
        assert_eq!(kind, msg::LEASEUNASSIGNED, "{state:?}");
        assert_eq!(find(&opts, 156), Some(&[dhcp][..]));
        assert_eq!(find(&opts, 51), None);
        assert_eq!(find(&opts, 61), Some(&[1, 2, 0, 0, 0, 0, 1][..]));
        assert_eq!(
            find(&opts, 157),
            None,
            "no data-source guessed with a partner"
        );
        let start = find(&opts, 153).map(|v| u32::from_be_bytes(v.try_into().unwrap()));
        let expected = matches!(state, LeaseState::Expired | LeaseState::Released).then_some(100);
        assert_eq!(start, expected, "{state:?}");
    }
}

#[test]
fn done_and_status_close_a_query() {
    let q = query(msg::BULKLEASEQUERY, [0; 4], &[]);
    let q = read(&q);
    let mut out = vec![0u8; MAX_FRAME];
    let len = REPLIER.done(&q, &mut out).unwrap();
    let (kind, _) = options(&out[..len]);
    assert_eq!(kind, msg::LEASEQUERYDONE);
    let len = REPLIER
        .status(
            0xdeadbeef,
            status::NOT_ALLOWED,
            "not an allowed requester",
            &mut out,
        )
        .unwrap();
    let (kind, opts) = options(&out[..len]);
    assert_eq!(kind, msg::LEASEQUERYSTATUS);
    assert_eq!(Message::parse(&out[2..len]).unwrap().xid(), 0xdeadbeef);
    let s = find(&opts, 151).unwrap();
    assert_eq!(
        (s[0], &s[1..]),
        (status::NOT_ALLOWED, &b"not an allowed requester"[..])
    );
    // A long text is cut to what one option holds.
    let long = "x".repeat(1000);
    let len = REPLIER
        .status(1, status::UNSPEC_FAIL, &long, &mut out)
        .unwrap();
    let (_, opts) = options(&out[..len]);
    assert_eq!(find(&opts, 151).unwrap().len(), 255);
}

#[test]
fn a_buffer_too_small_is_an_error_not_a_panic() {
    let q = query(msg::BULKLEASEQUERY, [0; 4], &[]);
    let q = read(&q);
    let b = binding(LeaseState::Active, 1000, 4600);
    for size in [0, 1, 2, 100, 301] {
        let mut out = vec![0u8; size];
        assert!(REPLIER.binding(&q, &b, 1600, &mut out).is_err(), "{size}");
    }
}

proptest! {
    #[test]
    fn arbitrary_octets_never_panic_the_frame_or_query_reader(
        bytes in proptest::collection::vec(any::<u8>(), 0..1200)
    ) {
        let mut at = 0;
        while let Ok(Some((m, used))) = next_frame(&bytes[at..]) {
            prop_assert!(used >= SIZE_PREFIX + MIN_FRAMED);
            let _ = read_query(m);
            let _ = xid_of(m);
            at += used;
        }
        let _ = read_query(&bytes);
    }

    #[test]
    fn a_query_with_arbitrary_options_reads_or_is_refused(
        opts in proptest::collection::vec(any::<u8>(), 0..300)
    ) {
        let q = query(msg::BULKLEASEQUERY, [0; 4], &opts);
        let mut out = vec![0u8; MAX_FRAME];
        if let Ok(Asked::Query(q)) = read_query(&q) {
            let b = binding(LeaseState::Active, 1000, 4600);
            // Whatever the query asked for, its replies are written.
            prop_assert!(REPLIER.binding(&q, &b, 1600, &mut out).is_ok());
            prop_assert!(REPLIER.done(&q, &mut out).is_ok());
        }
    }
}
