//! Least privilege: a server started as root (`run --user`, or `user` in the file) sets
//! up with root's capabilities, then runs as an ordinary user with none.
//!
//! Nothing the server does after setup needs a capability (see docs/security.md for the
//! reasons, one by one): the XDP program is attached through a bpf_link and detached by
//! closing its descriptor; the BPF maps (balance rule, counters, flood limits) are
//! reached through descriptors already open, which Linux 6.5 and later allow without
//! CAP_BPF; the AF_XDP, UDP, packet and raw sockets, the TCP listeners and the control
//! socket are all open before the switch, and a reload reopens none of them; the
//! failover primary dials out from an ephemeral port; the journal writes in a state
//! directory handed to the user. So the set kept is empty, which is also the only set
//! that can be kept in every thread: capabilities belong to each thread, and the only
//! change that reaches every thread of a process is glibc's set*id, which (without
//! PR_SET_KEEPCAPS, itself per thread) clears them all when root becomes another user.
//!
//! Two steps: `prepare`, before the first thread starts, empties the capability bounding
//! set and sets no_new_privs (both inherited by every thread started afterwards, so no
//! thread can ever regain a capability through execve), and takes the state directory
//! back for root; `switch`, once every socket is open, hands the state directory (with
//! the files the journal made as root) to the user, changes groups, group and user, then
//! reads every thread's status back to check that none is left with a capability, and
//! the state directory to check that the user owns all of it.

use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};

/// The user and group the server runs as after setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("user '{0}' does not exist")]
    NoUser(String),
    #[error("group '{0}' does not exist")]
    NoGroup(String),
    #[error("cannot look up {what} '{name}': {source}")]
    Lookup {
        what: &'static str,
        name: String,
        source: io::Error,
    },
    #[error(
        "running as user '{user}' needs the server started as root (it runs as uid {euid}); \
         start it as root, or drop the user setting"
    )]
    NotRoot { user: String, euid: u32 },
    #[error("cannot drop privileges: {step} failed: {source}")]
    Step {
        step: &'static str,
        source: io::Error,
    },
    #[error("cannot hand the state directory to {user}: {path}: {source}")]
    StateDir {
        user: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("after dropping privileges, thread {thread} still has {what}")]
    Left { thread: String, what: String },
    #[error(
        "the xdp backend cannot run as user '{user}' on Linux {release}: with \
         kernel.unprivileged_bpf_disabled set, kernels before 6.5 refuse every bpf() call, \
         even on maps already open, without CAP_BPF; run it as root, or use Linux 6.5 or later"
    )]
    BpfNeedsRoot { user: String, release: String },
}

impl Target {
    /// Looks up `user` and `group` (by default the user's primary group).
    pub fn resolve(user: &str, group: Option<&str>) -> Result<Self, Error> {
        let (uid, primary) = lookup_user(user)?;
        let (group, gid) = match group {
            Some(g) => (g.to_owned(), lookup_group(g)?),
            None => (
                group_name(primary)?.unwrap_or_else(|| primary.to_string()),
                primary,
            ),
        };
        Ok(Self {
            user: user.to_owned(),
            uid,
            group,
            gid,
        })
    }

    /// Run before the first thread starts (they inherit what is set here): refuses when
    /// not root, takes the state directory back from the last run's user (root without
    /// CAP_DAC_OVERRIDE, as the systemd unit runs it, could not open the journal in it
    /// otherwise; CAP_CHOWN does), empties the bounding set and sets no_new_privs.
    pub fn prepare(&self, state_dir: Option<&Path>) -> Result<(), Error> {
        let euid = geteuid();
        if euid != 0 {
            return Err(Error::NotRoot {
                user: self.user.clone(),
                euid,
            });
        }
        if let Some(dir) = state_dir.filter(|d| d.exists()) {
            hand_over(dir, 0, 0).map_err(|source| Error::StateDir {
                user: "root for the start".into(),
                path: dir.to_owned(),
                source,
            })?;
        }
        empty_bounding_set()?;
        set_no_new_privs()
    }

    /// Hands `state_dir` to the user (the journal creates, renames, removes and rereads
    /// its files there for the whole run), becomes the user, keeping no capability, in
    /// every thread, and checks each thread and the state directory. `bpf_maps` says the
    /// backend still reaches BPF maps (the xdp backend).
    pub fn switch(&self, state_dir: Option<&Path>, bpf_maps: bool) -> Result<(), Error> {
        if bpf_maps {
            self.check_bpf_without_capability()?;
        }
        let handed = |dir: &Path| {
            let user = format!("user '{}'", self.user);
            let path = dir.to_owned();
            move |source| Error::StateDir { user, path, source }
        };
        if let Some(dir) = state_dir {
            hand_over(dir, self.uid, self.gid).map_err(handed(dir))?;
        }
        set_groups(self.gid)?;
        set_gid(self.gid)?;
        set_uid(self.uid)?;
        self.check_threads()?;
        // The journal gives every file it makes to the user (journal::owner), also those
        // made between the hand-over and the switch: a file left root's would be said
        // here rather than found at the first compaction.
        if let Some(dir) = state_dir {
            owned_by(dir, self.uid).map_err(handed(dir))?;
        }
        tracing::info!(
            "dropped privileges to user {} ({}), group {} ({}); keeping no capabilities",
            self.user,
            self.uid,
            self.group,
            self.gid
        );
        Ok(())
    }

