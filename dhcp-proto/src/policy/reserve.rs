//! Run-time reservations (the control socket's `reservation-add`, kept in the journal)
//! checked against the configuration and against each other, by the rules the file's
//! reservations follow: the address is a host address of a configured subnet, no two
//! reservations share an address, and a host has at most one reservation per subnet.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::{Invalid, Policy, Reservation, Subscriber, SubscriberKind};
use crate::lease::hex;

/// The run-time reservations, by address.
pub type Runtime = BTreeMap<Ipv4Addr, Reservation>;

/// Why a run-time reservation cannot be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It makes no sense here: no address, outside every subnet, a network or broadcast
    /// address, no host named.
    Invalid(String),
    /// It clashes with a reservation that exists.
    Conflict(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(m) | Refusal::Conflict(m) => f.write_str(m),
        }
    }
}

/// The host a reservation names: "02:00:00:00:00:01", "client id 01:02:03", or both.
pub fn host(r: &Reservation) -> String {
    let mut s = String::new();
    if let Some(hw) = r.hw_address {
        s.push_str(&hex(&hw));
    }
    if let Some(id) = &r.client_id {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "client id {}", hex(id));
    }
    if let Some(sub) = &r.subscriber {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(
            s,
            "{} {}",
            sub.kind.name(),
            Subscriber::format_value(&sub.value)
        );
    }
    s
}

/// Checks run-time reservation `r` against `config` and the run-time reservations that
/// exist; returns the index of the subnet it belongs to.
pub fn check(config: &Policy, runtime: &Runtime, r: &Reservation) -> Result<usize, Refusal> {
    let Some(addr) = r.address else {
        return Err(Refusal::Invalid(
            "a run-time reservation needs an address".into(),
        ));
    };
    if r.hw_address.is_none() && r.client_id.is_none() && r.subscriber.is_none() {
        return Err(Refusal::Invalid(
            "a reservation needs a MAC address, a client identifier or a subscriber identity"
                .into(),
        ));
    }
    if r.subscriber
        .as_ref()
        .is_some_and(|s| s.kind == SubscriberKind::Flex)
        && config.flex_id.is_none()
    {
        return Err(Refusal::Invalid(
            "a flex-id reservation needs flex-id = \"...\" in the configuration file".into(),
        ));
    }
    let Some(i) = config.subnets.iter().position(|s| s.net.contains(addr)) else {
        let nets: Vec<String> = config.subnets.iter().map(|s| s.net.to_string()).collect();
        return Err(Refusal::Invalid(format!(
            "{addr} is in no configured subnet ({})",
            nets.join(", ")
        )));
    };
    let s = &config.subnets[i];
    if addr == s.net.network() || addr == s.net.broadcast() {
        return Err(Refusal::Invalid(format!(
            "{addr} is not a host address of {}",
            s.net
        )));
    }
    for (k, f) in s.reservations.iter().enumerate() {
        let at = format!("subnet[{i}].reservation[{k}]");
        if f.address == Some(addr) {
            return Err(Refusal::Conflict(format!(
                "{addr} is already reserved for {} in the configuration file ({at})",
                host(f)
            )));
        }
        if let Some(same) = same_host(f, r) {
            return Err(Refusal::Conflict(format!(
                "{same} already has a reservation in {} in the configuration file ({at})",
                s.net
            )));
        }
    }
    if let Some(other) = runtime.get(&addr) {
        return Err(Refusal::Conflict(format!(
            "{addr} is already reserved for {} (reservation-del it first)",
            host(other)
        )));
    }
    for (a, other) in runtime.range(s.net.network()..=s.net.broadcast()) {
        if let Some(same) = same_host(other, r) {
            return Err(Refusal::Conflict(format!(
                "{same} already has {a} reserved in {}",
                s.net
            )));
        }
    }
    Ok(i)
}

/// The identity two reservations share, if any: the MAC or the client identifier.
fn same_host(a: &Reservation, b: &Reservation) -> Option<String> {
    if let (Some(x), Some(y)) = (a.hw_address, b.hw_address) {
        if x == y {
            return Some(hex(&x));
        }
    }
    if let (Some(x), Some(y)) = (&a.client_id, &b.client_id) {
        if x == y {
            return Some(format!("client id {}", hex(x)));
        }
    }
    if let (Some(x), Some(y)) = (&a.subscriber, &b.subscriber) {
        if x == y {
            return Some(format!(
                "{} {}",
                x.kind.name(),
                Subscriber::format_value(&x.value)
            ));
        }
    }
    None
}

