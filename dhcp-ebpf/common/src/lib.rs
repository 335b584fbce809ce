//! What the XDP steering program (`dhcp-ebpf`, built for bpfel-unknown-none) and the
//! server that loads it must agree on, kept in one place: the names of the maps and the
//! globals the loader sets, the layout of the counter maps, which worker a client
//! belongs to, and the token bucket arithmetic of the flood limits. `no_std` and dependency-free so the same code runs in the kernel and on the
//! host; every function is free of panics, because a panic path in eBPF fails the
//! verifier.

#![no_std]

/// The XDP program's name in the object.
pub const PROGRAM: &str = "dhcp_steer";
/// XSKMAP of AF_XDP sockets, indexed by [`socket_key`].
pub const XSKS: &str = "XSKS";
/// Per-CPU array of `u64`, indexed by [`Counter`].
pub const COUNTERS: &str = "COUNTERS";
/// Per-CPU array of `u64`, frames redirected to each socket, indexed by [`socket_key`].
pub const REDIRECTS: &str = "REDIRECTS";
/// The `u32` global (read-only data) holding the number of workers per queue; the loader
/// sets it before the program is loaded, so the verifier sees it as a constant.
pub const WORKERS: &str = "WORKERS";

/// Capacity of [`XSKS`] and [`REDIRECTS`]: `queues * workers` must not exceed it.
pub const MAX_SOCKETS: u32 = 1024;

/// How many options the program reads looking for option 61 before it settles for the
/// hardware address. Real clients put far fewer in a request; the bound keeps the
/// verifier's proof finite.
pub const MAX_OPTIONS_SCANNED: u32 = 64;

/// One slot of the [`COUNTERS`] map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// A DHCP request handed to a worker's socket.
    Redirected = 0,
    /// Anything not addressed to UDP port 67, left to the kernel untouched.
    Passed = 1,
    /// To port 67 but not a well-formed BOOTREQUEST with the magic cookie: dropped.
    Malformed = 2,
    /// A DHCP request whose socket is not registered yet: left to the kernel.
    NoSocket = 3,
    /// Failover: a DISCOVER of the partner's hash buckets while the pair cooperates, or
    /// the SELECTING REQUEST after it naming the partner, dropped here so it costs the
    /// server nothing.
    Balanced = 4,
    /// A request from a client hardware address past its flood limit: dropped.
    FloodClient = 5,
    /// A relayed request from a relay agent circuit past its flood limit: dropped.
    FloodCircuit = 6,
}

impl Counter {
    pub const ALL: [Counter; 7] = [
        Counter::Redirected,
        Counter::Passed,
        Counter::Malformed,
        Counter::NoSocket,
        Counter::Balanced,
        Counter::FloodClient,
        Counter::FloodCircuit,
    ];
    /// Number of slots in [`COUNTERS`].
    pub const SLOTS: u32 = Self::ALL.len() as u32;

    /// How `stats` and the metrics name it.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Redirected => "redirected",
            Counter::Passed => "passed",
            Counter::Malformed => "malformed",
            Counter::NoSocket => "no-socket",
            Counter::Balanced => "balanced",
            Counter::FloodClient => "flood-client",
            Counter::FloodCircuit => "flood-circuit",
        }
    }
}

/// The [`COUNTERS`] map summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub redirected: u64,
    pub passed: u64,
    pub malformed: u64,
    pub no_socket: u64,
    pub balanced: u64,
    pub flood_client: u64,
    pub flood_circuit: u64,
}

impl Counters {
    pub fn add(&mut self, counter: Counter, n: u64) {
        let field = self.field(counter);
        *field = field.wrapping_add(n);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        let mut copy = *self;
        *copy.field(counter)
    }