    /// Linux before 6.5 checked kernel.unprivileged_bpf_disabled on every bpf() command;
    /// 6.5 moved the check to map and program creation.
    fn check_bpf_without_capability(&self) -> Result<(), Error> {
        let release = kernel_release();
        // Unreadable (ProcSubset=pid hides /proc/sys): assume the distributions' default.
        let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .map(|s| s.trim() != "0")
            .unwrap_or(true);
        if disabled && version(&release).is_some_and(|v| v < (6, 5)) {
            return Err(Error::BpfNeedsRoot {
                user: self.user.clone(),
                release,
            });
        }
        Ok(())
    }

    /// Reads every thread's status back: user and group ids, groups, and no capability
    /// permitted, effective, ambient or in the bounding set.
    fn check_threads(&self) -> Result<(), Error> {
        let step = |source| Error::Step {
            step: "reading /proc/self/task",
            source,
        };
        for entry in std::fs::read_dir("/proc/self/task").map_err(step)? {
            let task = entry.map_err(step)?.path();
            let Ok(status) = std::fs::read_to_string(task.join("status")) else {
                continue; // the thread ended meanwhile
            };
            let thread = task
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            if let Some(what) = self.leftover(&status) {
                return Err(Error::Left { thread, what });
            }
        }
        Ok(())
    }

    /// What a thread's `status` shows of privilege it should no longer have.
    fn leftover(&self, status: &str) -> Option<String> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or("")
        };
        let ids = |name: &str, want: u32| {
            field(name)
                .split_whitespace()
                .all(|i| i == want.to_string())
        };
        if !ids("Uid:", self.uid) {
            return Some(format!("user ids {}", field("Uid:")));
        }
        if !ids("Gid:", self.gid) || !ids("Groups:", self.gid) {
            return Some(format!(
                "group ids {} groups {}",
                field("Gid:"),
                field("Groups:")
            ));
        }
        for set in ["CapPrm:", "CapEff:", "CapAmb:", "CapBnd:"] {
            if u64::from_str_radix(field(set), 16) != Ok(0) {
                return Some(format!("capabilities {set} {}", field(set)));
            }
        }
        None
    }
}

fn last_os_error(step: &'static str) -> Error {
    Error::Step {
        step,
        source: io::Error::last_os_error(),
    }
}

fn lookup_user(name: &str) -> Result<(u32, u32), Error> {
    let cname = CString::new(name).map_err(|_| Error::NoUser(name.to_owned()))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: passwd is plain old data; getpwnam_r fills it with pointers into `buf`,
        // which outlives every read of it below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, `buf.len()` is the buffer's size.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() => return Err(Error::NoUser(name.to_owned())),
            0 => return Ok((pwd.pw_uid, pwd.pw_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            e => {
                return Err(Error::Lookup {
                    what: "user",
                    name: name.to_owned(),
                    source: io::Error::from_raw_os_error(e),
                })
            }
        }
    }
}

/// The group's id, or its name when `by_id` is given: one reentrant lookup for both.
fn group_entry(name: Option<&CStr>, by_id: u32) -> Result<Option<(String, u32)>, i32> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: group is plain old data; getgr*_r fill it with pointers into `buf`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, `buf.len()` is the buffer's size.
        let rc = unsafe {
            match name {
                Some(n) => libc::getgrnam_r(
                    n.as_ptr(),
                    &mut grp,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut found,
                ),
                None => libc::getgrgid_r(
                    by_id,
                    &mut grp,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut found,
                ),
            }
        };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => {
                // SAFETY: on success gr_name points to a NUL-terminated string in `buf`.
                let gname = unsafe { CStr::from_ptr(grp.gr_name) };
                return Ok(Some((gname.to_string_lossy().into_owned(), grp.gr_gid)));
            }
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            e => return Err(e),
        }
    }
}

fn lookup_group(name: &str) -> Result<u32, Error> {
    let cname = CString::new(name).map_err(|_| Error::NoGroup(name.to_owned()))?;
    match group_entry(Some(&cname), 0) {
        Ok(Some((_, gid))) => Ok(gid),
        Ok(None) => Err(Error::NoGroup(name.to_owned())),
        Err(e) => Err(Error::Lookup {
            what: "group",
            name: name.to_owned(),
            source: io::Error::from_raw_os_error(e),
        }),
    }
}

/// The name of group `gid`; none when it has no entry (a user's primary group may not).
fn group_name(gid: u32) -> Result<Option<String>, Error> {
    group_entry(None, gid)
        .map(|g| g.map(|(n, _)| n))
        .map_err(|e| Error::Lookup {
            what: "group",
            name: gid.to_string(),
            source: io::Error::from_raw_os_error(e),
        })
}

fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `dir` and everything under it (symbolic links themselves, never their targets) become
/// `uid`:`gid`. Root without CAP_DAC_OVERRIDE (CAP_CHOWN only) can list only what it
/// owns: a directory becomes root's before its entries are listed, and the user's after.
fn hand_over(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let is_dir = std::fs::symlink_metadata(dir)?.is_dir();
    if uid == 0 || !is_dir {
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    }
    if is_dir {
        for entry in std::fs::read_dir(dir)? {
            hand_over(&entry?.path(), uid, gid)?;
        }
        if uid != 0 {
            std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// Fails on the first entry of `dir` (or `dir` itself) that `uid` does not own.
fn owned_by(dir: &Path, uid: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.uid() != uid {
        return Err(io::Error::other(format!(
            "{} is owned by uid {}",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            owned_by(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

/// Drops every capability from the bounding set, up to the kernel's last one.
fn empty_bounding_set() -> Result<(), Error> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: past the kernel's last capability; the set is empty.
            if e.raw_os_error() == Some(libc::EINVAL) && cap > 0 {
                return Ok(());
            }
            return Err(Error::Step {
                step: "emptying the capability bounding set",
                source: e,
            });
        }
    }
    Ok(())
}

fn set_no_new_privs() -> Result<(), Error> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(last_os_error("setting no_new_privs"));
    }
    Ok(())
}

// glibc applies setgroups, setresgid and setresuid to every thread of the process (its
// "setxid" broadcast), not only to the calling one as the raw system calls do.

fn set_groups(gid: u32) -> Result<(), Error> {
    let groups = [gid];
    // SAFETY: `groups` is a live array of exactly one gid.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(last_os_error("setgroups"));
    }
    Ok(())
}

fn set_gid(gid: u32) -> Result<(), Error> {
    // SAFETY: setresgid takes plain integers.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(last_os_error("setresgid"));
    }
    Ok(())
}

/// Real, effective and saved user ids all leave 0: the kernel then clears the permitted,
/// effective and ambient capabilities of each thread (PR_SET_KEEPCAPS is not set).
fn set_uid(uid: u32) -> Result<(), Error> {
    // SAFETY: setresuid takes plain integers.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(last_os_error("setresuid"));
    }
    Ok(())
}

/// uname's release: /proc/sys may be hidden (systemd's ProcSubset=pid).
fn kernel_release() -> String {
    // SAFETY: utsname is plain old data, filled by uname on success.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a live, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    // SAFETY: on success `release` holds a NUL-terminated string.
    unsafe { CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// (major, minor) of a kernel release such as "6.1.0-18-amd64".
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> Target {
        Target {
            user: "nobody".into(),
            uid: 65534,
            group: "nogroup".into(),
            gid: 65534,
        }
    }

    const DROPPED: &str = "Name:\tx\nUid:\t65534\t65534\t65534\t65534\n\
        Gid:\t65534\t65534\t65534\t65534\nGroups:\t65534 \nCapInh:\t0000000000000000\n\
        CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n";

    #[test]
    fn a_dropped_thread_shows_nothing_left() {
        assert_eq!(nobody().leftover(DROPPED), None);
    }

    #[test]
    fn any_id_or_capability_left_is_named() {
        let saved_root = DROPPED.replace(
            "Uid:\t65534\t65534\t65534\t65534",
            "Uid:\t65534\t65534\t0\t65534",
        );
        assert_eq!(
            nobody().leftover(&saved_root).as_deref(),
            Some("user ids 65534\t65534\t0\t65534")
        );
        let root_group = DROPPED.replace("Groups:\t65534 ", "Groups:\t0 65534 ");
        assert!(nobody()
            .leftover(&root_group)
            .unwrap()
            .starts_with("group ids"));
        let net_admin = DROPPED.replace("CapEff:\t0000000000000000", "CapEff:\t0000000000001000");
        assert_eq!(
            nobody().leftover(&net_admin).as_deref(),
            Some("capabilities CapEff: 0000000000001000")
        );
        let bounding = DROPPED.replace("CapBnd:\t0000000000000000", "CapBnd:\t000001ffffffffff");
        assert!(nobody().leftover(&bounding).unwrap().contains("CapBnd"));
    }

    #[test]
    fn kernel_versions_are_read_from_the_release() {
        assert_eq!(version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(version("6.18.44-fc-v1147"), Some((6, 18)));
        assert_eq!(version("5.15.0"), Some((5, 15)));
        assert_eq!(version("garbage"), None);
    }

    #[test]
    fn unknown_users_and_groups_are_named() {
        let user = "no-such-user-dhcp-server-test";
        assert!(matches!(Target::resolve(user, None), Err(Error::NoUser(u)) if u == user));
        let group = "no-such-group-dhcp-server-test";
        assert!(
            matches!(Target::resolve("root", Some(group)), Err(Error::NoGroup(g)) if g == group)
        );
        let root = Target::resolve("root", None).unwrap();
        assert_eq!((root.uid, root.gid, root.group.as_str()), (0, 0, "root"));
    }
}
