//! The VM's kernel: Debian's linux-image-6.1 package (it ships
//! wireguard.ko), fetched once with apt and cached.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd::output;

/// Modules the scenarios need, in load order: WireGuard; then, for the
/// gateway binary (`kernel-ice`), TUN and veth, the clsact qdisc and
/// cls_bpf (6.1 has no TCX: TC programs attach as netlink filters), and
/// nf_tables with NAT for the gateway's `keyhole_gw` table.
pub const MODULES: &[&str] = &[
    "libchacha",
    "chacha-x86_64",
    "poly1305-x86_64",
    "libchacha20poly1305",
    "libcurve25519-generic",
    "curve25519-x86_64",
    "udp_tunnel",
    "ip6_udp_tunnel",
    "wireguard",
    "tun",
    "veth",
    "sch_ingress",
    "cls_bpf",
    "crc32c_generic",
    "libcrc32c",
    "nfnetlink",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_chain_nat",
    "nft_masq",
    "nft_nat",
];

pub struct Kernel {
    /// Decompressed ELF, booted through its PVH entry (faster than bzImage).
    pub vmlinux: PathBuf,
    /// `<name>.ko` files in load order.
    pub modules: Vec<PathBuf>,
}

/// The concrete image package the `linux-image-amd64` metapackage points at.
fn image_package() -> anyhow::Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-6.1"))
        .map(str::to_owned)
        .context("apt-cache shows no linux-image-6.1 package (run apt-get update?)")
}

pub fn fetch(cache: &Path) -> anyhow::Result<Kernel> {
    let pkg = image_package()?;
    let dir = cache.join(&pkg);
    let vmlinux = dir.join("vmlinux");
    let modules: Vec<PathBuf> = MODULES
        .iter()
        .map(|m| dir.join("modules").join(format!("{m}.ko")))
        .collect();
    if vmlinux.is_file() && modules.iter().all(|m| m.is_file()) {
        return Ok(Kernel { vmlinux, modules });
    }

    eprintln!("vm: fetching {pkg}");
    let dl = dir.join("download");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    output(
        Command::new("apt-get")
            .args(["download", "-qq", &pkg])
            .current_dir(&dl),
    )?;
    let deb = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let root = dl.join("root");
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;

    let vmlinuz = fs::read_dir(root.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no /boot/vmlinuz-* in the package")?;
    fs::write(&vmlinux, decompress_vmlinuz(&fs::read(&vmlinuz)?)?)?;

    let mod_out = dir.join("modules");
    fs::create_dir_all(&mod_out)?;
    let found = find_files(&root.join("lib/modules"))?;
    for m in MODULES {
        let plain = format!("{m}.ko");
        let xz = format!("{m}.ko.xz");
        let src = found
            .iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n == plain.as_str() || n == xz.as_str())
            })
            .with_context(|| format!("module {m} not in {pkg}"))?;
        let bytes = fs::read(src)?;
        let bytes = if src.extension().is_some_and(|e| e == "xz") {
            unxz(&bytes)?
        } else {
            bytes
        };
        fs::write(mod_out.join(&plain), bytes)?;
    }
    fs::remove_dir_all(&dl)?;
    Ok(Kernel { vmlinux, modules })
}

fn find_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// bzImage = setup code + an xz stream of the ELF kernel; find the stream
/// by its magic and decompress the first one.
fn decompress_vmlinuz(bz: &[u8]) -> anyhow::Result<Vec<u8>> {
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\0";
    let Some(at) = bz.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC) else {
        bail!("vmlinuz holds no xz stream");
    };
    let elf = unxz(&bz[at..])?;
    if !elf.starts_with(b"\x7fELF") {
        bail!("decompressed kernel is not an ELF file");
    }
    Ok(elf)
}

fn unxz(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting xz")?;
    let mut stdin = child.stdin.take().context("xz stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        // xz stops reading after the first stream; a broken pipe is fine.
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if out.stdout.is_empty() {
        bail!("xz failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}
