//! AF_XDP sockets: one UMEM shared by every socket of the server, and one socket per
//! (queue, worker) with its own RX and TX rings.
//!
//! The XDP program picks the worker that owns a client by hashing its identifier, not by
//! the queue the NIC chose, so every worker needs a socket on every queue. Sockets on one
//! queue share that queue's fill and completion rings (the kernel keeps one pair per
//! device queue); a worker takes the queue's `Mutex` once per batch to hand back frames
//! and reap completions, never per packet. On a single-queue device such as veth that is
//! one lock shared by the workers, touched a few thousand times a second at full load.
//!
//! A reply is built in the frame of the request it answers: the kernel puts a received
//! frame in the first half of its 4 KiB chunk and the reply goes in the second half, so
//! the request stays readable while the reply is written and nothing is copied.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use std::time::Instant;

use hdrhistogram::Histogram;
use memmap2::{MmapMut, MmapOptions, MmapRaw};
use parking_lot::Mutex;

/// UMEM chunk size: a page, so a frame never straddles two.
pub const FRAME_SIZE: u32 = 4096;
/// Where in its chunk a reply is written (see the module comment).
pub const REPLY_OFFSET: u64 = 2048;
/// Ring sizes: RX and TX per socket, fill and completion per queue.
const RING: u32 = 2048;
const COMPLETION: u32 = 4096;
/// Chunks per queue: enough to keep the fill ring full while a ring's worth is in
/// flight in RX and TX, and two rings' worth more for ACKs held until their lease is
/// durable. With only the first two, ACKs held through one slow msync (tens of
/// milliseconds at tens of thousands of ACKs a second) emptied the fill ring and the
/// kernel dropped requests; 16 MiB more per queue rides out about 80 ms at 50,000 a
/// second.
const FRAMES_PER_QUEUE: u32 = 4 * RING;
/// Frames handled per pass over a socket.
pub const BATCH: u32 = 64;

/// How the sockets ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// The driver DMAs straight into the UMEM.
    ZeroCopy,
    /// The kernel copies frames in and out (veth, generic XDP).
    Copy,
}

