//! Any octets as what a client writes to the control socket: each line (split at '\n',
//! as the listener reads them) goes through `parse_request`, the listener's own parser.
//! It never panics; a refused line is answered with an error reply that is one line of
//! JSON with `ok: false` and the request's id when one could be read; an accepted
//! request prints back (`Request::to_line`, what `dhcp-server ctl` sends) to a line
//! that parses to the very same request.
#![no_main]

use dhcp_server::control::protocol::{parse_request, Reply, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The listener answers an over-long line without parsing it.
    for line in data.split(|&b| b == b'\n').filter(|l| l.len() <= MAX_LINE) {
        match parse_request(line) {
            Err((id, e)) => {
                let reply = Reply::protocol_error(id.clone(), &e).to_line();
                let (last, body) = reply.split_last().expect("a reply is never empty");
                assert_eq!(*last, b'\n');
                assert!(!body.contains(&b'\n'), "a reply is one line");
                let back: Reply = serde_json::from_slice(body).expect("a reply is JSON");
                assert!(!back.ok && back.result.is_none());
                assert_eq!(back.id, id);
                assert_eq!(back.error.map(|b| b.code), Some(e.code().to_owned()));
            }
            Ok(req) => {
                let sent = req.to_line();
                let again = parse_request(sent.strip_suffix(b"\n").unwrap_or(&sent))
                    .unwrap_or_else(|(_, e)| panic!("{req:?} printed as a refused line: {e}"));
                assert_eq!(again, req);
            }
        }
    }
});
