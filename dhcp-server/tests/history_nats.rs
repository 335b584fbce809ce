//! The NATS JetStream history sink against real nats-server 2.9: events land once each on
//! their subjects with the JSON consumers read, a redelivered batch adds nothing, the
//! position survives a reopen, a stopped server loses nothing, and a three-node cluster
//! with one node killed -9 mid-stream loses nothing. Needs root (namespaces); see
//! `common`.

#[allow(dead_code)] // each test crate uses part of the shared harness
mod common;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::nats::{eventually, in_netns, NatsLab, Reader, Stored};
use dhcp_proto::lease::{BindingState, HwAddr};
use dhcp_server::history::{
    Batch, Event, EventKind, NatsOptions, NatsSink, Origin, Position, Relay, Role, Sink,
};

fn origin(site: &str) -> Origin {
    Origin {
        server: "dhcp-a.example".into(),
        site: site.into(),
        role: Role::Primary,
    }
}

fn options(nl: &NatsLab) -> NatsOptions {
    NatsOptions {
        servers: nl.urls(),
        // Short, so a dead server shows within the test's bounds.
        timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// Event `i`: kinds in turn, every field filled in some events, addresses reused every
/// 50 events so one address has several events whose order matters.
fn event(i: u64) -> Event {
    let kind = EventKind::ALL[(i % EventKind::ALL.len() as u64) as usize];
    let n = i as u32;
    Event {
        kind,
        state: if kind.binds(BindingState::Active) {
            BindingState::Active
        } else {
            BindingState::Free
        },
        at: 1_800_000_000 + i,
        addr: Ipv4Addr::new(198, 18, 1, (n % 50) as u8),
        hw: HwAddr::new(1, &[2, 0, 0, 0, (n >> 8) as u8, n as u8]),
        client_id: if i.is_multiple_of(3) {
            vec![1, 2, 0, 0, 0, n as u8]
        } else {
            Vec::new()
        },
        host_name: if i.is_multiple_of(2) {
            format!("host-{i}").into_bytes()
        } else {
            Vec::new()
        },
        relay: if i.is_multiple_of(4) {
            Relay {
                circuit_id: b"eth0".to_vec(),
                remote_id: vec![0xab, n as u8],
                subscriber_id: Vec::new(),
                giaddr: Some(Ipv4Addr::new(192, 0, 2, 1)),
            }
        } else {
            Relay::default()
        },
        starts: 1_800_000_000 + i,
        ends: 1_800_003_600 + i,
        stamp: 1_000 + i,
        shard: 0,
        seq: i,
    }
}

/// Events `from..to`, with the position after them.
fn batch(from: u64, to: u64) -> Batch {
    Batch {
        events: (from..to).map(event).collect(),
        after: position(to),
    }
}

fn position(next: u64) -> Position {
    Position {
        journal: 1,
        generation: 1,
        next: vec![next],
    }
}

/// Opens until the servers answer (a cluster elects its leaders after starting).
fn open_eventually(sink: &mut NatsSink) -> Option<Position> {
    eventually("sink opens", Duration::from_secs(60), || {
        match sink.open() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("open: {e}");
                None
            }
        }
    })
}

/// Each stored message is the event it names, once, on its kind's subject, and each
/// address's events are in journal order; with `in_order`, all of them are.
fn check_stored(stored: &[Stored], expected: &[Event], origin: &Origin, in_order: bool) {
    assert_eq!(stored.len(), expected.len(), "message count");
    let by_id: HashMap<String, &Event> = expected.iter().map(|e| (e.id(origin), e)).collect();
    let mut seen = HashSet::new();
    let mut last_stamp: HashMap<Ipv4Addr, u64> = HashMap::new();
    for (n, s) in stored.iter().enumerate() {
        let e = by_id
            .get(&s.id)
            .unwrap_or_else(|| panic!("message {n} has an id no event has: {:?}", s.id));
        assert!(
            seen.insert(s.id.as_str()),
            "{} is in the stream twice",
            s.id
        );
        if in_order {
            assert_eq!(
                s.id,
                expected[n].id(origin),
                "stream order is not batch order"
            );
        }
        if let Some(before) = last_stamp.insert(e.addr, e.stamp) {
            assert!(
                before < e.stamp,
                "{} is stored after a later event of {}",
                s.id,
                e.addr
            );
        }
        assert_eq!(
            s.subject,
            format!("dhcp.{}.lease.{}", origin.site, e.kind.as_str())
        );
        assert_eq!(s.json, e.to_json(origin), "payload of {}", s.id);
    }
}

