//! What a reload may change while the server serves, and what needs a restart.
//!
//! Applied at once: `authoritative`, `offer-hold`, `decline-hold`, `log-level`, and per
//! subnet (matched by its `subnet` prefix) the lease times, the options and the
//! reservations. Everything else (interfaces, backend, workers and their polling, the
//! journal, the control socket and metrics listener (and who may scrape it), the user
//! and group the server runs as, the flood limits, the failover partnership, the classes, subnets added, removed or reordered, a subnet's interface,
//! pools or server-id) shapes the sockets, threads, XDP program or lease tables and is
//! left as it runs, reported as needing a restart.

use std::fmt::Display;

use super::{Config, LeaseTimes, OptionSet, Reservation, Subnet};
use dhcp_proto::wire::code;

/// A reload worked out: the configuration to run with (the file's values where they may
/// change now, the running ones elsewhere) and one line per change, applied or not.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub config: Config,
    pub applied: Vec<String>,
    pub restart_required: Vec<String>,
}

/// Reservation changes in one subnet beyond this are summed up in one line.
const LISTED: usize = 20;

/// Compares the running configuration with the file's (both validated).
pub fn plan(running: &Config, file: &Config) -> Plan {
    let mut next = running.clone();
    let mut applied = Vec::new();
    let mut restart = Vec::new();

    fn change<T: PartialEq>(
        out: &mut Vec<String>,
        key: &str,
        old: &T,
        new: &T,
        show: impl Fn(&T) -> String,
    ) -> bool {
        if old == new {
            return false;
        }
        out.push(format!("{key} {} -> {}", show(old), show(new)));
        true
    }
    let plain = |v: &dyn Display| v.to_string();
    if change(
        &mut applied,
        "authoritative",
        &running.policy.authoritative,
        &file.policy.authoritative,
        |v| plain(v),
    ) {
        next.policy.authoritative = file.policy.authoritative;
    }
    if change(
        &mut applied,
        "offer-hold",
        &running.policy.offer_hold,
        &file.policy.offer_hold,
        |v| plain(v),
    ) {
        next.policy.offer_hold = file.policy.offer_hold;
    }
    if change(
        &mut applied,
        "decline-hold",
        &running.policy.decline_hold,
        &file.policy.decline_hold,
        |v| plain(v),
    ) {
        next.policy.decline_hold = file.policy.decline_hold;
    }
    if change(
        &mut applied,
        "log-level",
        &running.log_level,
        &file.log_level,
        |v| v.clone().unwrap_or_else(|| "(default)".into()),
    ) {
        next.log_level = file.log_level.clone();
    }

    let r = &mut restart;
    change(
        r,
        "interfaces",
        &running.policy.interfaces,
        &file.policy.interfaces,
        |v| v.join(", "),
    );
    change(r, "backend", &running.backend, &file.backend, |v| {
        v.name().to_owned()
    });
    change(r, "workers", &running.workers, &file.workers, |v| plain(v));
    change(r, "busy-poll", &running.busy_poll, &file.busy_poll, |v| {
        plain(v)
    });
    change(
        r,
        "pin-workers",
        &running.pin_workers,
        &file.pin_workers,
        |v| plain(v),
    );
    change(r, "state-dir", &running.state_dir, &file.state_dir, |v| {
        v.as_ref()
            .map_or("(none)".into(), |p| p.display().to_string())
    });
    change(
        r,
        "durability",
        &running.durability,
        &file.durability,
        |v| plain(v),
    );
    change(
        r,
        "journal-segment-size",
        &running.journal_segment_bytes,
        &file.journal_segment_bytes,
        |v| plain(v),
    );
    change(
        r,
        "control-socket",
        &running.control_socket,
        &file.control_socket,
        |v| {
            v.as_ref()
                .map_or("(none)".into(), |p| p.display().to_string())
        },
    );
    change(
        r,
        "control-uids",
        &running.control_uids,
        &file.control_uids,
        |v| ids(v),
    );
    change(
        r,
        "control-gids",
        &running.control_gids,
        &file.control_gids,
        |v| ids(v),
    );
    change(
        r,
        "metrics-listen",
        &running.metrics_listen,
        &file.metrics_listen,
        |v| v.map_or("(none)".into(), |a| a.to_string()),
    );
    change(
        r,
        "metrics-allow",
        &running.metrics_allow,
        &file.metrics_allow,
        |v| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    // The switch happens once, after setup; a running server cannot become root again.
    // A file without `user` says nothing of it: `run --user` may have chosen it.
    if file.user.is_some() {
        let name = |v: &Option<String>| v.clone().unwrap_or_else(|| "(as started)".into());
        change(r, "user", &running.user, &file.user, name);
        change(r, "group", &running.group, &file.group, name);
    }
    // The limits are constants of the loaded XDP program and size its tables.
    change(r, "flood", &running.flood, &file.flood, |f| {
        format!(
            "client {}/{}, circuit {}/{}, table {}",
            f.client_rate, f.client_burst, f.circuit_rate, f.circuit_burst, f.table_size
        )
    });
    change(
        r,
        "leasequery.bulk",
        &running.bulk_leasequery,
        &file.bulk_leasequery,
        |v| {
            v.map_or("(off)".into(), |b| {
                format!(
                    "{} ({} connections, {} s)",
                    b.listen, b.connections, b.timeout
                )
            })
        },
    );
    change(
        r,
        "failover",
        &running.policy.failover,
        &file.policy.failover,
        |v| {
            v.as_ref()
                .map_or("(none)".into(), |f| format!("partnership '{}'", f.name))
        },
    );
    // Pools name their classes by place in the list, and pools need a restart; so do the
    // classes, or a pool's `allow` would name another class. Run-time members stay.
    if running.policy.classes != file.policy.classes {
        let names = |v: &Config| match v.policy.classes.as_slice() {
            [] => "(none)".to_owned(),
            classes => classes
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let (old, new) = (names(running), names(file));
        r.push(if old == new {
            format!("classes {old}: tests, members or settings")
        } else {
            format!("classes {old} -> {new}")
        });
    }

    let mut matched = Vec::new();
    for (i, rs) in running.policy.subnets.iter().enumerate() {
        let Some((j, fs)) = file
            .policy
            .subnets
            .iter()
            .enumerate()
            .find(|(_, f)| f.net == rs.net)
        else {
            restart.push(format!("subnet {} removed", rs.net));
            continue;
        };
        matched.push(j);
        let at = format!("subnet {}:", rs.net);
        let link = |c: &Config, s: &Subnet| {
            s.interface
                .and_then(|l| c.policy.interfaces.get(l as usize).cloned())
                .unwrap_or_else(|| "(relayed only)".into())
        };
        let (old_link, new_link) = (link(running, rs), link(file, fs));
        change(
            &mut restart,
            &format!("{at} interface"),
            &old_link,
            &new_link,
            |v| v.clone(),
        );
        // The ranges size the lease table; who may use a pool and its options reload.
        let ranges = |s: &dhcp_proto::policy::Subnet| -> Vec<_> {
            s.pools.iter().map(|p| p.range).collect()
        };
        change(
            &mut restart,
            &format!("{at} pools"),
            &ranges(rs),
            &ranges(fs),
            |v| {
                v.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        change(
            &mut restart,
            &format!("{at} server-id"),
            &rs.server_id,
            &fs.server_id,
            |v| {
                v.map_or("(the address the request reached)".into(), |a| {
                    a.to_string()
                })
            },
        );
        let n = &mut next.policy.subnets[i];
        lease_times(&mut applied, &at, &rs.lease, &fs.lease);
        n.lease = fs.lease;
        if let Some(line) = options(&at, &rs.options, &fs.options) {
            applied.push(line);
            n.options = fs.options.clone();
        }
        if rs.reservations != fs.reservations {
            reservations(&mut applied, &at, &rs.reservations, &fs.reservations);
            n.reservations = fs.reservations.clone();
        }
    }
    for fs in &file.policy.subnets {
        if !running.policy.subnets.iter().any(|r| r.net == fs.net) {
            restart.push(format!("subnet {} added", fs.net));
        }
    }
    if matched.windows(2).any(|w| w[0] > w[1]) {
        restart.push("subnets reordered (the order of a shared network's subnets)".into());
    }
    Plan {
        config: next,
        applied,
        restart_required: restart,
    }
}

fn ids(v: &[u32]) -> String {
    if v.is_empty() {
        return "(none)".into();
    }
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

fn lease_times(out: &mut Vec<String>, at: &str, old: &LeaseTimes, new: &LeaseTimes) {
    let mut one = |key: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{at} {key} {a} -> {b}"));
        }
    };
    one(
        "lease-time",
        old.default.to_string(),
        new.default.to_string(),
    );
    one("min-lease-time", old.min.to_string(), new.min.to_string());
    one("max-lease-time", old.max.to_string(), new.max.to_string());
    let t = |v: Option<u32>, share: &str| {
        v.map_or(format!("({share} of the lease)"), |s| s.to_string())
    };
    one("renew-time", t(old.renew, "1/2"), t(new.renew, "1/2"));
    one("rebind-time", t(old.rebind, "7/8"), t(new.rebind, "7/8"));
}

/// The options whose value changed, by their key in the file.
fn options(at: &str, old: &OptionSet, new: &OptionSet) -> Option<String> {
    if old == new {
        return None;
    }
    let mut codes: Vec<u8> = old.iter().chain(new.iter()).map(|(c, _)| c).collect();
    codes.sort_unstable();
    codes.dedup();
    let changed: Vec<String> = codes
        .into_iter()
        .filter(|&c| old.get(c) != new.get(c))
        .map(option_name)
        .collect();
    Some(format!("{at} options {}", changed.join(", ")))
}

fn option_name(c: u8) -> String {
    match c {
        code::ROUTER => "routers".into(),
        code::DNS_SERVERS => "dns-servers".into(),
        code::DOMAIN_NAME => "domain-name".into(),
        code::BROADCAST_ADDRESS => "broadcast-address".into(),
        code::NTP_SERVERS => "ntp-servers".into(),
        code::DOMAIN_SEARCH => "domain-search".into(),
        code::CLASSLESS_ROUTES => "classless-routes".into(),
        c => format!("option {c}"),
    }
}

fn reservations(out: &mut Vec<String>, at: &str, old: &[Reservation], new: &[Reservation]) {
    let gone: Vec<&Reservation> = old.iter().filter(|r| !new.contains(r)).collect();
    let came: Vec<&Reservation> = new.iter().filter(|r| !old.contains(r)).collect();
    if gone.len() + came.len() > LISTED {
        out.push(format!(
            "{at} reservations: {} added or changed, {} removed or changed",
            came.len(),
            gone.len()
        ));
        return;
    }
    let show = |r: &Reservation| {
        let host = super::reserve::host(r);
        match r.address {
            Some(a) => format!("reservation {a} for {host}"),
            None => format!("reservation for {host}"),
        }
    };
    for r in gone {
        out.push(format!("{at} {} removed", show(r)));
    }
    for r in came {
        out.push(format!("{at} {} added", show(r)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, Policy, Subnet};

    fn config() -> Config {
        Config {
            policy: Policy {
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
                            address: Some("192.0.2.5".parse().unwrap()),
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
            },
            ..Config::default()
        }
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let p = plan(&config(), &config());
        assert_eq!(p.config, config());
        assert!(
            p.applied.is_empty() && p.restart_required.is_empty(),
            "{p:?}"
        );
    }

    #[test]
    fn lease_times_options_and_reservations_apply() {
        let mut f = config();
        f.policy.offer_hold = 10;
        f.log_level = Some("debug".into());
        f.policy.subnets[0].lease.default = 600;
        f.policy.subnets[0].lease.renew = Some(200);
        f.policy.subnets[0]
            .options
            .set_addresses(code::DNS_SERVERS, &["192.0.2.53".parse().unwrap()]);
        f.policy.subnets[0].reservations[0].address = Some("192.0.2.6".parse().unwrap());
        let p = plan(&config(), &f);
        assert_eq!(p.config, f, "everything in the file applies");
        assert!(p.restart_required.is_empty(), "{p:?}");
        assert_eq!(
            p.applied,
            [
                "offer-hold 30 -> 10",
                "log-level (default) -> debug",
                "subnet 192.0.2.0/24: lease-time 3600 -> 600",
                "subnet 192.0.2.0/24: renew-time (1/2 of the lease) -> 200",
                "subnet 192.0.2.0/24: options dns-servers",
                "subnet 192.0.2.0/24: reservation 192.0.2.5 for 02:00:00:00:00:01 removed",
                "subnet 192.0.2.0/24: reservation 192.0.2.6 for 02:00:00:00:00:01 added",
            ]
        );
    }

    #[test]
    fn what_shapes_sockets_threads_or_tables_needs_a_restart() {
        let mut f = config();
        f.policy.interfaces.push("eth2".into());
        f.backend = Backend::Udp;
        f.workers = 4;
        f.state_dir = Some("/var/lib/dhcp-server".into());
        f.flood.client_rate = 10;
        f.flood.client_burst = 20;
        f.metrics_allow = vec!["192.0.2.0/24".parse().unwrap()];
        f.user = Some("dhcp-server".into());
        f.policy.subnets[0].pools[0] = "192.0.2.10-192.0.2.150".parse().unwrap();
        f.policy.subnets[0].lease.default = 600;
        f.policy.subnets.swap(0, 1);
        f.policy.subnets.push(Subnet {
            net: "203.0.113.0/24".parse().unwrap(),
            ..f.policy.subnets[0].clone()
        });
        f.policy.classes.push(dhcp_proto::policy::Class {
            name: "line".into(),
            membership: dhcp_proto::policy::Membership::Match {
                value: dhcp_proto::expr::Value::parse("relay4[1]").unwrap(),
                spawn: true,
                subclasses: Vec::new(),
            },
            settings: Default::default(),
            lease_limit: None,
        });
        let p = plan(&config(), &f);
        assert_eq!(
            p.restart_required,
            [
                "interfaces eth1 -> eth1, eth2",
                "backend auto -> udp",
                "workers 0 -> 4",
                "state-dir (none) -> /var/lib/dhcp-server",
                "metrics-allow 127.0.0.0/8, ::1/128 -> 192.0.2.0/24",
                "user (as started) -> dhcp-server",
                "flood client 0/0, circuit 0/0, table 65536 -> client 10/20, circuit 0/0, table 65536",
                "classes (none) -> line",
                "subnet 192.0.2.0/24: pools 192.0.2.10-192.0.2.100 -> 192.0.2.10-192.0.2.150",
                "subnet 203.0.113.0/24 added",
                "subnets reordered (the order of a shared network's subnets)",
            ]
        );
        assert_eq!(p.applied, ["subnet 192.0.2.0/24: lease-time 3600 -> 600"]);
        let mut want = config();
        want.policy.subnets[0].lease.default = 600;
        assert_eq!(p.config, want, "only the lease time moved");
    }

    #[test]
    fn a_removed_subnet_stays_until_a_restart() {
        let mut f = config();
        f.policy.subnets.pop();
        let p = plan(&config(), &f);
        assert_eq!(p.restart_required, ["subnet 198.51.100.0/24 removed"]);
        assert_eq!(p.config, config());
    }
}
