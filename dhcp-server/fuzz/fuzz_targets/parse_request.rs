//! Any datagram: parsing returns a value or an error, never panics; an accepted request
//! can be answered, and the answer parses back.
#![no_main]

use dhcp_server::wire::{code, Message, Request, Writer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        for opt in m.options() {
            assert!(opt.is_ok());
        }
    }
    let Ok(req) = Request::parse(data) else { return };
    let mut out = [0u8; 1500];
    let Ok(mut w) = Writer::reply_to(&mut out, &req.msg, 1500) else { return };
    w.option(code::MESSAGE_TYPE, &[2]).unwrap();
    if let Some(id) = req.client_id {
        let _ = w.option(code::CLIENT_ID, id);
    }
    if let Some(rai) = req.relay_agent_info {
        let _ = w.option(code::RELAY_AGENT_INFO, rai);
    }
    let len = w.finish();
    let back = Request::parse(&out[..len]).expect("our own reply parses");
    assert_eq!(back.msg.xid(), req.msg.xid());
    assert_eq!(back.client_id, req.client_id);
});