    fn field(&mut self, counter: Counter) -> &mut u64 {
        match counter {
            Counter::Redirected => &mut self.redirected,
            Counter::Passed => &mut self.passed,
            Counter::Malformed => &mut self.malformed,
            Counter::NoSocket => &mut self.no_socket,
            Counter::Balanced => &mut self.balanced,
            Counter::FloodClient => &mut self.flood_client,
            Counter::FloodCircuit => &mut self.flood_circuit,
        }
    }
}

/// The `[u64; 4]` global (read-only data) holding the flood limits as
/// [`Flood::to_global`] lays them out; the loader sets it before the program is loaded,
/// so the verifier sees constants and, with both limits off, never walks their code.
pub const FLOOD: &str = "FLOOD";
/// LRU hash of [`Bucket`]s keyed by [`client_key`]: one per client hardware address.
pub const FLOOD_CLIENTS: &str = "FLOOD_CLIENTS";
/// LRU hash of [`Bucket`]s keyed by [`circuit_key`]: one per relay agent circuit.
pub const FLOOD_CIRCUITS: &str = "FLOOD_CIRCUITS";
/// Entries of each flood map unless the loader sets another size. A full map forgets
/// the bucket used longest ago: that client starts again with a full bucket, so a
/// flood of new keys can only make the limit looser, never drop a quiet client.
pub const FLOOD_TABLE_SIZE: u32 = 65_536;
/// The octets of a circuit id that key its bucket; ids that differ only past them
/// share one.
pub const MAX_CIRCUIT_ID: usize = 32;
/// How many sub-options of option 82 the program reads looking for the circuit id
/// (sub-option 1), which relay agents put first.
pub const MAX_SUBOPTIONS_SCANNED: u32 = 16;
/// htype, hlen, then the 16 octets of chaddr.
pub const CLIENT_KEY_LEN: usize = 18;
/// giaddr, the circuit id's length, then its first [`MAX_CIRCUIT_ID`] octets.
pub const CIRCUIT_KEY_LEN: usize = 5 + MAX_CIRCUIT_ID;

/// A client's flood bucket key: its hardware type and address. Octets of chaddr past
/// `hlen` are zeroed, so a client cannot get a fresh bucket by changing padding the
/// server never reads.
pub fn client_key(htype: u8, hlen: u8, chaddr: &[u8; 16]) -> [u8; CLIENT_KEY_LEN] {
    let mut key = [0u8; CLIENT_KEY_LEN];
    key[0] = htype;
    key[1] = hlen;
    for (i, (k, &c)) in key[2..].iter_mut().zip(chaddr).enumerate() {
        if i < usize::from(hlen) {
            *k = c;
        }
    }
    key
}

/// A circuit's flood bucket key: the relay's giaddr (circuit ids are only unique
/// within one relay agent: dhcrelay, for one, sends the interface name), the id's whole
/// length, and its first [`MAX_CIRCUIT_ID`] octets (`id`, zeroed past `len`).
pub fn circuit_key(giaddr: [u8; 4], len: u8, id: &[u8; MAX_CIRCUIT_ID]) -> [u8; CIRCUIT_KEY_LEN] {
    let mut key = [0u8; CIRCUIT_KEY_LEN];
    key[..4].copy_from_slice(&giaddr);
    key[4] = len;
    for (i, (k, &c)) in key[5..].iter_mut().zip(id).enumerate() {
        if i < usize::from(len) {
            *k = c;
        }
    }
    key
}

/// A flood map's value. Tokens are kept as nanoseconds of refill time (one request
/// costs [`Limit::cost`] of them), so refilling is an addition: no division in the
/// program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Bucket {
    pub credit: u64,
    /// `bpf_ktime_get_ns` at the last refill.
    pub last: u64,
}

/// One token bucket's rule: `cost` nanoseconds of credit per request (10^9 / rate),
/// at most `cap` of them held (burst x cost). A cost of 0 is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    pub cost: u64,
    pub cap: u64,
}

impl Limit {
    pub const OFF: Limit = Limit { cost: 0, cap: 0 };

