//! Any octets as a failover TCP stream: framing, the checked view, the typed options
//! and the owned message never panic; a checked message's options lie inside it, and
//! whatever parses re-emits to the very octets it came from, through `Message` and
//! through `Writer` alike.
#![no_main]

use dhcp_proto::failover::wire::{split_frame, Message, Packet, Writer, MAX_MESSAGE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((one, tail))) = split_frame(rest) {
        check(one);
        rest = tail;
    }
    check(data);
});

fn check(bytes: &[u8]) {
    let Ok(packet) = Packet::new_checked(bytes) else {
        return;
    };
    let whole = bytes.as_ptr_range();
    for raw in packet.options() {
        let raw = raw.expect("a checked message walks without error");
        let r = raw.data.as_ptr_range();
        assert!(whole.start <= r.start && r.end <= whole.end);
        let _ = raw.typed();
    }
    let Ok(m) = Message::parse(&packet) else {
        return;
    };
    let own = packet.as_bytes();
    assert_eq!(m.to_bytes().unwrap(), own);

    let mut out = [0u8; MAX_MESSAGE_LEN];
    let mut w = Writer::with_extra_header(&mut out, m.msg_type, m.time, m.xid, &m.extra_header)
        .expect("a parsed header fits");
    for o in packet.typed_options() {
        w.option(&o.unwrap()).expect("a parsed option fits again");
    }
    let n = w.finish();
    assert_eq!(&out[..n], own);
}
