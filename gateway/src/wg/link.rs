//! The tunnel link over rtnetlink: create a WireGuard link, give it
//! addresses, MTU and routes, bring it up, delete it.
//!
//! Only netlink-packet-route types of rtnetlink's version appear here; the
//! WireGuard configuration itself lives in `kernel.rs` (wireguard-control,
//! an older netlink-packet-route).

use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::TryStreamExt as _;
use ipnet::IpNet;
use rtnetlink::{
    Handle, LinkUnspec, LinkWireguard, RouteMessageBuilder,
    packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
};

use super::WgError;

/// Opens an rtnetlink connection in the current network namespace; its
/// socket task runs on the current tokio runtime.
pub fn connect() -> Result<Handle, WgError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| WgError::Io {
        what: "opening an rtnetlink socket".into(),
        source,
    })?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Linux's IFNAMSIZ less the NUL.
const MAX_NAME: usize = 15;

pub(crate) fn check_name(name: &str) -> Result<(), WgError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(WgError::InvalidName(name.into()))
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// A link's index and kind, if a link of that name exists.
pub async fn find(h: &Handle, name: &str) -> Result<Option<(u32, Option<InfoKind>)>, WgError> {
    let mut links = h.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some((msg.header.index, kind_of(&msg)))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(WgError::rtnl(format!("looking up link {name}"))(e)),
    }
}

fn kind_of(msg: &LinkMessage) -> Option<InfoKind> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

/// Tries to create a WireGuard link: `Ok(Ok(()))` if the kernel can (the
/// scratch link is deleted again), `Ok(Err(why))` if it has no WireGuard,
/// `Err` for anything else (no permission, no netlink).
pub async fn probe_kernel_wireguard(h: &Handle) -> Result<Result<(), String>, WgError> {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "khprobe{}",
        (std::process::id().wrapping_mul(31) + N.fetch_add(1, Ordering::Relaxed)) % 100_000_000
    );
    match h
        .link()
        .add(LinkWireguard::new(&name).build())
        .execute()
        .await
    {
        Ok(()) => {
            if let Some((index, _)) = find(h, &name).await? {
                delete(h, index, &name).await?;
            }
            Ok(Ok(()))
        }
        // rtnl_newlink answers EOPNOTSUPP for an unknown link kind once
        // loading the module failed.
        Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => Ok(Err(e.to_string())),
        Err(e) => Err(WgError::rtnl(format!("creating probe link {name}"))(e)),
    }
}

/// Creates the WireGuard link `name`, replacing a WireGuard link of that
/// name left by an earlier run (so no stale peer, key or address survives).
/// Returns its index.
pub async fn create_wireguard(h: &Handle, name: &str) -> Result<u32, WgError> {
    check_name(name)?;
    match find(h, name).await? {
        Some((index, Some(InfoKind::Wireguard))) => {
            tracing::warn!(interface = name, "replacing a stale WireGuard link");
            delete(h, index, name).await?;
        }
        Some(_) => return Err(WgError::NotWireGuard(name.into())),
        None => {}
    }
    if let Err(e) = h
        .link()
        .add(LinkWireguard::new(name).build())
        .execute()
        .await
    {
        return Err(if errno(&e) == Some(libc::EOPNOTSUPP) {
            WgError::KernelUnsupported(e.to_string())
        } else {
            WgError::rtnl(format!("creating WireGuard link {name}"))(e)
        });
    }
    match find(h, name).await? {
        Some((index, _)) => Ok(index),
        None => Err(WgError::Io {
            what: format!("link {name} vanished right after creation"),
            source: std::io::ErrorKind::NotFound.into(),
        }),
    }
}

