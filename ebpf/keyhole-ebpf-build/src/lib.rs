//! Called from the build.rs of gateway/ and relay/: builds the eBPF programs
//! crate for `bpfel-unknown-none` with aya-build, on the pinned stable
//! toolchain (`RUSTC_BOOTSTRAP=1` unlocks `-Z build-std=core`), linking with
//! the bpf-linker that `cargo xtask setup` built against the toolchain's own
//! libLLVM.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
};

/// The toolchain the programs are built with; keep in step with rust-toolchain.toml.
pub const TOOLCHAIN: &str = "1.95.0";

/// Where `cargo xtask setup` caches tools built for this machine.
pub fn tools_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("KEYHOLE_TOOLS_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("keyhole"))
}

/// The bpf-linker installation directory for a given libLLVM file name.
pub fn bpf_linker_root(cache: &Path, llvm_so: &str) -> PathBuf {
    cache.join(format!("bpf-linker-0.13.0-{llvm_so}"))
}

/// Finds a directory holding a usable `bpf-linker`: the xtask cache first
/// (it matches the toolchain), then PATH.
fn bpf_linker_dir() -> Option<PathBuf> {
    if let Some(cache) = tools_cache_dir()
        && let Ok(entries) = std::fs::read_dir(&cache)
    {
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("bpf-linker-") && n.contains(TOOLCHAIN))
            })
            .map(|p| p.join("bin"))
            .filter(|bin| bin.join("bpf-linker").is_file())
            .collect();
        found.sort();
        if let Some(dir) = found.pop() {
            return Some(dir);
        }
    }
    env::var_os("PATH")
        .and_then(|path| env::split_paths(&path).find(|dir| dir.join("bpf-linker").is_file()))
}

/// Builds the `keyhole-ebpf` package's programs into `OUT_DIR`.
///
/// `features` selects which programs the package builds.
pub fn build_programs(features: &[&str]) {
    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keyhole-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize().unwrap_or(ebpf_dir);
    println!("cargo:rerun-if-env-changed=KEYHOLE_TOOLS_DIR");
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("../keyhole-ebpf-common").display()
    );

    let Some(linker_dir) = bpf_linker_dir() else {
        panic!(
            "bpf-linker not found: run `cargo xtask setup` (it builds bpf-linker against \
             the {TOOLCHAIN} toolchain's libLLVM), or set AYA_BUILD_SKIP=1 to skip eBPF"
        );
    };
    let mut paths: Vec<PathBuf> = vec![linker_dir];
    if let Some(path) = env::var_os("PATH") {
        paths.extend(env::split_paths(&path));
    }
    let path: OsString = env::join_paths(paths).expect("PATH is joinable");
    // SAFETY: build scripts are single-threaded at this point; the child
    // cargo started by aya-build inherits these.
    unsafe {
        env::set_var("PATH", path);
        env::set_var("RUSTC_BOOTSTRAP", "1");
        // aya-build turns every stderr line of the nested cargo into a warning.
        env::set_var("CARGO_TERM_QUIET", "true");
    }

    let root_dir = ebpf_dir.to_str().expect("utf-8 path");
    let package = aya_build::Package {
        name: "keyhole-ebpf",
        root_dir,
        no_default_features: false,
        features,
    };
    if let Err(err) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(TOOLCHAIN)) {
        panic!("building eBPF programs failed: {err:#}");
    }
}
