//! The engine allocates nothing per packet once built: a counting global allocator watches
//! thousands of DORA exchanges of new clients, renewals and releases. Its own test binary,
//! so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use dhcp_benches::Driver;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn dora_renew_and_release_allocate_nothing() {
    let mut driver = Driver::new();
    let mut held = [std::net::Ipv4Addr::UNSPECIFIED; 2000];
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for (n, slot) in held.iter_mut().enumerate() {
        *slot = driver.dora();
        assert!(driver.renew(n as u32, *slot));
    }
    for (n, addr) in held.iter().enumerate().step_by(2) {
        driver.release(n as u32, *addr);
    }
    for _ in 0..2000 {
        driver.dora();
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    assert_eq!(
        after - before,
        0,
        "the engine allocated {} times",
        after - before
    );
    assert_eq!(
        driver
            .engine
            .stats()
            .sent(dhcp_proto::wire::MessageType::Ack),
        6000
    );
}
