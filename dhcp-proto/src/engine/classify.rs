//! Client classification, once per message and only when the policy uses classes: every
//! class's test in configuration order (a test may ask for membership in the classes
//! before it and in KNOWN/UNKNOWN), and for a matching class one hash lookup of its value
//! among the listed members, however many there are. The result is kept in the engine
//! for the rest of the message: which pools the client may draw from, and the settings
//! (options, lease times, boot server and file) its classes add.

use super::limits::{Charge, Limits, MAX_CHARGES, NO_CHARGE};
use super::{Drop, KeyKind, SlotId};
use crate::expr::Packet;
use crate::policy::class::{
    self, Class, Membership, NotMember, Settings, KNOWN, MAX_CLASSES, UNKNOWN,
};
use crate::policy::{ClassId, Policy, Pool};
use crate::wire::{MessageType, Request};

/// No listed member: the class matched by its test, or a spawned value.
const UNLISTED: u32 = u32::MAX;

/// The classes of the message being handled.
#[derive(Debug, Default)]
pub(super) struct Classes {
    bits: [u64; MAX_CLASSES / 64],
    known: bool,
    /// Per class: the listed member the client's value found, or `UNLISTED`.
    listed: Vec<u32>,
    /// The classes the client is a member of, in order.
    members: Vec<ClassId>,
    /// The lease-limit counters a new lease of the client would take, by key (placed
    /// in the table only when a lease is taken), with their limits and the class each
    /// belongs to.
    limited: [(u64, u32, ClassId); MAX_CHARGES],
}

impl Classes {
    pub fn has(&self, id: ClassId) -> bool {
        match id {
            KNOWN => self.known,
            UNKNOWN => !self.known,
            _ => {
                let i = usize::from(id);
                i < MAX_CLASSES && self.bits[i / 64] & (1 << (i % 64)) != 0
            }
        }
    }

    fn set(&mut self, id: usize) {
        self.bits[id / 64] |= 1 << (id % 64);
    }

    /// Whether a pool admits the client: a member of one of its `allow` classes when it
    /// names any, of none of its `deny` classes.
    pub fn admits(&self, pool: &Pool) -> bool {
        (pool.allow.is_empty() || pool.allow.iter().any(|&c| self.has(c)))
            && !pool.deny.iter().any(|&c| self.has(c))
    }

    /// The settings the client's classes give it, first to apply first: in class order,
    /// a listed member's own before its class's.
    pub fn settings<'p>(&'p self, classes: &'p [Class]) -> impl Iterator<Item = &'p Settings> {
        self.members
            .iter()
            .filter_map(|&i| Some((usize::from(i), classes.get(usize::from(i))?)))
            .flat_map(move |(i, c)| {
                let member = match (&c.membership, self.listed.get(i)) {
                    (Membership::Match { subclasses, .. }, Some(&k)) if k != UNLISTED => {
                        subclasses.get(k as usize).map(|s| &s.settings)
                    }
                    _ => None,
                };
                member.into_iter().chain(Some(&c.settings))
            })
    }
}

/// The lookups built from the policy's classes: per matching class, its listed member
/// values, with the file's subclass index or, for a member added at run time, none.
#[derive(Debug, Default)]
pub(super) struct Classifier {
    members: Vec<hashbrown::HashMap<Box<[u8]>, u32>>,
}

impl Classifier {
    pub fn new(policy: &Policy) -> Self {
        let members = policy
            .classes
            .iter()
            .map(|c| match &c.membership {
                Membership::Match { subclasses, .. } => subclasses
                    .iter()
                    .enumerate()
                    .map(|(k, s)| (s.value.clone().into_boxed_slice(), k as u32))
                    .collect(),
                Membership::Test(_) => hashbrown::HashMap::new(),
            })
            .collect();
        Classifier { members }
    }