    /// `rate` requests a second on average, `burst` at once after a quiet spell; a rate
    /// of 0 is no limit, a burst below 1 is 1.
    pub fn per_second(rate: u32, burst: u32) -> Limit {
        match 1_000_000_000u64.checked_div(u64::from(rate)) {
            Some(cost) => Limit {
                cost,
                cap: cost.saturating_mul(u64::from(burst.max(1))),
            },
            None => Limit::OFF,
        }
    }

    pub fn is_on(&self) -> bool {
        self.cost != 0
    }

    /// The bucket of a key seen for the first time at `now`, its request taken: full
    /// less one.
    pub fn fresh(&self, now: u64) -> Bucket {
        Bucket {
            credit: self.cap.saturating_sub(self.cost),
            last: now,
        }
    }

    /// Refills `bucket` for the time since its last refill and takes one request's
    /// worth if it holds it: whether the request may pass. A `now` before `last` (a
    /// clock read on another CPU just before that CPU's update) refills nothing.
    pub fn take(&self, bucket: &mut Bucket, now: u64) -> bool {
        let credit = bucket
            .credit
            .saturating_add(now.saturating_sub(bucket.last))
            .min(self.cap);
        bucket.last = bucket.last.max(now);
        let pass = credit >= self.cost;
        bucket.credit = if pass { credit - self.cost } else { credit };
        pass
    }
}

/// The flood limits: per client hardware address, and per relay agent circuit for
/// requests that carry a circuit id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flood {
    pub client: Limit,
    pub circuit: Limit,
}

impl Flood {
    pub fn is_on(&self) -> bool {
        self.client.is_on() || self.circuit.is_on()
    }

    /// The [`FLOOD`] global: client cost and cap, circuit cost and cap.
    pub fn to_global(&self) -> [u64; 4] {
        [
            self.client.cost,
            self.client.cap,
            self.circuit.cost,
            self.circuit.cap,
        ]
    }

    pub fn from_global(g: [u64; 4]) -> Flood {
        Flood {
            client: Limit {
                cost: g[0],
                cap: g[1],
            },
            circuit: Limit {
                cost: g[2],
                cap: g[3],
            },
        }
    }
}

/// Name of the one-slot array holding the failover load-balancing rule, as
/// [`Balance::encode`] lays it out.
pub const BALANCE: &str = "BALANCE";
/// Size of [`BALANCE`]'s value.
pub const BALANCE_LEN: usize = 40 + 4 * MAX_SERVER_IDS;
/// How many of our server identifiers [`Balance`] carries. A server rarely has more
/// than its interface address and a subnet's `server-id` or two; past this many the
/// program leaves every REQUEST to the engine rather than risk dropping one naming us.
pub const MAX_SERVER_IDS: usize = 4;

/// What the load-balancing rule needs to know of a message beyond its client's bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    Discover,
    /// A DHCPREQUEST carrying a server identifier (option 54, the first instance): a
    /// client in SELECTING state naming the server it chose. `to` is the IPv4
    /// destination of the datagram, which the engine takes for its own address when the
    /// request was not broadcast.
    Selecting {
        server_id: [u8; 4],
        to: [u8; 4],
    },
    /// Anything else: never balanced.
    Other,
}

/// The failover load-balancing rule (RFC 3074 with dhcpd's hash bucket assignment):
/// while the pair cooperates, a DISCOVER whose bucket is the partner's is left to the
/// partner unless the client has been trying for `max_secs`; so is the broadcast
/// REQUEST that follows it, when it names a server other than us, so that it costs
/// this server nothing either (the engine would only drop it, as not for us).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub on: bool,
    pub max_secs: u16,
    /// Bit `b & 7` of octet `b >> 3` set: bucket `b` is this server's.
    pub mine: [u8; 32],
    /// Every server identifier the engine counts as its own on this interface, unused
    /// entries 0.0.0.0. Empty: SELECTING REQUESTs are never dropped, because we cannot
    /// tell whether one names us.
    pub server_ids: [[u8; 4]; MAX_SERVER_IDS],
}