/// Addresses, MTU, up, then routes (routes need the link up).
pub async fn configure(
    h: &Handle,
    index: u32,
    name: &str,
    addresses: &[IpNet],
    mtu: u32,
    routes: &[IpNet],
) -> Result<(), WgError> {
    for a in addresses {
        h.address()
            .add(index, a.addr(), a.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(WgError::rtnl(format!("adding address {a} to {name}")))?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(WgError::rtnl(format!("setting {name} up with MTU {mtu}")))?;
    for r in routes {
        let r = r.trunc();
        let msg = RouteMessageBuilder::<std::net::IpAddr>::new()
            .destination_prefix(r.addr(), r.prefix_len())
            .map_err(|e| WgError::Io {
                what: format!("route {r}: {e}"),
                source: std::io::ErrorKind::InvalidInput.into(),
            })?
            .output_interface(index)
            .build();
        h.route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(WgError::rtnl(format!("adding route {r} dev {name}")))?;
    }
    Ok(())
}

pub async fn delete(h: &Handle, index: u32, name: &str) -> Result<(), WgError> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(WgError::rtnl(format!("deleting link {name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::{BackendChoice, BackendKind, InterfaceConfig, KernelWg, PrivateKey, resolve};

    /// Runs `f` on a thread in a fresh, private network namespace (root).
    fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: unshare only changes this thread's namespace.
                let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "unshare(CLONE_NEWNET) needs root");
                f()
            })
            .join()
            .expect("netns thread")
        })
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn names_the_kernel_would_refuse_are_rejected() {
        for bad in ["", "0123456789abcdef", "wg 0", "wg/0", "wg\u{e9}"] {
            assert!(
                matches!(check_name(bad), Err(WgError::InvalidName(_))),
                "{bad:?}"
            );
        }
        for good in ["wg0", "keyhole0", "a.b-c_d", "0123456789abcde"] {
            check_name(good).unwrap();
        }
    }

    /// The probe agrees with iproute2 about this kernel, and the choices
    /// resolve accordingly: on a kernel without WireGuard (the build
    /// machines) `auto` falls back and `kernel` is a clear error; with it
    /// (the VM) both give the kernel backend.
    #[test]
    fn probe_matches_iproute2_and_choices_resolve() {
        in_new_netns(|| {
            let ip_can = std::process::Command::new("ip")
                .args(["link", "add", "khiptest", "type", "wireguard"])
                .stderr(std::process::Stdio::null())
                .status()
                .expect("run ip")
                .success();
            block_on(async {
                let h = connect().unwrap();
                let probe = probe_kernel_wireguard(&h).await.unwrap();
                assert_eq!(probe.is_ok(), ip_can, "probe {probe:?} vs ip link add");
                // The probe leaves no link behind.
                let mut links = h.link().get().execute();
                while let Some(l) = links.try_next().await.unwrap() {
                    let name = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    });
                    assert!(!name.unwrap_or_default().starts_with("khprobe"));
                }
                let auto = resolve(BackendChoice::Auto, &h).await.unwrap();
                let kernel = resolve(BackendChoice::Kernel, &h).await;
                let user = resolve(BackendChoice::Userspace, &h).await.unwrap();
                assert_eq!(user, BackendKind::Userspace);
                let cfg = InterfaceConfig {
                    name: "kh-test0".into(),
                    private_key: PrivateKey::generate(),
                    listen_port: 0,
                    addresses: vec!["100.64.0.1/32".parse().unwrap()],
                    routes: vec![],
                    mtu: None,
                };
                if ip_can {
                    assert_eq!(auto, BackendKind::Kernel);
                    assert_eq!(kernel.unwrap(), BackendKind::Kernel);
                    let mut wg = KernelWg::create(&h, &cfg).await.unwrap();
                    assert!(find(&h, "kh-test0").await.unwrap().is_some());
                    crate::wg::WgBackend::teardown(&mut wg).unwrap();
                    assert!(find(&h, "kh-test0").await.unwrap().is_none());
                } else {
                    assert_eq!(auto, BackendKind::Userspace);
                    assert!(
                        matches!(kernel, Err(WgError::KernelUnsupported(_))),
                        "{kernel:?}"
                    );
                    let err = KernelWg::create(&h, &cfg).await.unwrap_err();
                    assert!(matches!(err, WgError::KernelUnsupported(_)), "{err:?}");
                    assert!(find(&h, "kh-test0").await.unwrap().is_none());
                }
            })
        })
    }

    #[test]
    fn a_foreign_link_of_our_name_is_left_alone() {
        in_new_netns(|| {
            block_on(async {
                let h = connect().unwrap();
                // `lo` exists in every namespace and is not WireGuard.
                let err = create_wireguard(&h, "lo").await.unwrap_err();
                assert!(matches!(err, WgError::NotWireGuard(_)), "{err:?}");
                assert!(find(&h, "lo").await.unwrap().is_some());
            })
        })
    }
}
