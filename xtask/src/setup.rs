//! `cargo xtask setup`: makes a fresh machine of this kind ready, and says
//! nothing when it already is.
//!
//! - Debian packages the tests and demo use (real peers and tools).
//! - Components of the pinned toolchain (RUSTUP_AUTO_INSTALL=0 on these
//!   machines, so rust-toolchain.toml alone doesn't add them).
//! - oidc-provider (npm) for the OIDC sign-in test, once per machine.
//! - bpf-linker, built once per machine and toolchain against the
//!   toolchain's own libLLVM (Debian has no LLVM 22) and cached.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use keyhole_ebpf_build::{TOOLCHAIN, bpf_linker_root, tools_cache_dir};

use crate::cmd::{output, run as run_cmd};

/// Debian packages the project needs, and why.
const PACKAGES: &[&str] = &[
    "iproute2",                   // ip netns, veth, routes
    "iputils-ping",               // real ICMP in netns tests
    "nftables",                   // NAT routers in tests, gateway NAT
    "iperf3",                     // throughput benchmarks
    "netcat-openbsd",             // ad-hoc TCP/UDP in tests
    "curl",                       // HTTP through tunnels in e2e tests
    "procps",                     // pkill/ps in cleanup
    "wireguard-tools",            // `wg`: interop and kernel-backend checks
    "wireguard-go",               // reference userspace WireGuard peer
    "coturn",                     // reference TURN server and turnutils_uclient
    "bpftool",                    // inspecting loaded programs and maps
    "postgresql",                 // the scale-out store
    "kmod",                       // depmod for the VM initramfs
    "busybox-static",             // VM initramfs
    "qemu-system-x86",            // kernel-WireGuard VM tests
    "chromium",                   // headless browser for the portal web UI tests
    "chromium-driver",            // chromedriver, driven by fantoccini
    "nodejs",                     // runs the OIDC provider of the web UI tests
    "gcc-mingw-w64-x86-64-win32", // C for ring when checking the client for Windows
    "dbus",                       // a private system bus for the client's systemd-resolved test
    "fonts-dejavu-core",          // text in the benchmark report's charts
];

/// Targets the client must compile for besides Linux (`cargo check` in
/// `cargo xtask test`). macOS is not among them: ring's build script needs
/// the Apple SDK's headers, which no Debian package ships.
pub const CROSS_TARGETS: &[&str] = &["x86_64-pc-windows-gnu"];

/// The OIDC provider the web UI tests sign in against (npm, pinned).
const OIDC_PROVIDER: &str = "oidc-provider@9.13.3";

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    packages()?;
    toolchain_components()?;
    cross_targets()?;
    bpf_linker()?;
    cargo_fuzz()?;
    oidc_provider()?;
    Ok(())
}

/// Where `oidc_provider` installs; the portal's OIDC test reads it from
/// KEYHOLE_OIDC_PROVIDER_DIR.
pub fn oidc_provider_dir() -> anyhow::Result<PathBuf> {
    Ok(tools_cache_dir()
        .context("no HOME or XDG_CACHE_HOME for the tools cache")?
        .join("oidc-provider"))
}