impl Balance {
    /// This rule with `ids` as our server identifiers (duplicates and 0.0.0.0 ignored).
    /// More distinct ones than [`MAX_SERVER_IDS`]: none at all, so that REQUESTs are
    /// left to the engine and correctness never depends on the cap.
    pub fn with_server_ids(mut self, ids: &[[u8; 4]]) -> Self {
        let mut kept = [[0u8; 4]; MAX_SERVER_IDS];
        let mut n = 0;
        for &id in ids {
            if id == [0; 4] || kept[..n].contains(&id) {
                continue;
            }
            match kept.get_mut(n) {
                Some(slot) => *slot = id,
                None => {
                    kept = [[0; 4]; MAX_SERVER_IDS];
                    break;
                }
            }
            n += 1;
        }
        self.server_ids = kept;
        self
    }

    /// Whether a message of `bucket` that waited `secs` is the partner's to answer.
    /// As dhcpd's load_balance_mine: a client is anyone's once `secs` is above the
    /// limit, and a limit of 0 turns balancing off. A SELECTING REQUEST is the
    /// partner's only when it also names neither one of our identifiers nor the
    /// address it was sent to: a client we answered (its `secs` past the limit) may ask
    /// us with a lower `secs`, and that REQUEST must reach us.
    pub fn leaves_to_partner(&self, bucket: u8, secs: u16, asked: Asked) -> bool {
        let applies = match asked {
            Asked::Discover => true,
            Asked::Selecting { server_id, to } => {
                self.server_ids[0] != [0; 4]
                    && server_id != to
                    && !self.server_ids.contains(&server_id)
            }
            Asked::Other => false,
        };
        self.on
            && applies
            && self.max_secs != 0
            && secs <= self.max_secs
            && self.mine[usize::from(bucket >> 3)] & (1 << (bucket & 7)) == 0
    }

    /// The map value: on (u32), max_secs (u32), the 32 octets of `mine`, then the
    /// server identifiers in network order; little-endian.
    pub fn encode(&self) -> [u8; BALANCE_LEN] {
        let mut v = [0u8; BALANCE_LEN];
        v[0] = u8::from(self.on);
        v[4..6].copy_from_slice(&self.max_secs.to_le_bytes());
        v[8..40].copy_from_slice(&self.mine);
        for (i, id) in self.server_ids.iter().enumerate() {
            v[40 + 4 * i..44 + 4 * i].copy_from_slice(id);
        }
        v
    }

    pub fn decode(v: &[u8; BALANCE_LEN]) -> Self {
        let mut mine = [0u8; 32];
        mine.copy_from_slice(&v[8..40]);
        let mut server_ids = [[0u8; 4]; MAX_SERVER_IDS];
        for (i, id) in server_ids.iter_mut().enumerate() {
            id.copy_from_slice(&v[40 + 4 * i..44 + 4 * i]);
        }
        Balance {
            on: v[0] != 0,
            max_secs: u16::from_le_bytes([v[4], v[5]]),
            mine,
            server_ids,
        }
    }
}