    /// Adds a member value to a matching class at run time; false when the class does not
    /// match by value or already lists it.
    pub fn add_member(&mut self, classes: &[Class], class: ClassId, value: &[u8]) -> bool {
        let i = usize::from(class);
        if !matches!(
            classes.get(i).map(|c| &c.membership),
            Some(Membership::Match { .. })
        ) {
            return false;
        }
        let Some(m) = self.members.get_mut(i) else {
            return false;
        };
        if m.contains_key(value) {
            return false;
        }
        m.insert(value.into(), UNLISTED);
        true
    }

    /// Removes a member value added at run time; the file's stay until a reload.
    pub fn remove_member(&mut self, class: ClassId, value: &[u8]) -> bool {
        let Some(m) = self.members.get_mut(usize::from(class)) else {
            return false;
        };
        if m.get(value) == Some(&UNLISTED) {
            m.remove(value);
            true
        } else {
            false
        }
    }

    /// The member values added at run time, per class index.
    pub fn runtime_members(&self) -> impl Iterator<Item = (ClassId, &[u8])> {
        self.members.iter().enumerate().flat_map(|(i, m)| {
            m.iter()
                .filter(|(_, &k)| k == UNLISTED)
                .map(move |(v, _)| (i as ClassId, &v[..]))
        })
    }

    /// Classifies one message into `out`; `known`: the client has a reservation in the
    /// network it is served from. The counters of the client's limited classes are
    /// found in `limits` now, while the packet is indexed, for `take_limits`.
    pub fn classify(
        &self,
        classes: &[Class],
        req: &Request<'_>,
        known: bool,
        limits: &Limits,
        out: &mut Classes,
    ) {
        out.bits = [0; MAX_CLASSES / 64];
        out.known = known;
        out.members.clear();
        out.limited = [(0, 0, 0); MAX_CHARGES];
        if classes.is_empty() {
            return;
        }
        out.listed.clear();
        out.listed.resize(classes.len(), UNLISTED);
        let pkt = Packet::new(req);
        let mut charges = 0;
        for (i, c) in classes.iter().enumerate() {
            let member = match &c.membership {
                Membership::Test(t) => t.eval(&pkt, &|id| out.has(id)),
                Membership::Match { value, spawn, .. } => match value.eval(&pkt) {
                    Some(v) => match self.members.get(i).and_then(|m| m.get(v)) {
                        Some(&k) => {
                            out.listed[i] = k;
                            true
                        }
                        None => *spawn,
                    },
                    None => false,
                },
            };
            if member {
                out.set(i);
                out.members.push(i as ClassId);
                if let Some(limit) = c.lease_limit.filter(|_| charges < MAX_CHARGES) {
                    let key = limits.key(i as ClassId, limit_value(c, &pkt));
                    out.limited[charges] = (key, limit, i as ClassId);
                    charges += 1;
                }
            }
        }
    }
}

impl super::Engine {
    /// Lists `value` as a member of the matching class `class`, as a subclass of the file
    /// would, while the server runs (an operator provisioning a port).
    pub fn add_class_member(&mut self, class: &str, value: &[u8]) -> Result<(), NotMember> {
        let id = self.matching_class(class)?;
        if self.classifier.add_member(&self.policy.classes, id, value) {
            Ok(())
        } else {
            Err(NotMember::Already {
                class: class.to_owned(),
                value: crate::lease::printable(value),
            })
        }
    }

    /// Ends a member added at run time.
    pub fn remove_class_member(&mut self, class: &str, value: &[u8]) -> Result<(), NotMember> {
        let id = self.matching_class(class)?;
        if self.classifier.remove_member(id, value) {
            Ok(())
        } else {
            Err(NotMember::Absent {
                class: class.to_owned(),
                value: crate::lease::printable(value),
            })
        }
    }

    /// The members added at run time, as (class name, value).
    pub fn class_members(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.classifier
            .runtime_members()
            .filter_map(|(c, v)| Some((self.policy.classes.get(usize::from(c))?.name.as_str(), v)))
    }

    fn matching_class(&self, name: &str) -> Result<ClassId, NotMember> {
        class::matching(&self.policy.classes, name).map(|(id, _)| id)
    }