#[test]
fn events_land_once_on_their_subjects() {
    let Some(nl) = NatsLab::single("nats_events") else {
        return;
    };
    let (ns, urls, opts) = (nl.client_ns(), nl.urls(), options(&nl));
    in_netns(&ns, || {
        let o = origin("east");
        let mut sink = NatsSink::new(opts.clone(), o.clone()).unwrap();
        assert_eq!(sink.open().unwrap(), None, "a new stream has no position");
        // Every kind several times, and several events per address.
        let b = batch(0, 120);
        sink.deliver(&b).unwrap();
        let reader = Reader::connect(&urls);
        check_stored(&reader.all("dhcp-east"), &b.events, &o, true);
        assert_eq!(
            reader.position(sink.position_key()).as_deref(),
            Some("0000000000000001/g1:120")
        );
        // The position comes back to a sink made afresh, as after a restart.
        drop(sink);
        let mut again = NatsSink::new(opts, o).unwrap();
        assert_eq!(again.open().unwrap(), Some(position(120)));
    });
}

#[test]
fn redelivered_batch_adds_nothing() {
    let Some(nl) = NatsLab::single("nats_redeliver") else {
        return;
    };
    let (ns, urls, opts) = (nl.client_ns(), nl.urls(), options(&nl));
    in_netns(&ns, || {
        let o = origin("west");
        let mut sink = NatsSink::new(opts.clone(), o.clone()).unwrap();
        assert_eq!(sink.open().unwrap(), None);
        let (b1, b2) = (batch(0, 500), batch(500, 1000));
        sink.deliver(&b1).unwrap();
        sink.deliver(&b2).unwrap();
        let key = sink.position_key().to_string();
        drop(sink);
        // A crash after b2's acknowledgements, before its position was stored.
        let reader = Reader::connect(&urls);
        reader.set_position(&key, &b1.after.to_string());
        let mut sink = NatsSink::new(opts.clone(), o.clone()).unwrap();
        assert_eq!(sink.open().unwrap(), Some(b1.after.clone()));
        sink.deliver(&b2).unwrap();
        let all: Vec<Event> = b1.events.iter().chain(&b2.events).cloned().collect();
        check_stored(&reader.all("dhcp-west"), &all, &o, true);
        assert_eq!(sink.open().unwrap(), Some(b2.after.clone()));

        // A position that is not one is an error that names the key, not a fresh start.
        reader.set_position(&key, "junk");
        let err = NatsSink::new(opts, o).unwrap().open().unwrap_err();
        assert!(
            err.0.contains(&key) && err.0.contains("not a journal position"),
            "{err}"
        );
    });
}

#[test]
fn stopped_server_loses_nothing() {
    let Some(mut nl) = NatsLab::single("nats_stopped") else {
        return;
    };
    let (ns, urls, opts) = (nl.client_ns(), nl.urls(), options(&nl));
    in_netns(&ns, || {
        let o = origin("north");
        let mut sink = NatsSink::new(opts, o.clone()).unwrap();
        assert_eq!(sink.open().unwrap(), None);
        let (b1, b2) = (batch(0, 300), batch(300, 600));
        sink.deliver(&b1).unwrap();

        nl.stop(0);
        let t = Instant::now();
        let err = sink
            .deliver(&b2)
            .expect_err("deliver with the server stopped");
        eprintln!("deliver failed after {:?}: {err}", t.elapsed());
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a dead server took {:?} to notice",
            t.elapsed()
        );
        assert!(sink.open().is_err(), "open with the server stopped");
        std::thread::sleep(Duration::from_secs(2));

        nl.start(0);
        assert_eq!(open_eventually(&mut sink), Some(b1.after.clone()));
        sink.deliver(&b2).unwrap();
        let all: Vec<Event> = b1.events.iter().chain(&b2.events).cloned().collect();
        check_stored(&Reader::connect(&urls).all("dhcp-north"), &all, &o, true);
    });
}