/// RFC 3074 §6 mixing table: a permutation of 0..=255. Checked value for value against
/// ISC dhcpd's `loadb_mx_tbl`, so our buckets are the ones a dhcpd failover partner
/// computes. Sixteen to a row, so it reads against the RFC's.
#[rustfmt::skip]
static MIX: [u8; 256] = [
    251, 175, 119, 215,  81,  14,  79, 191, 103,  49, 181, 143, 186, 157,   0, 232,
     31,  32,  55,  60, 152,  58,  17, 237, 174,  70, 160, 144, 220,  90,  57, 223,
     59,   3,  18, 140, 111, 166, 203, 196, 134, 243, 124,  95, 222, 179, 197,  65,
    180,  48,  36,  15, 107,  46, 233, 130, 165,  30, 123, 161, 209,  23,  97,  16,
     40,  91, 219,  61, 100,  10, 210, 109, 250, 127,  22, 138,  29, 108, 244,  67,
    207,   9, 178, 204,  74,  98, 126, 249, 167, 116,  34,  77, 193, 200, 121,   5,
     20, 113,  71,  35, 128,  13, 182,  94,  25, 226, 227, 199,  75,  27,  41, 245,
    230, 224,  43, 225, 177,  26, 155, 150, 212, 142, 218, 115, 241,  73,  88, 105,
     39, 114,  62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122,  12,  84,
     82, 163,  44, 139, 228, 236, 205, 242, 217,  11, 187, 146, 159,  64,  86, 239,
    195,  42, 106, 198, 118, 112, 184, 172,  87,   2, 173, 117, 176, 229, 247, 253,
    137, 185,  99, 164, 102, 147,  45,  66, 231,  52, 141, 211, 194, 206, 246, 238,
     56, 110,  78, 248,  63, 240, 189,  93,  92,  51,  53, 183,  19, 171,  72,  50,
     33, 104, 101,  69,   8, 252,  83, 120,  76, 135,  85,  54, 202, 125, 188, 213,
     96, 235, 136, 208, 162, 129, 190, 132, 156,  38,  47,   1,   7, 254,  24,   4,
    216, 131,  89,  21,  28, 133,  37, 153, 149,  80, 170,  68,   6, 169, 234, 151,
];

/// The hash's starting value for a key of `len` octets (a key is at most 255 long: an
/// option's data, or a hardware address of at most 16).
pub fn loadb_start(len: usize) -> u8 {
    len as u8
}

/// One round of the hash. RFC 3074 feeds the key from its last octet to its first; the
/// eBPF program calls this per octet because the verifier wants every packet read
/// checked on its own.
pub fn loadb_step(hash: u8, byte: u8) -> u8 {
    MIX[(hash ^ byte) as usize]
}

/// The RFC 3074 load-balancing hash (a Pearson hash) of `bytes`.
pub fn loadb_hash(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .rev()
        .fold(loadb_start(bytes.len()), |h, &b| loadb_step(h, b))
}

/// The bucket of a client as RFC 3074 §3 defines it: the client identifier (option 61
/// data) when the request has one, else the first `hlen` octets of `chaddr`. The XDP
/// program takes the first option 61 in the options field; a caller that wants to agree
/// with it passes the same.
pub fn client_key_hash(client_id: Option<&[u8]>, chaddr: &[u8]) -> u8 {
    loadb_hash(client_id.unwrap_or(chaddr))
}

