//! Properties of the codec: any message survives emit then parse unchanged, any octets
//! either parse or give an error (never a panic), and whatever parses re-emits to the
//! very octets it came from.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;

fn blob() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

fn option() -> impl Strategy<Value = FailoverOption<Vec<u8>>> {
    use FailoverOption as O;
    prop_oneof![
        any::<u32>().prop_map(O::AddressesTransferred),
        any::<u32>().prop_map(|a| O::AssignedIpAddress(Ipv4Addr::from(a))),
        any::<u8>().prop_map(|v| O::BindingStatus(v.into())),
        blob().prop_map(O::ClientIdentifier),
        blob().prop_map(O::ClientHardwareAddress),
        any::<u32>().prop_map(O::ClientLastTransactionTime),
        blob().prop_map(O::ClientReplyOptions),
        blob().prop_map(O::ClientRequestOptions),
        (any::<u16>(), blob()).prop_map(|(flags, name)| O::Ddns { flags, name }),
        any::<u8>().prop_map(O::DelayedService),
        any::<[u8; HBA_LEN]>().prop_map(O::HashBucketAssignment),
        any::<u16>().prop_map(O::IpFlags),
        any::<u32>().prop_map(O::LeaseExpirationTime),
        any::<u32>().prop_map(O::MaxUnackedBndupd),
        any::<u32>().prop_map(O::Mclt),
        blob().prop_map(O::Message),
        blob().prop_map(O::MessageDigest),
        any::<u32>().prop_map(O::PotentialExpirationTime),
        any::<u32>().prop_map(O::ReceiveTimer),
        any::<u8>().prop_map(O::ProtocolVersion),
        any::<u8>().prop_map(|v| O::RejectReason(v.into())),
        blob().prop_map(O::RelationshipName),
        any::<u8>().prop_map(O::ServerFlags),
        any::<u8>().prop_map(|v| O::ServerState(v.into())),
        any::<u32>().prop_map(O::StartTimeOfState),
        any::<u8>().prop_map(O::TlsReply),
        any::<u8>().prop_map(O::TlsRequest),
        blob().prop_map(O::VendorClass),
        blob().prop_map(O::VendorOptions),
        (prop_oneof![Just(0u16), 30u16..], blob())
            .prop_map(|(code, data)| O::Unknown { code, data }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..6),
        proptest::collection::vec(option(), 0..20),
    )
        .prop_map(|(t, time, xid, extra_header, options)| Message {
            msg_type: t.into(),
            time,
            xid,
            extra_header,
            options,
        })
}

/// Whatever `bytes` hold: no panic, and an accepted message walks cleanly and
/// re-emits byte for byte.
fn check_any(bytes: &[u8]) {
    let _ = frame_len(bytes);
    let _ = split_frame(bytes);
    let Ok(packet) = Packet::new_checked(bytes) else {
        return;
    };
    let len = usize::from(packet.msg_len());
    assert!(len <= bytes.len() && (MIN_MESSAGE_LEN..=MAX_MESSAGE_LEN).contains(&len));
    let whole = bytes.as_ptr_range();
    for raw in packet.options() {
        let raw = raw.expect("a checked message walks without error");
        let r = raw.data.as_ptr_range();
        assert!(whole.start <= r.start && r.end <= whole.end);
    }
    if let Ok(m) = Message::parse(&packet) {
        assert_eq!(m.buffer_len(), len);
        assert_eq!(m.to_bytes().unwrap(), &bytes[..len]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn emit_then_parse_is_identity(m in message()) {
        let bytes = m.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), m.buffer_len());
        prop_assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(packet.msg_type(), m.msg_type);
        prop_assert_eq!(packet.options().count(), m.options.len());
        let back = Message::parse(&packet).unwrap();
        prop_assert_eq!(&back, &m);
        // Zero-copy reading types the same options as the owned parse.
        for (typed, owned) in packet.typed_options().zip(&m.options) {
            prop_assert_eq!(typed.unwrap(), owned.as_borrowed());
        }
    }

    #[test]
    fn arbitrary_octets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_any(&bytes);
    }

    #[test]
    fn damaged_messages_never_panic(
        m in message(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut bytes = m.to_bytes().unwrap();
        for (at, v) in edits {
            let n = bytes.len();
            bytes[at % n] = v;
        }
        let cut = cut % (bytes.len() + 1);
        check_any(&bytes[..cut]);
        check_any(&bytes);
    }
}
