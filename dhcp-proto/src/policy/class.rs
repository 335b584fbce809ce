//! Client classes: which clients are alike, by a test over the packet (Kea's `test`,
//! dhcpd's `match if`) or by the value of an expression looked up among listed members
//! (dhcpd's `match` with `subclass`, a hash lookup however many members there are), or
//! every value its own member (`spawn with`). A class may restrict pools, set options,
//! lease times, `next-server` and `filename`, and cap the leases its members hold.
//!
//! What a client gets is merged in this order, each level overriding the one before:
//! subnet < pool < class (in configuration order, the first class that sets a value
//! wins; a subclass member's own settings before its class's) < reservation.

use std::net::Ipv4Addr;

use super::{ClassId, LeaseTimes, OptionSet};
use crate::expr::{Test, Value};

/// Built-in class: the client has a reservation in the subnet it is served from.
pub const KNOWN: ClassId = ClassId::MAX - 1;
/// Built-in class: the client has no reservation there.
pub const UNKNOWN: ClassId = ClassId::MAX - 2;

/// How many classes a configuration may define: membership is a bit set of this size.
pub const MAX_CLASSES: usize = 256;

/// The name of a built-in class, as Kea spells them (dhcpd says `known clients`).
pub fn builtin(name: &str) -> Option<ClassId> {
    match name {
        "KNOWN" => Some(KNOWN),
        "UNKNOWN" => Some(UNKNOWN),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub name: String,
    pub membership: Membership,
    pub settings: Settings,
    /// At most this many leases (offered or active) at once per member value (with
    /// `Membership::Match`) or for the whole class (with a test): dhcpd's `lease limit`,
    /// Kea's limits hook.
    pub lease_limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Membership {
    /// Members are the clients the test holds for.
    Test(Test),
    /// Members are the clients whose value is listed (`subclasses`), or, with `spawn`,
    /// every client for which the value exists, each value a subclass of its own.
    Match {
        value: Value,
        spawn: bool,
        subclasses: Vec<Subclass>,
    },
}

/// One listed member value of a matching class, with settings of its own.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subclass {
    pub value: Vec<u8>,
    pub settings: Settings,
}

/// What a class or a subclass member sets for its clients; unset values fall through.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    pub options: OptionSet,
    pub lease: Option<LeaseTimes>,
    /// BOOTP siaddr: the server the client loads its boot file from.
    pub next_server: Option<Ipv4Addr>,
    /// BOOTP file: the boot file name.
    pub filename: Option<String>,
}

impl Settings {
    pub fn is_empty(&self) -> bool {
        self == &Settings::default()
    }
}

/// Checks the classes as a whole: unique names, at most `MAX_CLASSES`, member values
/// listed once, boot file names that fit the header, lease times in order.
pub(super) fn validate(classes: &[Class], err: &mut impl FnMut(String, String)) {
    if classes.len() > MAX_CLASSES {
        err(
            "class".into(),
            format!(
                "{} classes; at most {MAX_CLASSES} are supported",
                classes.len()
            ),
        );
    }
    let mut names = hashbrown::HashMap::new();
    for (i, c) in classes.iter().enumerate() {
        let at = |key: &str| format!("class[{i}].{key}");
        if builtin(&c.name).is_some() {
            err(at("name"), format!("'{}' is a built-in class", c.name));
        }
        if let Some(j) = names.insert(c.name.as_str(), i) {
            err(at("name"), format!("'{}' is also class[{j}]", c.name));
        }
        if c.lease_limit == Some(0) {
            err(at("lease-limit"), "must be at least 1".into());
        }
        validate_settings(&c.settings, &at(""), err);
        if let Membership::Match { subclasses, .. } = &c.membership {
            let mut seen = hashbrown::HashMap::new();
            for (k, s) in subclasses.iter().enumerate() {
                let at = format!("class[{i}].subclass[{k}]");
                if let Some(j) = seen.insert(s.value.as_slice(), k) {
                    err(format!("{at}.value"), format!("also subclass[{j}]"));
                }
                validate_settings(&s.settings, &format!("{at}."), err);
            }
        }
    }
}

fn validate_settings(s: &Settings, at: &str, err: &mut impl FnMut(String, String)) {
    if let Some(f) = &s.filename {
        if f.len() > 127 {
            err(
                format!("{at}filename"),
                format!("{} octets; the BOOTP file field holds 127", f.len()),
            );
        }
    }
    if let Some(Err((key, why))) = s.lease.as_ref().map(LeaseTimes::check) {
        err(format!("{at}{key}"), why);
    }
}

/// Why a class member was not added, removed or listed at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotMember {
    #[error("no class named '{0}'")]
    NoClass(String),
    #[error("class '{0}' has a test, not match = \"...\": its members are not listed")]
    NotMatching(String),
    /// The value (as `lease::printable` shows it) is listed already, in the file or at
    /// run time.
    #[error("'{value}' is already a member of class '{class}'")]
    Already { class: String, value: String },
    #[error("class '{class}' has no member '{value}' added at run time")]
    Absent { class: String, value: String },
}

/// The class named `name`, when its members are listed by value (`match = "..."`): the
/// classes the operator may add members to.
pub fn matching<'a>(classes: &'a [Class], name: &str) -> Result<(ClassId, &'a Class), NotMember> {
    let (i, c) = classes
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name)
        .ok_or_else(|| NotMember::NoClass(name.to_owned()))?;
    match c.membership {
        Membership::Match { .. } => Ok((i as ClassId, c)),
        Membership::Test(_) => Err(NotMember::NotMatching(name.to_owned())),
    }
}

/// The class a test or a pool names: a built-in one, or one of `classes`.
pub fn named(classes: &[Class], name: &str) -> Option<ClassId> {
    builtin(name).or_else(|| {
        classes
            .iter()
            .position(|c| c.name == name)
            .map(|p| p as ClassId)
    })
}

/// Whether `id` names a configured or a built-in class.
pub(super) fn defined(classes: &[Class], id: ClassId) -> bool {
    usize::from(id) < classes.len() || id == KNOWN || id == UNKNOWN
}