    /// Counts the client's new lease against the limits of its classes (at most
    /// `MAX_CHARGES`, in class order): the class as a whole for a class with a test, the
    /// client's value (its circuit id, say) for a matching class. When one of them is
    /// reached, nothing is taken: the `what` (offer, lease) the client of `req` does not
    /// get is logged, and the drop returned.
    pub(super) fn take_limits(&self, req: &Request<'_>, what: &str) -> Result<Charge, Drop> {
        let mut charge = NO_CHARGE;
        let limits = self.leases.limits();
        for (n, &(key, limit, class)) in self.classes.limited.iter().enumerate() {
            if key == 0 {
                break;
            }
            let Some(at) = limits.place_key(key) else {
                continue;
            };
            if !limits.take(at, limit) {
                limits.release(&charge);
                tracing::info!(
                    "no {what} for {}: lease limit of class {} reached",
                    super::Hw(req.msg.chaddr()),
                    self.policy.classes[usize::from(class)].name
                );
                return Err(Drop::LeaseLimit);
            }
            charge[n] = at;
        }
        Ok(charge)
    }

    /// Counts a lease that exists already (replayed, or the failover partner's) against
    /// the limits its client's classes have, as far as what a lease keeps can tell: its
    /// hardware address, client identifier and relay agent information. A class whose
    /// test needs more of the packet does not count it until the client is seen again.
    pub(super) fn charge_existing(&mut self, id: SlotId) {
        if !self.limited {
            return;
        }
        let s = self.leases.slot(id);
        let mut buf = [0u8; 1024];
        let client_id = s
            .client
            .as_ref()
            .map(|k| k.as_ref())
            .filter(|k| k.kind == KeyKind::ClientId)
            .map(|k| k.bytes);
        let len = synthetic_request(
            &mut buf,
            s.htype,
            &s.hw[..usize::from(s.hlen)],
            client_id,
            s.agent.as_deref(),
        );
        let Ok(req) = Request::parse(&buf[..len]) else {
            return;
        };
        let res = self.reservation(&self.ids, &req);
        self.classify(&req, res);
        let limits = self.leases.limits();
        let mut charge = NO_CHARGE;
        for (slot, &(key, _, _)) in charge.iter_mut().zip(&self.classes.limited) {
            if let Some(at) = (key != 0).then(|| limits.place_key(key)).flatten() {
                limits.force(at);
                *slot = at;
            }
        }
        self.leases.charge(id, charge);
    }
}

/// What a limit counts by: the client's value of a matching class, nothing (the class as
/// a whole) for a class with a test.
fn limit_value<'a>(c: &'a Class, pkt: &Packet<'a>) -> &'a [u8] {
    match &c.membership {
        Membership::Match { value, .. } => value.eval(pkt).unwrap_or_default(),
        Membership::Test(_) => &[],
    }
}

/// A DHCPREQUEST carrying only what a lease keeps of its client, for classifying it.
fn synthetic_request(
    buf: &mut [u8; 1024],
    htype: u8,
    hw: &[u8],
    client_id: Option<&[u8]>,
    agent: Option<&[u8]>,
) -> usize {
    use crate::wire::{code, layout};
    buf[layout::OP] = crate::wire::BOOTREQUEST;
    buf[layout::HTYPE] = htype;
    buf[layout::HLEN] = hw.len() as u8;
    buf[layout::CHADDR..layout::CHADDR + hw.len()].copy_from_slice(hw);
    buf[layout::MAGIC..layout::OPTIONS].copy_from_slice(&layout::MAGIC_COOKIE);
    let mut at = layout::OPTIONS;
    let mut put = |c: u8, v: &[u8]| {
        buf[at] = c;
        buf[at + 1] = v.len() as u8;
        buf[at + 2..at + 2 + v.len()].copy_from_slice(v);
        at += 2 + v.len();
    };
    put(code::MESSAGE_TYPE, &[MessageType::Request.to_u8()]);
    if let Some(id) = client_id {
        put(code::CLIENT_ID, id);
    }
    if let Some(a) = agent {
        put(code::RELAY_AGENT_INFO, a);
    }
    buf[at] = code::END;
    at + 1
}