/// panva's oidc-provider from npm, installed once per machine.
fn oidc_provider() -> anyhow::Result<()> {
    let dir = oidc_provider_dir()?;
    let (_, version) = OIDC_PROVIDER.split_once('@').unwrap_or_default();
    let manifest = dir.join("node_modules/oidc-provider/package.json");
    let installed = fs::read_to_string(&manifest)
        .ok()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|m| m["version"].as_str().map(str::to_owned));
    if installed.as_deref() == Some(version) {
        return Ok(());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        // Debian splits npm out of nodejs; other node builds include it.
        output(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends", "npm"]),
        )?;
    }
    eprintln!("setup: installing {OIDC_PROVIDER} into {}", dir.display());
    fs::create_dir_all(&dir)?;
    output(Command::new("npm").args([
        "install",
        "--no-audit",
        "--no-fund",
        "--prefix",
        &dir.to_string_lossy(),
        OIDC_PROVIDER,
    ]))?;
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn packages() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for p in PACKAGES {
        let status = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .context("dpkg-query not found: this set-up expects Debian")?;
        if !String::from_utf8_lossy(&status.stdout).contains("install ok installed") {
            missing.push(*p);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}; run `cargo xtask setup` as root \
             (or `apt-get install {}`)",
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    // Quiet unless it fails (output() puts the whole log in the error).
    output(Command::new("apt-get").args(["update", "-qq"]))?;
    output(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(())
}

fn toolchain_components() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        TOOLCHAIN,
    ]))?;
    let missing: Vec<&str> = ["rust-src", "rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: adding toolchain components: {}", missing.join(" "));
    run_cmd(
        Command::new("rustup")
            .args(["component", "add", "--toolchain", TOOLCHAIN])
            .args(&missing),
    )
}

fn cross_targets() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        TOOLCHAIN,
    ]))?;
    let missing: Vec<&str> = CROSS_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: adding targets: {}", missing.join(" "));
    run_cmd(
        Command::new("rustup")
            .args(["target", "add", "--toolchain", TOOLCHAIN])
            .args(&missing),
    )
}

fn sysroot() -> anyhow::Result<PathBuf> {
    let s = output(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"]))?;
    Ok(PathBuf::from(s.trim()))
}

/// The toolchain's libLLVM file, e.g. `libLLVM.so.22.1-rust-1.95.0-stable`.
fn llvm_so(sysroot: &Path) -> anyhow::Result<String> {
    let lib = sysroot.join("lib");
    for e in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.") && name.contains("-rust-") {
            return Ok(name);
        }
    }
    bail!("no libLLVM.so.*-rust-* in {}", lib.display())
}

fn bpf_linker() -> anyhow::Result<PathBuf> {
    let sysroot = sysroot()?;
    let so = llvm_so(&sysroot)?;
    let cache = tools_cache_dir().context("no cache dir: set HOME or KEYHOLE_TOOLS_DIR")?;
    let root = bpf_linker_root(&cache, &so);
    let bin = root.join("bin/bpf-linker");
    if bin.is_file()
        && Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(bin);
    }

    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {so} \
         (about 4 minutes, once per machine and toolchain)"
    );
    // bpf-linker's build links libLLVM from $LLVM_PREFIX/lib; point it at
    // the toolchain's copy (the binary's RUNPATH keeps pointing there).
    let prefix = root.join("llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib)?;
    for link in ["libLLVM.so", so.as_str()] {
        let p = lib.join(link);
        let _ = fs::remove_file(&p);
        symlink(sysroot.join("lib").join(&so), &p)
            .with_context(|| format!("linking {}", p.display()))?;
    }
    let log = root.join("build.log");
    let out = Command::new("rustup")
        .args(["run", TOOLCHAIN, "cargo", "install", "bpf-linker"])
        .args(["--version", BPF_LINKER_VERSION, "--locked", "--force"])
        .args(["--no-default-features", "--features", "llvm-22"])
        .arg("--root")
        .arg(&root)
        .arg("--target-dir")
        .arg(root.join("build"))
        .env("LLVM_PREFIX", &prefix)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .context("starting cargo install bpf-linker")?;
    fs::write(
        &log,
        [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
    )?;
    if !out.status.success() {
        bail!("building bpf-linker failed; see {}", log.display());
    }
    let _ = fs::remove_dir_all(root.join("build"));
    Ok(bin)
}

/// cargo-fuzz (runs on the machine's nightly toolchain).
fn cargo_fuzz() -> anyhow::Result<()> {
    if Command::new("cargo-fuzz")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz");
    output(
        Command::new("rustup")
            .args([
                "run",
                TOOLCHAIN,
                "cargo",
                "install",
                "cargo-fuzz",
                "--locked",
            ])
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    Ok(())
}