/// A sink left idle answers the server's PINGs (a thread drives its connection between
/// deliveries): the server, pinging every second, does not drop it as stale, and the
/// next batch goes out at once.
#[test]
fn idle_sink_keeps_its_connection() {
    let Some(nl) = NatsLab::single_with("nats_idle", "ping_interval: \"1s\"\nping_max: 2\n") else {
        return;
    };
    let (ns, urls, opts) = (nl.client_ns(), nl.urls(), options(&nl));
    in_netns(&ns, || {
        let o = origin("idle");
        let mut sink = NatsSink::new(opts, o.clone()).unwrap();
        assert_eq!(sink.open().unwrap(), None);
        let (b1, b2) = (batch(0, 100), batch(100, 200));
        sink.deliver(&b1).unwrap();
        std::thread::sleep(Duration::from_secs(6));
        // Undriven, the connection is closed by the server meanwhile and this fails.
        sink.deliver(&b2).unwrap();
        let all: Vec<Event> = b1.events.iter().chain(&b2.events).cloned().collect();
        check_stored(&Reader::connect(&urls).all("dhcp-idle"), &all, &o, true);
    });
}

/// 40,000 events in batches of 250 through a follower's loop (deliver; on an error,
/// open again and resume at the stored position), the stream's leader killed -9 after a
/// quarter of them. A consumer then finds every event exactly once.
#[test]
fn cluster_node_killed_loses_nothing() {
    const TOTAL: u64 = 40_000;
    const BATCH: u64 = 250;
    let Some(mut nl) = NatsLab::cluster("nats_cluster") else {
        return;
    };
    let (ns, urls) = (nl.client_ns(), nl.urls());
    let opts = NatsOptions {
        replicas: 3,
        ..options(&nl)
    };
    in_netns(&ns, || {
        let o = origin("south");
        let mut sink = NatsSink::new(opts, o.clone()).unwrap();
        let reader = Reader::connect(&urls);
        let mut next = open_eventually(&mut sink).map_or(0, |p| p.next[0]);
        assert_eq!(next, 0);
        let (mut failures, mut killed) = (0u32, None);
        while next < TOTAL {
            if killed.is_none() && next >= TOTAL / 4 {
                let leader = reader.leader("dhcp-south").expect("stream leader");
                let i = nl.node_of(&leader).expect("leader is one of ours");
                eprintln!("killing stream leader {leader} at event {next}");
                nl.kill(i);
                killed = Some(leader);
            }
            let b = batch(next, (next + BATCH).min(TOTAL));
            match sink.deliver(&b) {
                Ok(()) => next = b.after.next[0],
                Err(e) => {
                    failures += 1;
                    eprintln!("deliver at {next}: {e}");
                    assert!(
                        failures < 100,
                        "the cluster never recovered:\n{}",
                        nl.logs()
                    );
                    let p = open_eventually(&mut sink).expect("a position was stored");
                    // The position is the last fully acknowledged batch's, never beyond.
                    assert!(p.next[0] == next || p.next[0] == b.after.next[0], "{p}");
                    next = p.next[0];
                }
            }
        }
        let killed = killed.expect("the kill happened");
        eprintln!("{failures} failed deliveries, all redelivered");
        let leader = eventually("a new leader", Duration::from_secs(30), || {
            reader.leader("dhcp-south")
        });
        assert_ne!(leader, killed, "the killed node still leads");
        let all: Vec<Event> = (0..TOTAL).map(event).collect();
        let stored = Reader::connect(&urls).all("dhcp-south");
        // A failover may reorder addresses against each other, never one address's events.
        check_stored(&stored, &all, &o, false);
    });
}
