//! Any sequence of datagrams through the whole engine: no panic is reachable from the
//! network. Input is a run of datagrams, each after a two-octet length; time moves on a
//! little with each one so offers and leases expire along the way.
#![no_main]

use std::sync::Mutex;

use dhcp_proto::engine::{Engine, RxMeta};
use dhcp_proto::policy::{LeaseTimes, OptionSet, Policy, Reservation, Subnet};
use libfuzzer_sys::fuzz_target;

fn policy() -> Policy {
    let mut options = OptionSet::default();
    options.set_addresses(3, &["192.0.2.1".parse().unwrap()]);
    Policy {
        interfaces: vec!["fuzz0".into()],
        subnets: vec![
            Subnet {
                net: "192.0.2.0/24".parse().unwrap(),
                interface: Some(0),
                pools: vec!["192.0.2.10-192.0.2.20".parse().unwrap()],
                server_id: None,
                lease: LeaseTimes {
                    default: 60,
                    min: 10,
                    max: 120,
                    renew: None,
                    rebind: None,
                },
                options,
                reservations: vec![Reservation {
                    hw_address: Some([2, 0, 0, 0, 0, 1]),
                    address: Some("192.0.2.5".parse().unwrap()),
                    ..Default::default()
                }],
            },
            Subnet {
                net: "198.51.100.0/24".parse().unwrap(),
                interface: None,
                pools: vec!["198.51.100.10-198.51.100.12".parse().unwrap()],
                server_id: None,
                lease: LeaseTimes::default(),
                options: OptionSet::default(),
                reservations: vec![],
            },
        ],
        // Relays in both subnets may ask by leasequery, so DHCPLEASEQUERY (type 10)
        // reaches the key and answer path instead of stopping at the requester check.
        leasequery: vec![
            "192.0.2.0/24".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        ],
        ..Policy::default()
    }
}

static ENGINE: Mutex<Option<(Engine, u64)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = ENGINE.lock().unwrap();
    let (engine, now) = guard.get_or_insert_with(|| (Engine::new(policy(), 1_000).unwrap(), 1_000));
    let mut out = [0u8; 1500];
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = (u16::from_be_bytes([*hi, *lo]) as usize).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        *now += u64::from(*lo % 7);
        let meta = RxMeta {
            link: 0,
            local_addr: "192.0.2.1".parse().unwrap(),
            broadcast: hi & 1 == 0,
        };
        engine.handle(datagram, &meta, *now, &mut out);
    }
});
