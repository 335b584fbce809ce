//! Engine plus codec, no I/O: DORA exchanges of distinct new clients per second on one
//! core (each iteration is one full DISCOVER/OFFER/REQUEST/ACK, both messages parsed and
//! both replies written). Issue target: at least 1,000,000 a second, also with 20 client
//! classes and 100,000 subclass members, every client relayed with its own circuit id;
//! and the same with a lease limit per line, which adds a shared counter per new lease.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dhcp_benches::{policy, policy_with_classes, Driver, Shape, RELAY};
use dhcp_proto::policy::Policy;

/// Subscriber lines in the classed runs: one listed member of the line class each.
const LINES: u32 = 100_000;

fn dora(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    let relayed = Shape {
        relayed: Some(RELAY),
        lines: LINES,
    };
    let classed = policy_with_classes(LINES, false);
    let limited = policy_with_classes(LINES, true);
    let runs: [(&str, &dyn Fn() -> Policy, Shape); 4] = [
        ("dora_new_client", &policy, Shape::default()),
        ("dora_new_client_relayed", &policy, relayed),
        ("dora_new_client_classes", &|| classed.clone(), relayed),
        (
            "dora_new_client_classes_limited",
            &|| limited.clone(),
            relayed,
        ),
    ];
    for (name, make, shape) in runs {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| dora_runs(iters, || Driver::with(make(), shape)))
        });
    }
    group.bench_function("renew", |b| {
        let mut driver = Driver::new();
        let held: Vec<_> = (0..10_000).map(|_| driver.dora()).collect();
        let mut i = 0;
        b.iter(|| {
            let n = i % held.len();
            i += 1;
            assert!(driver.renew(n as u32, held[n]));
        })
    });
    group.finish();
}

/// `iters` DORA exchanges of new clients, a fresh engine from `fresh` whenever the pool
/// runs dry, outside the timed part.
fn dora_runs(iters: u64, fresh: impl Fn() -> Driver) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters;
    let mut driver = fresh();
    while left > 0 {
        if driver.room() == 0 {
            driver = fresh();
        }
        let batch = left.min(driver.room() as u64);
        let start = Instant::now();
        for _ in 0..batch {
            std::hint::black_box(driver.dora());
        }
        spent += start.elapsed();
        left -= batch;
    }
    spent
}

criterion_group!(benches, dora);
criterion_main!(benches);
