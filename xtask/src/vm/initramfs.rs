//! Builds the VM's initramfs: busybox, iproute2's `ip`, `wg` and `nft` with their
//! shared libraries (busybox's `ip` knows neither wireguard links nor
//! netns), the WireGuard modules, an /init that loads them and runs the
//! scenario script, and any extra files (static test binaries).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::{cpio::Cpio, kernel::Kernel};
use crate::cmd::output;

/// A file placed in the image.
pub struct Extra {
    pub path: String,
    pub data: Vec<u8>,
    pub executable: bool,
}

/// Printed by /init; the host looks for it on the serial console.
pub const RESULT_TAG: &str = "KEYHOLE-VM-RESULT:";

fn init_script(modules: &[String]) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 077
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# udev makes these on a full system; nft reads `-f -` through /dev/stdin.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns
for m in {modules}; do
  insmod /lib/modules/$m.ko || echo "insmod $m failed"
done
/usr/sbin/ip link set lo up
echo "vm: kernel $(uname -r), running scenario"
sh -e /scenario.sh
rc=$?
if [ $rc -eq 0 ]; then echo "{RESULT_TAG} PASS"; else echo "{RESULT_TAG} FAIL (exit $rc)"; fi
reboot -f
"#,
        modules = modules.join(" ")
    )
}

/// Shared libraries (and the loader) an ELF needs, per ldd.
fn shared_libs(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = output(Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim().split(' ').next().unwrap_or(""),
            None => line.trim().split(' ').next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn which(bin: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{bin} not found (cargo xtask setup installs it)")
}

/// A dynamically linked binary of the build host (`name`, found in the
/// usual directories) placed at `dest`, with its shared libraries at their
/// host paths.
pub fn host_binary(name: &str, dest: &str) -> anyhow::Result<Vec<Extra>> {
    let bin = which(name)?;
    let mut extras = Vec::new();
    for lib in shared_libs(&bin)? {
        let data = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        extras.push(Extra {
            path: lib.to_string_lossy().into_owned(),
            data,
            executable: true,
        });
    }
    extras.push(Extra {
        path: dest.into(),
        data: fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?,
        executable: true,
    });
    Ok(extras)
}

pub fn build(kernel: &Kernel, scenario: &str, extras: &[Extra], out: &Path) -> anyhow::Result<()> {
    let mut files: Vec<(String, Vec<u8>, bool)> = Vec::new();
    files.push((
        "/bin/busybox".into(),
        fs::read(which("busybox")?).context("reading busybox")?,
        true,
    ));
    // nft: the gateway binary's NAT table goes through `nft -j -f -`.
    for (name, dest) in [
        ("ip", "/usr/sbin/ip"),
        ("wg", "/usr/bin/wg"),
        ("nft", "/usr/sbin/nft"),
    ] {
        for e in host_binary(name, dest)? {
            files.push((e.path, e.data, e.executable));
        }
    }
    let mut names = Vec::new();
    for m in &kernel.modules {
        let name = m
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        files.push((format!("/lib/modules/{name}.ko"), fs::read(m)?, false));
        names.push(name);
    }
    files.push(("/init".into(), init_script(&names).into_bytes(), true));
    // busybox-static's sh prefers its own applets over PATH, and its `ip`
    // lacks what the scenarios need.
    let scenario = format!("ip() {{ /usr/sbin/ip \"$@\"; }}\n{scenario}");
    files.push(("/scenario.sh".into(), scenario.into_bytes(), true));
    for e in extras {
        files.push((e.path.clone(), e.data.clone(), e.executable));
    }

    // Parents before children: the kernel's unpacker does not create them.
    let mut dirs: BTreeSet<String> = ["/proc", "/sys", "/dev", "/tmp", "/run", "/bin"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut seen = BTreeSet::new();
    for (path, _, _) in &files {
        let mut p = Path::new(path).parent();
        while let Some(d) = p {
            if d != Path::new("/") {
                dirs.insert(d.to_string_lossy().into_owned());
            }
            p = d.parent();
        }
    }
    let mut cpio = Cpio::new(std::io::BufWriter::new(fs::File::create(out)?));
    for d in &dirs {
        cpio.dir(d)?;
    }
    // /bin/sh before busybox --install runs, for #! lines of extras.
    cpio.symlink("/bin/sh", "busybox")?;
    for (path, data, exec) in &files {
        if seen.insert(path.clone()) {
            cpio.file(path, data, *exec)?;
        }
    }
    cpio.finish()?;
    Ok(())
}
