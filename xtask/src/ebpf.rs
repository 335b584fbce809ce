//! The XDP program (`dhcp-ebpf`) and its toolchain. It builds with nightly for
//! bpfel-unknown-none (`-Z build-std=core`, so nightly's rust-src), linked by bpf-linker.
//! bpf-linker must use the LLVM of that nightly, and Debian has no LLVM of that version,
//! so `setup` builds bpf-linker against the libLLVM that ships inside the nightly
//! toolchain. The server embeds the object from `target/ebpf/` when it is built
//! (dhcp-server/build.rs), so `build` runs before anything builds the server.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{is_root, on_path, sh, Result};

/// The bpf-linker release checked against this toolchain (see shared/LAB.md).
const BPF_LINKER: &str = "0.13.0";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Where the object lands; dhcp-server/build.rs looks in the same place.
pub fn object() -> PathBuf {
    workspace().join("target/ebpf/bpfel-unknown-none/release/dhcp-ebpf")
}

/// A nightly command through the rustup proxy. Cargo exports the toolchain it runs under
/// (`RUSTUP_TOOLCHAIN`, `RUSTC`) to `cargo xtask`; those would override `+nightly`.
fn nightly(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("+nightly")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    cmd
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `~/.cargo/bin`, where `cargo install` puts bpf-linker; it may not be on PATH.
fn cargo_bin() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// PATH with `~/.cargo/bin` appended, for rustc to find bpf-linker.
fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(cargo_bin());
    std::env::join_paths(dirs).unwrap_or_default()
}

fn bpf_linker_works() -> bool {
    let exe = if on_path("bpf-linker") {
        PathBuf::from("bpf-linker")
    } else {
        match cargo_bin() {
            Some(dir) => dir.join("bpf-linker"),
            None => return false,
        }
    };
    // A nightly update removes the libLLVM it was linked against: then it no longer runs.
    Command::new(exe)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs what the eBPF build needs, where missing: nightly's rust-src, bpf-linker, and
/// (as root) bpftool and iproute2 to look at attached programs. Idempotent.
pub fn setup() -> Result {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        sh(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !bpf_linker_works() {
        install_bpf_linker()?;
    }
    if is_root() {
        crate::install(&["bpftool", "iproute2"])?;
    }
    Ok(())
}

/// `cargo install bpf-linker` against the nightly's own libLLVM: a directory holding
/// `lib/libLLVM.so` (for the build) and the library under its own name (the name the
/// linker records, found again through the rpath at run time), under ~/.cache so that
/// `cargo clean` does not break the installed linker.
fn install_bpf_linker() -> Result {
    let version = output(nightly("rustc").arg("-vV"))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .ok_or_else(|| format!("no LLVM version in `rustc +nightly -vV`:\n{version}"))?
        .to_owned();
    let sysroot = PathBuf::from(output(nightly("rustc").args(["--print", "sysroot"]))?.trim());
    let lib = std::fs::read_dir(sysroot.join("lib"))
        .map_err(|e| format!("{}: {e}", sysroot.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so."))
        .ok_or_else(|| format!("no libLLVM.so.* in {}/lib", sysroot.display()))?;
    let cache = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache"))
        .unwrap_or_else(|| workspace().join("target"));
    let prefix = cache.join(format!("dhcp-server/llvm-{major}"));
    let links = prefix.join("lib");
    let _ = std::fs::remove_dir_all(&links);
    std::fs::create_dir_all(&links).map_err(|e| format!("{}: {e}", links.display()))?;
    for name in ["libLLVM.so", lib.as_str()] {
        std::os::unix::fs::symlink(sysroot.join("lib").join(&lib), links.join(name))
            .map_err(|e| format!("{}: {e}", links.join(name).display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER} against nightly's LLVM {major} (about a minute)"
    );
    sh(Command::new("cargo")
        .args(["install", "--force", "bpf-linker", "--version", BPF_LINKER])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix))
}

/// `cargo xtask build-ebpf`: the XDP program's object, in `target/ebpf/`.
pub fn build() -> Result {
    if !bpf_linker_works() {
        return Err("bpf-linker is missing or broken: run `cargo xtask setup` first".into());
    }
    let root = workspace();
    sh(nightly("cargo")
        .current_dir(root.join("dhcp-ebpf"))
        .args(["build", "--release", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(root.join("target/ebpf"))
        .env("PATH", path_with_cargo_bin()))?;
    let object = object();
    if !object.is_file() {
        return Err(format!("the eBPF build left no {}", object.display()));
    }
    Ok(())
}
