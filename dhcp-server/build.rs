//! Embeds the XDP steering program when it has been built (`cargo xtask build-ebpf`; the
//! object may also be named by `DHCP_EBPF_OBJECT`). Writes `$OUT_DIR/ebpf.rs` with
//! `OBJECT: Option<&[u8]>`, `None` when there is no object, so a machine without the eBPF
//! toolchain still builds and tests everything else, and attaching says how to build it.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=DHCP_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let named = env::var_os("DHCP_EBPF_OBJECT").map(PathBuf::from);
    let object = named
        .clone()
        .unwrap_or_else(|| manifest.join("../target/ebpf/bpfel-unknown-none/release/dhcp-ebpf"));
    // Cargo counts a missing file as changed, which would rebuild the server every time.
    // Until `cargo xtask build-ebpf` has run, watch the directory the object will appear
    // in instead (made here, empty, so that there is something to watch).
    let watched = match (object.is_file(), &named, object.parent()) {
        (false, None, Some(dir)) => {
            fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            dir.to_path_buf()
        }
        _ => object.clone(),
    };
    println!("cargo::rerun-if-changed={}", watched.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let code = if object.is_file() {
        // A copy, so a rebuild of the object during this build cannot tear what we embed.
        let copy = out.join("dhcp-ebpf.o");
        fs::copy(&object, &copy)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", object.display()));
        let path = copy.to_str().expect("OUT_DIR is UTF-8");
        format!("pub const OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!({path:?}));\n")
    } else {
        "pub const OBJECT: Option<&[u8]> = None;\n".to_owned()
    };
    fs::write(out.join("ebpf.rs"), code).expect("OUT_DIR is writable");
}
