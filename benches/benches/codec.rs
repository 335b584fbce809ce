//! The wire codec alone: parsing typical client messages and writing a typical reply.

use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion};
use dhcp_benches::{discover, request, Shape, SERVER};
use dhcp_proto::wire::{code, Request, Writer};

fn codec(c: &mut Criterion) {
    let mut buf = [0u8; 400];
    let relayed = Shape {
        relayed: Some(Ipv4Addr::new(198, 18, 0, 9)),
        ..Shape::default()
    };
    let len = discover(&mut buf, 42, relayed);
    let disc = buf[..len].to_vec();
    let len = request(
        &mut buf,
        42,
        Ipv4Addr::new(198, 18, 1, 42),
        SERVER,
        Shape::default(),
    );
    let req = buf[..len].to_vec();
    let mut group = c.benchmark_group("codec");
    group.bench_function("parse_discover_relayed", |b| {
        b.iter(|| Request::parse(std::hint::black_box(&disc)).unwrap())
    });
    group.bench_function("parse_request", |b| {
        b.iter(|| Request::parse(std::hint::black_box(&req)).unwrap())
    });
    let parsed = Request::parse(&disc).unwrap();
    let mut out = [0u8; 1500];
    group.bench_function("write_offer", |b| {
        b.iter(|| {
            let mut w = Writer::reply_to(&mut out, &parsed.msg, 1472).unwrap();
            w.set_yiaddr(Ipv4Addr::new(198, 18, 1, 42));
            w.option(code::MESSAGE_TYPE, &[2]).unwrap();
            w.option_ip(code::SERVER_ID, SERVER).unwrap();
            w.option_u32(code::LEASE_TIME, 3600).unwrap();
            w.option_u32(code::RENEWAL_TIME, 1800).unwrap();
            w.option_u32(code::REBINDING_TIME, 3150).unwrap();
            w.option(code::CLIENT_ID, parsed.client_id.unwrap())
                .unwrap();
            w.option(code::RELAY_AGENT_INFO, parsed.relay_agent_info.unwrap())
                .unwrap();
            w.option_ip(code::SUBNET_MASK, Ipv4Addr::new(255, 254, 0, 0))
                .unwrap();
            w.option_ip(code::ROUTER, SERVER).unwrap();
            w.option(code::DNS_SERVERS, &[198, 18, 0, 53, 198, 18, 0, 54])
                .unwrap();
            w.option(code::DOMAIN_NAME, b"bench.example").unwrap();
            std::hint::black_box(w.finish())
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
