//! The Debian package (`cargo xtask deb`) installed on this machine with dpkg: its user
//! and state directory, the installed binary serving a real client (udhcpc) over XDP
//! in a namespace lab, then an upgrade and a removal that keep the lease journal, and a
//! purge that deletes it and the user. It packages the binary under test (the release
//! build would take minutes), with the same packaging code the release goes through.
//! Root only, as dpkg is; a guard purges the package however the test ends.

#[allow(dead_code)] // each test crate uses part of the shared harness
#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{require, run, Lab, SERVER_BIN};

const STATE: &str = "/var/lib/dhcp-server";
const CONFIG: &str = "/etc/dhcp-server/dhcp-server.toml";
const INSTALLED_BIN: &str = "/usr/bin/dhcp-server";

/// Purges the package on drop, so a failing test leaves nothing installed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "dhcp-server"])
            .output();
    }
}

fn installed_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status} ${Version}", "dhcp-server"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("installed ").map(str::to_owned)
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cargo xtask deb` packaging the binary under test into `out`; the package's path.
fn build(out: &Path, extra: &[&str]) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(workspace)
        .args(["xtask", "deb", "--binary", SERVER_BIN, "--out"])
        .arg(out)
        .args(extra));
    let debs: Vec<PathBuf> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", out.display());
    debs[0].clone()
}

fn deb_field(deb: &Path, field: &str) -> String {
    text(&run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field)))
        .trim()
        .to_owned()
}

/// The uid of the dhcp-server user, if it exists.
fn user_uid() -> Option<u32> {
    let out = Command::new("getent")
        .args(["passwd", "dhcp-server"])
        .output()
        .ok()?;
    text(&out).split(':').nth(2)?.parse().ok()
}

fn group_exists() -> bool {
    Command::new("getent")
        .args(["group", "dhcp-server"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The journal as `binary` reads it (JSON), which holds `ip` when the lease survived.
fn journal_dump(binary: &str) -> String {
    text(&run(Command::new(binary).args([
        "journal",
        "dump",
        "--state-dir",
        STATE,
    ])))
}

fn check_state_dir(uid: u32) {
    let meta = fs::metadata(STATE).unwrap_or_else(|e| panic!("{STATE}: {e}"));
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), uid, "{STATE} owned by dhcp-server");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750, "{STATE} mode");
}

#[test]
fn package_installs_serves_upgrades_removes_and_purges() {
    let Some(mut lab) = Lab::new("package", "192.0.2.1/24") else {
        return;
    };
    for program in ["dpkg", "dpkg-deb", "lintian", "udhcpc"] {
        require(program);
    }
    // Never clobber a dhcp-server an operator installed on this machine.
    assert!(
        Command::new("dpkg")
            .args(["-s", "dhcp-server"])
            .output()
            .is_ok_and(|o| !o.status.success())
            && !Path::new(STATE).exists()
            && user_uid().is_none(),
        "a dhcp-server package, user or {STATE} is already on this machine; the test would \
         purge it, so it stops here"
    );
    let _purge = Purge;

    // The first package as a release gets it (the changelog's version, lintian on), and a
    // second one with a higher version to upgrade to.
    let first = build(&lab.path("v1"), &[]);
    let version = deb_field(&first, "Version");
    let next = format!("{version}+upgrade1");
    let second = build(&lab.path("v2"), &["--version", &next, "--no-lintian"]);
    assert_eq!(deb_field(&second, "Version"), next);
    let depends = deb_field(&first, "Depends");
    assert!(
        depends.contains("libc6") && depends.contains("adduser"),
        "Depends: {depends}"
    );

    run(Command::new("dpkg").arg("-i").arg(&first));
    assert_eq!(installed_version().as_deref(), Some(version.as_str()));
    let uid = user_uid().expect("postinst creates the dhcp-server user");
    assert!(uid < 1000, "dhcp-server is a system user (uid {uid})");
    assert!(group_exists(), "and its group");
    check_state_dir(uid);
    let listed = text(&run(Command::new("dpkg").args(["-L", "dhcp-server"])));
    for file in [
        INSTALLED_BIN,
        CONFIG,
        "/lib/systemd/system/dhcp-server.service",
        "/usr/share/man/man1/dhcp-server.1.gz",
        "/usr/share/man/man1/dhcp-server-run.1.gz",
        "/usr/share/bash-completion/completions/dhcp-server",
        "/usr/share/zsh/vendor-completions/_dhcp-server",
        "/usr/share/fish/vendor_completions.d/dhcp-server.fish",
        "/usr/share/doc/dhcp-server/copyright",
        "/usr/share/doc/dhcp-server/changelog.Debian.gz",
    ] {
        assert!(
            listed.lines().any(|l| l == file),
            "{file} not in:\n{listed}"
        );
    }
    let conffiles = text(&run(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${Conffiles}",
        "dhcp-server",
    ])));
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    let unit = fs::read_to_string("/lib/systemd/system/dhcp-server.service").unwrap();
    assert!(
        unit.contains(&format!("ExecStart={INSTALLED_BIN} run --config {CONFIG}")),
        "{unit}"
    );
    // Enabled without a running systemd: deb-systemd-helper made the wants link.
    assert!(
        fs::symlink_metadata("/etc/systemd/system/multi-user.target.wants/dhcp-server.service")
            .is_ok(),
        "the unit is enabled"
    );
    // The shipped configuration serves nothing: run refuses it and says what is missing.
    let refused = Command::new(INSTALLED_BIN)
        .args(["run", "--config", CONFIG])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("interfaces"), "{said}");

    // The installed binary, over XDP (so with its embedded program), journaling into the
    // package's state directory, hands udhcpc a lease.
    let config = lab.path("serve.toml");
    fs::write(
        &config,
        format!(
            "interfaces = [\"{iface}\"]\nstate-dir = \"{STATE}\"\nbackend = \"xdp\"\n\
             workers = 1\n\n[[subnet]]\nsubnet = \"192.0.2.0/24\"\ninterface = \"{iface}\"\n\
             pools = [\"192.0.2.10-192.0.2.200\"]\n",
            iface = lab.server_if
        ),
    )
    .unwrap();
    let ns = lab.server_ns.clone();
    let config_arg = config.to_str().unwrap().to_owned();
    let pid = lab.spawn(
        &ns,
        INSTALLED_BIN,
        &["run", "--config", &config_arg],
        "server.log",
    );
    common::wait_for_file(&lab.path("server.log"), "ready", Duration::from_secs(10));
    let events = lab.path("udhcpc.events");
    let script = lab.script(
        "udhcpc-script",
        &format!("echo \"$1 $ip\" >> {}\nexit 0", events.display()),
    );
    lab.in_client(
        "timeout",
        &[
            "20",
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-i",
            &lab.client_if,
            "-s",
            script.to_str().unwrap(),
        ],
    );
    let recorded = fs::read_to_string(&events).unwrap_or_default();
    let ip = recorded
        .lines()
        .find_map(|l| l.strip_prefix("bound "))
        .unwrap_or_else(|| panic!("no lease: {recorded}"))
        .to_owned();
    assert!(ip.starts_with("192.0.2."), "{ip}");
    let stopped = lab.stop(pid).expect("the server stops on SIGTERM");
    let log = fs::read_to_string(lab.path("server.log")).unwrap();
    assert!(stopped.success(), "{stopped}:\n{log}");
    assert!(
        log.contains("with the xdp backend"),
        "served over XDP:\n{log}"
    );
    assert!(
        journal_dump(INSTALLED_BIN).contains(&ip),
        "the lease of {ip} is journaled"
    );

    // Upgrade: same user, same directory, the lease still there.
    run(Command::new("dpkg").arg("-i").arg(&second));
    assert_eq!(installed_version().as_deref(), Some(next.as_str()));
    assert_eq!(user_uid(), Some(uid));
    check_state_dir(uid);
    // Read by the upgraded binary.
    assert!(
        journal_dump(INSTALLED_BIN).contains(&ip),
        "the upgrade kept the journal"
    );

    // Removal: the binary goes; the journal, the configuration and the user stay.
    run(Command::new("dpkg").args(["-r", "dhcp-server"]));
    assert!(!Path::new(INSTALLED_BIN).exists());
    assert!(Path::new(CONFIG).exists(), "removal keeps the conffile");
    assert_eq!(user_uid(), Some(uid));
    // The installed binary is gone with the package: the one under test reads it.
    assert!(
        journal_dump(SERVER_BIN).contains(&ip),
        "removal kept the journal"
    );

    // Purge: journal, configuration, user and group gone.
    run(Command::new("dpkg").args(["--purge", "dhcp-server"]));
    assert!(!Path::new(STATE).exists(), "purge deletes {STATE}");
    assert!(
        !Path::new("/etc/dhcp-server").exists(),
        "purge deletes the configuration"
    );
    assert_eq!(user_uid(), None, "purge deletes the user");
    assert!(!group_exists(), "and its group");
    assert!(installed_version().is_none());
}