/// The [`XSKS`] slot of worker `hash % workers` on receive queue `queue`: each queue has
/// `workers` consecutive slots. Wrapping arithmetic and no division by zero, so no panic
/// path reaches the eBPF program; `workers == 0` puts everything on the queue's first
/// slot.
pub fn socket_key(queue: u32, hash: u8, workers: u32) -> u32 {
    let worker = u32::from(hash).checked_rem(workers).unwrap_or(0);
    queue.wrapping_mul(workers).wrapping_add(worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixing_table_is_a_permutation() {
        let mut seen = [false; 256];
        for &v in &MIX {
            assert!(!seen[v as usize], "{v} twice");
            seen[v as usize] = true;
        }
    }

    /// Values worked out by hand from RFC 3074's reference code (start at the length,
    /// feed the key backwards through the table).
    #[test]
    fn known_hashes() {
        assert_eq!(loadb_hash(&[]), 0);
        assert_eq!(loadb_hash(&[0; 6]), 254);
        assert_eq!(loadb_hash(&[2, 0, 0, 0, 0, 1]), 133);
        assert_eq!(loadb_hash(&[0x00, 0x11, 0x22, 0x33, 0x44, 0x55]), 135);
        let ramp: [u8; 255] = core::array::from_fn(|i| i as u8);
        assert_eq!(loadb_hash(&ramp), 188);
        // One octet: the table at (1 ^ octet).
        assert_eq!(loadb_hash(&[0]), MIX[1]);
    }

    #[test]
    fn client_id_wins_over_chaddr() {
        let chaddr = [2, 0, 0, 0, 0, 1];
        let id = [1, 2, 0, 0, 0, 0, 1];
        assert_eq!(client_key_hash(None, &chaddr), 133);
        assert_eq!(client_key_hash(Some(&id), &chaddr), 14);
        assert_eq!(client_key_hash(Some(&[]), &chaddr), 0);
    }

    #[test]
    fn socket_keys_tile_the_queues() {
        assert_eq!(socket_key(0, 0, 4), 0);
        assert_eq!(socket_key(0, 7, 4), 3);
        assert_eq!(socket_key(2, 5, 4), 9);
        assert_eq!(socket_key(3, 255, 1), 3);
        assert_eq!(socket_key(5, 200, 0), 0);
        // Every hash lands inside its queue's slots.
        for q in 0..4 {
            for h in 0..=255u8 {
                let k = socket_key(q, h, 3);
                assert!((q * 3..q * 3 + 3).contains(&k));
            }
        }
    }

    #[test]
    fn counters_sum_by_slot() {
        let mut c = Counters::default();
        for (i, counter) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(counter as u32, i as u32);
            c.add(counter, i as u64 + 1);
        }
        c.add(Counter::Passed, 10);
        assert_eq!(
            c,
            Counters {
                redirected: 1,
                passed: 12,
                malformed: 3,
                no_socket: 4,
                balanced: 5,
                flood_client: 6,
                flood_circuit: 7,
            }
        );
        assert_eq!(c.get(Counter::Passed), 12);
        assert_eq!(c.get(Counter::FloodCircuit), 7);
    }

    #[test]
    fn counter_names_are_distinct() {
        for a in Counter::ALL {
            for b in Counter::ALL {
                assert_eq!(a == b, a.name() == b.name(), "{a:?} {b:?}");
            }
        }
    }

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn limits_from_rate_and_burst() {
        assert_eq!(
            Limit::per_second(10, 20),
            Limit {
                cost: SECOND / 10,
                cap: 2 * SECOND
            }
        );
        assert_eq!(Limit::per_second(0, 20), Limit::OFF);
        assert!(!Limit::OFF.is_on());
        assert_eq!(
            Limit::per_second(4, 0).cap,
            SECOND / 4,
            "a burst of at least one"
        );
        let huge = Limit::per_second(1, u32::MAX);
        assert_eq!(huge.cap, SECOND * u64::from(u32::MAX));
        assert!(Limit::per_second(1_000_000_000, 1).is_on());
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limit = Limit::per_second(10, 3);
        let t0 = 5 * SECOND;
        let mut b = limit.fresh(t0);
        assert!(limit.take(&mut b, t0));
        assert!(limit.take(&mut b, t0));
        assert!(
            !limit.take(&mut b, t0),
            "burst of three, the first in fresh"
        );
        assert!(!limit.take(&mut b, t0 + SECOND / 10 - 1));
        assert!(limit.take(&mut b, t0 + SECOND / 10), "one more each 100 ms");
        assert!(!limit.take(&mut b, t0 + SECOND / 10));
        // A long quiet spell refills up to the burst, not beyond.
        let later = t0 + 3600 * SECOND;
        let passed = (0..10).filter(|_| limit.take(&mut b, later)).count();
        assert_eq!(passed, 3);
    }

    #[test]
    fn a_steady_flood_gets_rate_times_time_plus_burst() {
        let limit = Limit::per_second(10, 20);
        let mut b = limit.fresh(0);
        let mut passed = 1;
        // 5,000 requests a second for 3 s.
        for i in 1..15_000u64 {
            passed += u64::from(limit.take(&mut b, i * SECOND / 5_000));
        }
        assert!((49..=50).contains(&passed), "{passed}");
    }

    #[test]
    fn a_clock_behind_the_bucket_refills_nothing() {
        let limit = Limit::per_second(1, 1);
        let mut b = limit.fresh(10 * SECOND);
        assert!(!limit.take(&mut b, 9 * SECOND));
        assert_eq!(
            b,
            Bucket {
                credit: 0,
                last: 10 * SECOND
            }
        );
        assert!(!limit.take(&mut b, 11 * SECOND - 1));
        assert!(limit.take(&mut b, 11 * SECOND));
    }

    #[test]
    fn flood_survives_the_global() {
        let f = Flood {
            client: Limit::per_second(10, 20),
            circuit: Limit::per_second(100, 200),
        };
        assert!(f.is_on());
        assert_eq!(Flood::from_global(f.to_global()), f);
        assert_eq!(f.to_global()[0], SECOND / 10);
        assert!(!Flood::default().is_on());
        assert_eq!(Flood::default().to_global(), [0; 4]);
    }

    #[test]
    fn client_keys_ignore_padding_past_hlen() {
        let mut chaddr = [0xee; 16];
        chaddr[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        let key = client_key(1, 6, &chaddr);
        assert_eq!(&key[..8], &[1, 6, 2, 0, 0, 0, 0, 1]);
        assert_eq!(&key[8..], &[0; 10]);
        assert_eq!(
            key,
            client_key(1, 6, &{
                let mut c = chaddr;
                c[10] = 7;
                c
            })
        );
        assert_ne!(key, client_key(6, 6, &chaddr), "htype counts");
        assert_eq!(&client_key(1, 16, &chaddr)[2..], &chaddr);
    }

    #[test]
    fn circuit_keys_hold_giaddr_length_and_the_first_octets() {
        let mut id = [0xee; MAX_CIRCUIT_ID];
        id[..4].copy_from_slice(b"eth1");
        let key = circuit_key([192, 0, 2, 1], 4, &id);
        assert_eq!(&key[..9], &[192, 0, 2, 1, 4, b'e', b't', b'h', b'1']);
        assert_eq!(&key[9..], &[0; MAX_CIRCUIT_ID - 4]);
        assert_ne!(key, circuit_key([192, 0, 2, 2], 4, &id), "per relay");
        // Longer than the key holds: the length tells them apart, not the tail.
        let long = [b'x'; MAX_CIRCUIT_ID];
        assert_ne!(
            circuit_key([0; 4], 40, &long),
            circuit_key([0; 4], 41, &long)
        );
        assert_eq!(&circuit_key([0; 4], 40, &long)[5..], &long);
    }

    /// Bucket 0 ours, the rest the partner's; at most 3 s of `secs`; our identifiers
    /// 192.0.2.1 and 198.51.100.1.
    fn rule() -> Balance {
        let mut mine = [0u8; 32];
        mine[0] = 0b0000_0001;
        Balance {
            on: true,
            max_secs: 3,
            mine,
            server_ids: [[0; 4]; MAX_SERVER_IDS],
        }
        .with_server_ids(&[[192, 0, 2, 1], [198, 51, 100, 1]])
    }

    const PARTNER: [u8; 4] = [192, 0, 2, 2];
    const BROADCAST: [u8; 4] = [255; 4];

    fn selecting(server_id: [u8; 4]) -> Asked {
        Asked::Selecting {
            server_id,
            to: BROADCAST,
        }
    }

    #[test]
    fn balance_survives_the_map() {
        let b = rule();
        assert_eq!(Balance::decode(&b.encode()), b);
        let full = b.with_server_ids(&[
            [1, 2, 3, 4],
            [5, 6, 7, 8],
            [9, 10, 11, 12],
            [13, 14, 15, 16],
        ]);
        assert_eq!(Balance::decode(&full.encode()), full);
        assert_eq!(
            Balance::decode(&Balance::default().encode()),
            Balance::default()
        );
        // The layout the program reads, not only a round trip.
        let v = b.encode();
        assert_eq!((v[0], &v[4..6], v[8]), (1, &[3u8, 0][..], 1));
        assert_eq!(&v[40..48], &[192, 0, 2, 1, 198, 51, 100, 1]);
        assert_eq!(&v[48..], &[0; 8]);
    }

    #[test]
    fn balance_leaves_only_partner_discovers() {
        let b = rule();
        assert!(!b.leaves_to_partner(0, 0, Asked::Discover));
        assert!(b.leaves_to_partner(1, 0, Asked::Discover));
        assert!(b.leaves_to_partner(255, 3, Asked::Discover));
        assert!(
            !b.leaves_to_partner(1, 4, Asked::Discover),
            "waited long enough"
        );
        let never = Balance { max_secs: 0, ..b };
        assert!(
            !never.leaves_to_partner(1, 0, Asked::Discover),
            "a limit of 0: no balancing"
        );
        assert!(
            !b.leaves_to_partner(1, 0, Asked::Other),
            "others are not balanced"
        );
        let off = Balance { on: false, ..b };
        assert!(!off.leaves_to_partner(1, 0, Asked::Discover));
    }

    #[test]
    fn balance_leaves_partner_selecting_requests_naming_the_partner() {
        let b = rule();
        assert!(b.leaves_to_partner(1, 0, selecting(PARTNER)));
        assert!(b.leaves_to_partner(255, 3, selecting(PARTNER)));
        assert!(
            !b.leaves_to_partner(0, 0, selecting(PARTNER)),
            "our bucket: the engine withdraws its offer"
        );
        assert!(
            !b.leaves_to_partner(1, 4, selecting(PARTNER)),
            "past the limit we may have offered too"
        );
        let off = Balance { on: false, ..b };
        assert!(
            !off.leaves_to_partner(1, 0, selecting(PARTNER)),
            "not cooperating"
        );
        let never = Balance { max_secs: 0, ..b };
        assert!(!never.leaves_to_partner(1, 0, selecting(PARTNER)));
    }

    #[test]
    fn balance_never_leaves_a_request_naming_us() {
        let b = rule();
        for id in [[192, 0, 2, 1], [198, 51, 100, 1]] {
            for bucket in [0, 1, 255] {
                assert!(!b.leaves_to_partner(bucket, 0, selecting(id)), "{id:?}");
            }
        }
        // Unicast to an address of ours that is no configured identifier (a relay's
        // helper address): the engine takes the destination for its own.
        let to_us = Asked::Selecting {
            server_id: [203, 0, 113, 7],
            to: [203, 0, 113, 7],
        };
        assert!(!b.leaves_to_partner(1, 0, to_us));
        let relayed = Asked::Selecting {
            server_id: PARTNER,
            to: [203, 0, 113, 7],
        };
        assert!(b.leaves_to_partner(1, 0, relayed));
    }

    #[test]
    fn too_many_server_ids_leave_every_request_to_the_engine() {
        let ids: [[u8; 4]; 5] = core::array::from_fn(|i| [198, 18, 0, i as u8 + 1]);
        let b = rule().with_server_ids(&ids);
        assert_eq!(b.server_ids, [[0; 4]; MAX_SERVER_IDS]);
        assert!(!b.leaves_to_partner(1, 0, selecting(PARTNER)));
        assert!(
            b.leaves_to_partner(1, 0, Asked::Discover),
            "DISCOVERs still"
        );
        // Duplicates and 0.0.0.0 take no room: four distinct ones still fit.
        let b = rule().with_server_ids(&[ids[0], ids[0], [0; 4], ids[1], ids[2], ids[1], ids[3]]);
        assert_eq!(b.server_ids, [ids[0], ids[1], ids[2], ids[3]]);
        assert!(b.leaves_to_partner(1, 0, selecting(PARTNER)));
        assert!(!b.leaves_to_partner(1, 0, selecting(ids[3])));
        let none = rule().with_server_ids(&[]);
        assert!(!none.leaves_to_partner(1, 0, selecting(PARTNER)));
    }
}
