//! Any text as an ISC dhcpd leases file (what `import-isc` reads): the parser returns
//! leases or an error with a line number, never panics and never loops (a form feed once
//! made it loop), and what it returns holds one lease per address, in address order.
#![no_main]

use dhcp_server::journal::isc::parse_leases;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(leases) = parse_leases(text) {
        assert!(leases.windows(2).all(|w| w[0].addr < w[1].addr));
    }
});