/// What in `config`'s file reservations clashes with the run-time ones (a reload that
/// adds to the file what was reserved at run time), as findings at the file's keys.
pub fn conflicts(config: &Policy, runtime: &Runtime) -> Vec<Invalid> {
    let mut bad = Vec::new();
    for (i, s) in config.subnets.iter().enumerate() {
        for (k, f) in s.reservations.iter().enumerate() {
            let at = |key: &str| format!("subnet[{i}].reservation[{k}].{key}");
            if let Some(other) = f.address.and_then(|a| runtime.get(&a).map(|o| (a, o))) {
                bad.push(Invalid {
                    path: at("ip-address"),
                    reason: format!(
                        "{} is also reserved at run time for {}; remove that first (ctl reservation-del --address {})",
                        other.0,
                        host(other.1),
                        other.0
                    ),
                });
                continue;
            }
            for (a, other) in runtime.range(s.net.network()..=s.net.broadcast()) {
                if let Some(same) = same_host(f, other) {
                    let key = if same.starts_with("client id") {
                        "client-id"
                    } else {
                        "hw-address"
                    };
                    bad.push(Invalid {
                        path: at(key),
                        reason: format!(
                            "{same} also has {a} reserved at run time; remove that first (ctl reservation-del --address {a})"
                        ),
                    });
                }
            }
        }
    }
    bad
}

