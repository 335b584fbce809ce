//! Engine plus codec, no I/O: DORA exchanges of distinct new clients per second on one
//! core (each iteration is one full DISCOVER/OFFER/REQUEST/ACK, both messages parsed and
//! both replies written). Issue target: at least 1,000,000 a second.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dhcp_benches::Driver;

fn dora(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dora_new_client", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            let mut driver = Driver::new();
            while left > 0 {
                if driver.room() == 0 {
                    driver = Driver::new(); // a fresh pool, outside the timed part
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
        })
    });
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

criterion_group!(benches, dora);
criterion_main!(benches);
