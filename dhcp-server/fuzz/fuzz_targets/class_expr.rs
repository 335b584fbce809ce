//! Any text as a client-class test and as a value: compiling returns a test or an error
//! with a column, never panics; whatever compiles prints back to an equal test, and
//! evaluates against any request without a panic. Input is the text, an 0xff octet (which
//! UTF-8 never holds), then the datagram.
#![no_main]

use dhcp_proto::expr::{Packet, Test, Value};
use dhcp_proto::wire::Request;
use libfuzzer_sys::fuzz_target;

/// Names member() may use: the class index is the name's length, so some resolve.
fn class(name: &str) -> Option<u16> {
    (name.len() % 2 == 0).then(|| u16::try_from(name.len()).unwrap_or(u16::MAX))
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let datagram = data.get(split + 1..).unwrap_or_default();
    let req = Request::parse(datagram).ok();
    let pkt = req.as_ref().map(Packet::new);

    match Test::parse(text, &mut class) {
        Ok(test) => {
            let shown = test.to_string();
            let back = Test::parse(&shown, &mut class).expect("a printed test parses");
            assert_eq!(back, test, "{text:?} printed as {shown:?}");
            if let Some(pkt) = &pkt {
                let first = test.eval(pkt, &|c| c % 3 == 0);
                assert_eq!(first, back.eval(pkt, &|c| c % 3 == 0));
            }
        }
        Err(e) => assert!(e.offset <= text.chars().count(), "{text:?}: {e}"),
    }
    match Value::parse(text) {
        Ok(value) => {
            let back = Value::parse(&value.to_string()).expect("a printed value parses");
            assert_eq!(back, value);
            if let Some(pkt) = &pkt {
                if let Some(v) = value.eval(pkt) {
                    assert!(v.len() <= datagram.len().max(text.len()));
                }
            }
        }
        Err(e) => assert!(e.offset <= text.chars().count(), "{text:?}: {e}"),
    }
});