/// Splits reservations replayed from the journal into those that still fit `config`
/// (checked as `check` does, one after another) and those that no longer do, each with
/// the reason: the file may have changed, or its subnets, since they were added.
pub fn accept(
    config: &Policy,
    replayed: impl IntoIterator<Item = Reservation>,
) -> (Runtime, Vec<(Reservation, Refusal)>) {
    let mut ok = Runtime::new();
    let mut refused = Vec::new();
    for r in replayed {
        match check(config, &ok, &r) {
            Ok(_) => {
                if let Some(a) = r.address {
                    ok.insert(a, r);
                }
            }
            Err(e) => refused.push((r, e)),
        }
    }
    (ok, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{LeaseTimes, OptionSet, Subnet};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn config() -> Policy {
        Policy {
            interfaces: vec!["eth1".into()],
            subnets: vec![
                Subnet {
                    net: "192.0.2.0/24".parse().unwrap(),
                    interface: Some(0),
                    pools: vec!["192.0.2.10-192.0.2.100".parse().unwrap()],
                    server_id: None,
                    lease: LeaseTimes::default(),
                    options: OptionSet::default(),
                    reservations: vec![Reservation {
                        hw_address: Some([2, 0, 0, 0, 0, 1]),
                        address: Some(ip("192.0.2.5")),
                        ..Default::default()
                    }],
                },
                Subnet {
                    net: "198.51.100.0/24".parse().unwrap(),
                    interface: None,
                    pools: vec!["198.51.100.10-198.51.100.20".parse().unwrap()],
                    server_id: None,
                    lease: LeaseTimes::default(),
                    options: OptionSet::default(),
                    reservations: vec![],
                },
            ],
            ..Policy::default()
        }
    }

    fn mac(last: u8, addr: &str) -> Reservation {
        Reservation {
            hw_address: Some([2, 0, 0, 0, 0, last]),
            address: Some(ip(addr)),
            ..Default::default()
        }
    }

    fn refusal(r: Result<usize, Refusal>) -> Refusal {
        r.expect_err("refused")
    }

    #[test]
    fn an_address_of_a_subnet_is_accepted_in_or_out_of_the_pools() {
        let (c, rt) = (config(), Runtime::new());
        assert_eq!(check(&c, &rt, &mac(9, "192.0.2.50")), Ok(0));
        assert_eq!(check(&c, &rt, &mac(9, "192.0.2.200")), Ok(0));
        assert_eq!(check(&c, &rt, &mac(9, "198.51.100.7")), Ok(1));
    }

    #[test]
    fn addresses_outside_the_subnets_or_not_host_addresses_are_invalid() {
        let (c, rt) = (config(), Runtime::new());
        let Refusal::Invalid(m) = refusal(check(&c, &rt, &mac(9, "203.0.113.5"))) else {
            panic!("not invalid")
        };
        assert_eq!(
            m,
            "203.0.113.5 is in no configured subnet (192.0.2.0/24, 198.51.100.0/24)"
        );
        for a in ["192.0.2.0", "192.0.2.255"] {
            assert!(matches!(
                refusal(check(&c, &rt, &mac(9, a))),
                Refusal::Invalid(_)
            ));
        }
        let nobody = Reservation {
            address: Some(ip("192.0.2.50")),
            ..Default::default()
        };
        assert!(matches!(
            refusal(check(&c, &rt, &nobody)),
            Refusal::Invalid(_)
        ));
    }

    #[test]
    fn duplicates_of_the_file_or_of_run_time_reservations_conflict() {
        let c = config();
        let mut rt = Runtime::new();
        let Refusal::Conflict(m) = refusal(check(&c, &rt, &mac(9, "192.0.2.5"))) else {
            panic!()
        };
        assert_eq!(
            m,
            "192.0.2.5 is already reserved for 02:00:00:00:00:01 in the configuration file (subnet[0].reservation[0])"
        );
        let Refusal::Conflict(m) = refusal(check(&c, &rt, &mac(1, "192.0.2.50"))) else {
            panic!()
        };
        assert!(m.contains("02:00:00:00:00:01 already has a reservation in 192.0.2.0/24"));
        // In another subnet the same host may have one.
        assert_eq!(check(&c, &rt, &mac(1, "198.51.100.7")), Ok(1));
        rt.insert(ip("192.0.2.50"), mac(9, "192.0.2.50"));
        let Refusal::Conflict(m) = refusal(check(&c, &rt, &mac(8, "192.0.2.50"))) else {
            panic!()
        };
        assert_eq!(
            m,
            "192.0.2.50 is already reserved for 02:00:00:00:00:09 (reservation-del it first)"
        );
        let Refusal::Conflict(m) = refusal(check(&c, &rt, &mac(9, "192.0.2.51"))) else {
            panic!()
        };
        assert_eq!(
            m,
            "02:00:00:00:00:09 already has 192.0.2.50 reserved in 192.0.2.0/24"
        );
        let by_id = Reservation {
            client_id: Some(vec![1, 2, 3]),
            address: Some(ip("192.0.2.52")),
            ..Default::default()
        };
        rt.insert(ip("192.0.2.52"), by_id.clone());
        let again = Reservation {
            address: Some(ip("192.0.2.53")),
            ..by_id
        };
        let Refusal::Conflict(m) = refusal(check(&c, &rt, &again)) else {
            panic!()
        };
        assert!(
            m.starts_with("client id 01:02:03 already has 192.0.2.52"),
            "{m}"
        );
    }

    #[test]
    fn a_file_that_reserves_what_was_reserved_at_run_time_is_named_by_key() {
        let mut c = config();
        let mut rt = Runtime::new();
        rt.insert(ip("192.0.2.50"), mac(9, "192.0.2.50"));
        rt.insert(ip("192.0.2.60"), mac(10, "192.0.2.60"));
        assert!(conflicts(&c, &rt).is_empty());
        c.subnets[0].reservations.push(mac(11, "192.0.2.50"));
        c.subnets[0].reservations.push(mac(10, "192.0.2.70"));
        let bad = conflicts(&c, &rt);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(bad[0].path, "subnet[0].reservation[1].ip-address");
        assert!(bad[0]
            .reason
            .contains("reservation-del --address 192.0.2.50"));
        assert_eq!(bad[1].path, "subnet[0].reservation[2].hw-address");
    }

    #[test]
    fn replayed_reservations_that_no_longer_fit_are_set_apart() {
        let c = config();
        let (ok, refused) = accept(
            &c,
            [
                mac(9, "192.0.2.50"),
                mac(9, "192.0.2.51"),
                mac(8, "203.0.113.5"),
                mac(7, "192.0.2.5"),
            ],
        );
        assert_eq!(ok.keys().copied().collect::<Vec<_>>(), [ip("192.0.2.50")]);
        assert_eq!(refused.len(), 3);
    }
}
