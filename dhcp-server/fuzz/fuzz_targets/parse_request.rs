//! Any datagram: parsing returns a value or an error, never panics, and an accepted
//! message walks without error inside its own bytes. An accepted request is answered
//! within the size the client allows, echoing what a server echoes plus a value long
//! enough to be split (RFC 3396), and the answer parses back to what was written.
#![no_main]

use dhcp_proto::wire::{code, Message, Request, WireError, Writer, DEFAULT_MAX_MESSAGE};
use libfuzzer_sys::fuzz_target;

/// An unassigned code (RFC 3942 site-specific range) for the long value.
const LONG: u8 = 224;

fuzz_target!(|data: &[u8]| {
    let whole = data.as_ptr_range();
    if let Ok(m) = Message::parse(data) {
        for opt in m.options() {
            let opt = opt.expect("a parsed message walks without error");
            let value = opt.value.as_ptr_range();
            assert!(whole.start <= value.start && value.end <= whole.end);
        }
    }
    let Ok(req) = Request::parse(data) else {
        return;
    };

    let limit = req
        .max_message_size
        .map_or(DEFAULT_MAX_MESSAGE, usize::from);
    let mut out = [0u8; 1500];
    let Ok(mut w) = Writer::reply_to(&mut out, &req.msg, limit) else {
        return; // the client allows less than the BOOTP minimum: nothing can be sent
    };
    w.option(code::MESSAGE_TYPE, &[2]).unwrap();
    let long = &data[..data.len().min(600)];
    let echoes = [
        (code::CLIENT_ID, req.client_id),
        (code::HOST_NAME, req.host_name),
        (code::RELAY_AGENT_INFO, req.relay_agent_info),
        (LONG, Some(long)),
    ];
    let mut written = Vec::new();
    for (c, value) in echoes {
        let Some(value) = value else { continue };
        match w.option(c, value) {
            Ok(()) => written.push((c, value)),
            Err(WireError::NoSpace) => {}
            Err(e) => panic!("option {c}: {e}"),
        }
    }
    let len = w.finish();
    assert!((300..=limit.min(out.len())).contains(&len));

    let back = Request::parse(&out[..len]).expect("our own reply parses");
    assert_eq!(back.msg.xid(), req.msg.xid());
    assert_eq!(back.msg.chaddr_field(), req.msg.chaddr_field());
    for (c, value) in written {
        let joined: Vec<u8> = back
            .msg
            .options()
            .flatten()
            .filter(|o| o.code == c)
            .flat_map(|o| o.value.iter().copied())
            .collect();
        assert_eq!(joined, value, "option {c}");
    }
});