impl std::fmt::Display for CopyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyMode::ZeroCopy => "zero-copy",
            CopyMode::Copy => "copy",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("cannot {what} for the AF_XDP socket on {ifname} queue {queue}: {source}")]
    Setup {
        what: &'static str,
        ifname: String,
        queue: u32,
        source: io::Error,
    },
    #[error("cannot map {bytes} bytes of packet memory: {0}", bytes = .1)]
    Umem(io::Error, usize),
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T and its size is passed with it.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn getsockopt<T>(fd: RawFd, opt: libc::c_int) -> io::Result<T> {
    // SAFETY: the options read here are plain C structs for which all-zero is valid.
    let mut value: T = unsafe { zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` has room for `len` bytes, and the kernel writes at most that.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// A descriptor ring shared with the kernel: the producer and consumer indexes, the
/// flags word and the entries, all in one mapping of the socket.
struct Ring<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    size: u32,
    /// Our copies of the indexes: ours is authoritative, the kernel's is re-read only
    /// when the cached one says the ring is full (producing) or empty (consuming).
    head: u32,
    tail: u32,
    _map: MmapRaw,
}

// SAFETY: the ring's pointers are into `_map`, which moves with it; the kernel is the only
// other party and synchronises through the atomic indexes.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        let map = MmapOptions::new()
            .offset(pgoff)
            .len(len)
            .populate()
            .map_raw(fd)?;
        let base = map.as_mut_ptr();
        // SAFETY: the kernel laid the ring out at these offsets inside the `len` bytes
        // just mapped; the index words are u32 and aligned.
        let (producer, consumer, flags, entries) = unsafe {
            (
                base.add(off.producer as usize) as *const AtomicU32,
                base.add(off.consumer as usize) as *const AtomicU32,
                base.add(off.flags as usize) as *const AtomicU32,
                base.add(off.desc as usize) as *mut T,
            )
        };
        // SAFETY: valid pointers into the mapping, as above.
        let (head, tail) = unsafe {
            (
                (*producer).load(Ordering::Acquire),
                (*consumer).load(Ordering::Acquire),
            )
        };
        Ok(Self {
            producer,
            consumer,
            flags,
            entries,
            mask: size - 1,
            size,
            head,
            tail,
            _map: map,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping owned by `self`.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as above.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Producing: room for up to `want` entries, re-reading the kernel's consumer index
    /// only when the cached one leaves too little.
    fn room(&mut self, want: u32) -> u32 {
        let mut free = self.size - self.head.wrapping_sub(self.tail);
        if free < want {
            self.tail = self.consumer().load(Ordering::Acquire);
            free = self.size - self.head.wrapping_sub(self.tail);
        }
        free.min(want)
    }

    /// Producing: writes entry `i` past the last submitted one.
    fn put(&mut self, i: u32, v: T) {
        let at = (self.head.wrapping_add(i) & self.mask) as usize;
        // SAFETY: `at` is within the ring, and entries between our producer index and the
        // kernel's consumer index (checked by `room`) are ours to write.
        unsafe { self.entries.add(at).write(v) }
    }

    /// Producing: entries handed to the kernel that it has not taken yet.
    fn unconsumed(&mut self) -> u32 {
        self.tail = self.consumer().load(Ordering::Acquire);
        self.head.wrapping_sub(self.tail)
    }

    /// Producing: hands the `n` entries written to the kernel.
    fn submit(&mut self, n: u32) {
        self.head = self.head.wrapping_add(n);
        self.producer().store(self.head, Ordering::Release);
    }

    /// Consuming: how many entries are ready, up to `max`.
    fn ready(&mut self, max: u32) -> u32 {
        let mut n = self.head.wrapping_sub(self.tail);
        if n == 0 {
            self.head = self.producer().load(Ordering::Acquire);
            n = self.head.wrapping_sub(self.tail);
        }
        n.min(max)
    }

    /// Consuming: entry `i` of those `ready` returned.
    fn get(&self, i: u32) -> T {
        let at = (self.tail.wrapping_add(i) & self.mask) as usize;
        // SAFETY: `at` is within the ring and the entry was published by the kernel's
        // producer index, read with Acquire in `ready`.
        unsafe { self.entries.add(at).read() }
    }

    /// Consuming: gives `n` entries back to the kernel.
    fn release(&mut self, n: u32) {
        self.tail = self.tail.wrapping_add(n);
        self.consumer().store(self.tail, Ordering::Release);
    }
}

/// The packet memory every socket shares.
struct Umem {
    area: MmapMut,
}

impl Umem {
    fn chunk_ptr(&self, addr: u64) -> *mut u8 {
        let base = addr & !(FRAME_SIZE as u64 - 1);
        assert!(base + FRAME_SIZE as u64 <= self.area.len() as u64);
        // SAFETY: `base` is a chunk start inside the area (asserted above).
        unsafe { self.area.as_ptr().cast_mut().add(base as usize) }
    }
}

/// What one queue's sockets share: the fill and completion rings and the chunks not on
/// any ring.
struct Queue {
    fill: Ring<u64>,
    completion: Ring<u64>,
    spare: Vec<u64>,
    /// Frames on the queue's TX rings or completion ring, not yet reaped.
    in_flight: u32,
}

impl Queue {
    /// Counts `sent` frames as in flight, reaps sent frames and puts them, with `done`,
    /// on the fill ring; what does not fit waits in `spare`. Returns whether frames are
    /// still in flight, so an idle socket keeps reaping until none are: otherwise a burst
    /// could leave every chunk on the completion ring and nothing to receive into.
    fn recycle(&mut self, done: &mut Vec<u64>, sent: u32) -> bool {
        self.in_flight += sent;
        let n = self.completion.ready(COMPLETION);
        for i in 0..n {
            self.spare.push(self.completion.get(i));
        }
        self.completion.release(n);
        self.in_flight = self.in_flight.saturating_sub(n);
        self.spare.append(done);
        let room = self.fill.room(self.spare.len() as u32);
        for i in 0..room {
            let addr = self.spare.pop().expect("room is bounded by spare");
            self.fill.put(i, addr & !(FRAME_SIZE as u64 - 1));
        }
        self.fill.submit(room);
        self.in_flight > 0
    }
}

/// Socket counters the kernel keeps (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub fill_ring_empty: u64,
    pub tx_invalid: u64,
}

/// What one pass over a socket did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub received: u32,
    pub sent: u32,
    /// Replies waiting for the journal or for room on the TX ring.
    pub held: u32,
    /// Some of those could leave now but for the TX ring: the caller should come back
    /// soon rather than sleep (no wake-up comes for TX room).
    pub tx_waiting: bool,
}

/// A reply a handler wrote: `len` octets, to leave once the journal's durable sequence
/// reaches `after` (0: at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Out {
    pub len: usize,
    pub after: u64,
}

/// One worker's socket on one queue.
pub struct Xsk {
    fd: OwnedFd,
    pub queue_id: u32,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    umem: Arc<Umem>,
    queue: Arc<Mutex<Queue>>,
    /// Chunks this socket is done with, handed back to the fill ring once per batch.
    done: Vec<u64>,
    /// Replies written but waiting for their lease to be durable (in journal order) or
    /// for room on the TX ring, with when their request was picked up.
    held: std::collections::VecDeque<(libc::xdp_desc, u64, Instant)>,
    /// The queue had frames in flight when this socket last looked.
    owed: bool,
    /// The kernel had not taken every frame of the TX ring after the last kick.
    tx_behind: bool,
}

// SAFETY: the UMEM is shared, but a chunk is touched only by the socket whose RX ring
// delivered it, until it goes back on a ring (see `pass`); rings are per socket or behind
// the queue's mutex.
unsafe impl Send for Xsk {}

impl Xsk {
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends held replies whose records are durable (up to `durable`), then receives up
    /// to a batch, lets `handle` turn each frame into a reply written into the reply half
    /// of its chunk (or `None` to drop the frame), sends or holds the replies, and gives
    /// unused chunks back.
    ///
    /// `latency`, when given, gets each reply's time from its request's pickup to its
    /// going on the TX ring, in nanoseconds.
    pub fn pass(
        &mut self,
        durable: u64,
        mut latency: Option<&mut Histogram<u64>>,
        mut handle: impl FnMut(&[u8], &mut [u8]) -> Option<Out>,
    ) -> Pass {
        let mut pass = Pass::default();
        let picked = Instant::now();
        let n = self.rx.ready(BATCH);
        let room = self.tx.room(n + self.held.len().min(BATCH as usize) as u32);
        // Held replies first, but not into the room this batch's own replies need: they
        // used to take all of it, and the new replies were dropped.
        let for_held = room.saturating_sub(n);
        while let Some(&(desc, _, since)) = self.held.front().filter(|h| h.1 <= durable) {
            if pass.sent == for_held {
                break;
            }
            self.tx.put(pass.sent, desc);
            pass.sent += 1;
            self.held.pop_front();
            if let Some(h) = latency.as_deref_mut() {
                h.saturating_record(since.elapsed().as_nanos() as u64);
            }
        }
        for i in 0..n {
            let desc = self.rx.get(i);
            let chunk = self.umem.chunk_ptr(desc.addr);
            let start = (desc.addr & (FRAME_SIZE as u64 - 1)) as usize;
            let end = start + desc.len as usize;
            let reply = if end <= REPLY_OFFSET as usize {
                // SAFETY: the chunk came off our RX ring, so neither the kernel nor any
                // other socket touches it until we put it back on a ring below; the two
                // slices are disjoint halves of it.
                let (frame, out) = unsafe {
                    (
                        std::slice::from_raw_parts(chunk.add(start), end - start),
                        std::slice::from_raw_parts_mut(
                            chunk.add(REPLY_OFFSET as usize),
                            (FRAME_SIZE as u64 - REPLY_OFFSET) as usize,
                        ),
                    )
                };
                handle(frame, out)
            } else {
                None
            };
            let base = desc.addr & !(FRAME_SIZE as u64 - 1);
            let out = |len: usize| libc::xdp_desc {
                addr: base + REPLY_OFFSET,
                len: len as u32,
                options: 0,
            };
            match reply {
                // Waiting for the journal, or for room on a TX ring the kernel has not
                // emptied yet: kept, never dropped (the chunks bound how many).
                Some(r) if r.after > durable || pass.sent == room => {
                    self.held.push_back((out(r.len), r.after, picked));
                }
                Some(r) => {
                    self.tx.put(pass.sent, out(r.len));
                    pass.sent += 1;
                    if let Some(h) = latency.as_deref_mut() {
                        h.saturating_record(picked.elapsed().as_nanos() as u64);
                    }
                }
                None => self.done.push(desc.addr),
            }
        }
        self.rx.release(n);
        pass.received = n;
        pass.held = self.held.len() as u32;
        pass.tx_waiting = self.held.front().is_some_and(|h| h.1 <= durable);
        if pass.sent > 0 {
            self.tx.submit(pass.sent);
        }
        if (pass.sent > 0 || self.tx_behind) && self.tx.needs_wakeup() {
            self.kick_tx();
        }
        if !self.done.is_empty() || pass.sent > 0 || self.owed {
            self.owed = self.queue.lock().recycle(&mut self.done, pass.sent);
        }
        pass
    }

    /// Writes a frame with `write` into a chunk on no ring and queues it to leave with the
    /// next pass, behind the replies already held; false when every chunk is in use.
    /// For replies written outside a batch (a leasequery's answer, gathered from every
    /// worker), which have no request chunk of their own.
    pub fn send_later(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        let Some(addr) = self.done.pop().or_else(|| self.queue.lock().spare.pop()) else {
            return false;
        };
        let base = addr & !(FRAME_SIZE as u64 - 1);
        let chunk = self.umem.chunk_ptr(base);
        // SAFETY: the chunk is on no ring (this socket was done with it, or it was the
        // queue's spare), so neither the kernel nor another socket touches it until it
        // goes on our TX ring.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                chunk.add(REPLY_OFFSET as usize),
                (FRAME_SIZE as u64 - REPLY_OFFSET) as usize,
            )
        };
        let len = write(buf);
        let desc = libc::xdp_desc {
            addr: base + REPLY_OFFSET,
            len: len as u32,
            options: 0,
        };
        self.held.push_back((desc, 0, Instant::now()));
        true
    }

    /// A zero-copy driver stopped filling from the fill ring until it is woken, which
    /// `poll` or a receive call does; busy-polling loops must do it themselves.
    pub fn needs_wakeup(&self) -> bool {
        self.queue.lock().fill.needs_wakeup()
    }

    /// Copy mode transmits inside sendto; zero-copy drivers want a nudge when they say so.
    ///
    /// In copy mode one sendto sends at most a small budget of frames (32 on Linux 6.x)
    /// and leaves the rest on the ring. A pass can put more than that there (a batch of
    /// 64 requests, or a group commit releasing dozens of held ACKs), and with one call
    /// per pass the rest waited for later passes: 1,000 clients arriving at once were
    /// answered with a p99 of 134-149 ms, against 26-37 ms with this loop. So call again
    /// while each call moves the kernel's consumer index on. A zero-copy driver takes
    /// the frames later, in its own context: the index stops moving, the loop ends, and
    /// what remains is looked at again on the next pass.
    fn kick_tx(&mut self) {
        let mut left = self.tx.unconsumed();
        for _ in 0..=RING {
            // SAFETY: a zero-length sendto on our own socket; no buffer is read.
            unsafe {
                libc::sendto(
                    self.fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            let now = self.tx.unconsumed();
            if now == 0 || now >= left {
                left = now;
                break;
            }
            left = now;
        }
        self.tx_behind = left > 0;
    }

    pub fn stats(&self) -> io::Result<XskStats> {
        let s: libc::xdp_statistics = getsockopt(self.fd(), libc::XDP_STATISTICS)?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_ring_full: s.rx_ring_full,
            fill_ring_empty: s.rx_fill_ring_empty_descs,
            tx_invalid: s.tx_invalid_descs,
        })
    }
}

/// Opens `workers` sockets on each of `queues` queues of `ifindex` over one UMEM. The
/// result is indexed `[worker][queue]`.
pub fn open(
    ifname: &str,
    ifindex: u32,
    queues: u32,
    workers: u32,
) -> Result<(Vec<Vec<Xsk>>, CopyMode), XskError> {
    let len = queues as usize * FRAMES_PER_QUEUE as usize * FRAME_SIZE as usize;
    let area = MmapOptions::new()
        .len(len)
        .populate()
        .map_anon()
        .map_err(|e| XskError::Umem(e, len))?;
    let umem = Arc::new(Umem { area });
    let mut sockets: Vec<Vec<Xsk>> = (0..workers).map(|_| Vec::new()).collect();
    let mut mode = CopyMode::Copy;
    let mut owner: Option<RawFd> = None;
    for q in 0..queues {
        let err = |what| {
            let ifname = ifname.to_string();
            move |source| XskError::Setup {
                what,
                ifname,
                queue: q,
                source,
            }
        };
        let mut first: Option<(RawFd, Arc<Mutex<Queue>>)> = None;
        for w in 0..workers {
            // SAFETY: plain socket(2); the descriptor is owned right away.
            let fd = check(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0) })
                .map_err(err("create a socket"))?;
            // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let raw = fd.as_raw_fd();
            if owner.is_none() {
                let reg = libc::xdp_umem_reg {
                    addr: umem.area.as_ptr() as u64,
                    len: len as u64,
                    chunk_size: FRAME_SIZE,
                    headroom: 0,
                    flags: 0,
                    tx_metadata_len: 0,
                };
                setsockopt(raw, libc::XDP_UMEM_REG, &reg).map_err(err("register the UMEM"))?;
            }
            if first.is_none() {
                setsockopt(raw, libc::XDP_UMEM_FILL_RING, &RING)
                    .map_err(err("size the fill ring"))?;
                setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &COMPLETION)
                    .map_err(err("size the completion ring"))?;
            }
            setsockopt(raw, libc::XDP_RX_RING, &RING).map_err(err("size the RX ring"))?;
            setsockopt(raw, libc::XDP_TX_RING, &RING).map_err(err("size the TX ring"))?;
            let off: libc::xdp_mmap_offsets =
                getsockopt(raw, libc::XDP_MMAP_OFFSETS).map_err(err("read ring offsets"))?;
            let queue = match &first {
                Some((_, shared)) => shared.clone(),
                None => {
                    let mut fill =
                        Ring::<u64>::map(raw, &off.fr, RING, libc::XDP_UMEM_PGOFF_FILL_RING)
                            .map_err(err("map the fill ring"))?;
                    let completion = Ring::<u64>::map(
                        raw,
                        &off.cr,
                        COMPLETION,
                        libc::XDP_UMEM_PGOFF_COMPLETION_RING,
                    )
                    .map_err(err("map the completion ring"))?;
                    let base = (q * FRAMES_PER_QUEUE) as u64 * FRAME_SIZE as u64;
                    let mut spare: Vec<u64> = (0..FRAMES_PER_QUEUE as u64)
                        .map(|i| base + i * FRAME_SIZE as u64)
                        .collect();
                    let room = fill.room(spare.len() as u32);
                    for i in 0..room {
                        fill.put(i, spare.pop().expect("room is bounded by spare"));
                    }
                    fill.submit(room);
                    Arc::new(Mutex::new(Queue {
                        fill,
                        completion,
                        spare,
                        in_flight: 0,
                    }))
                }
            };
            let rx = Ring::map(raw, &off.rx, RING, libc::XDP_PGOFF_RX_RING as u64)
                .map_err(err("map the RX ring"))?;
            let tx = Ring::map(raw, &off.tx, RING, libc::XDP_PGOFF_TX_RING as u64)
                .map_err(err("map the TX ring"))?;
            let shared = first.as_ref().map(|(fd, _)| *fd).or(owner);
            mode = bind(raw, ifindex, q, shared)
                .map_err(err("bind"))?
                .unwrap_or(mode);
            if first.is_none() {
                first = Some((raw, queue.clone()));
            }
            owner.get_or_insert(raw);
            sockets[w as usize].push(Xsk {
                fd,
                queue_id: q,
                rx,
                tx,
                umem: umem.clone(),
                queue,
                done: Vec::with_capacity(BATCH as usize),
                held: std::collections::VecDeque::new(),
                tx_behind: false,
                owed: false,
            });
        }
    }
    Ok((sockets, mode))
}

/// Binds a socket to a device queue. The first socket of the UMEM chooses the copy mode
/// (zero-copy if the driver can, else copy) and returns it; the others share the UMEM,
/// and with it the fill and completion rings when they are on the same queue.
fn bind(
    fd: RawFd,
    ifindex: u32,
    queue: u32,
    shared: Option<RawFd>,
) -> io::Result<Option<CopyMode>> {
    let addr = |flags: u16| libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: shared.unwrap_or(0) as u32,
    };
    let try_bind = |a: libc::sockaddr_xdp| {
        // SAFETY: `a` is a complete sockaddr_xdp and its size is passed with it.
        check(unsafe {
            libc::bind(
                fd,
                (&a as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })
    };
    if shared.is_some() {
        return try_bind(addr(libc::XDP_SHARED_UMEM)).map(|_| None);
    }
    let wakeup = libc::XDP_USE_NEED_WAKEUP;
    match try_bind(addr(libc::XDP_ZEROCOPY | wakeup)) {
        Ok(_) => Ok(Some(CopyMode::ZeroCopy)),
        Err(_) => try_bind(addr(libc::XDP_COPY | wakeup)).map(|_| Some(CopyMode::Copy)),
    }
}
