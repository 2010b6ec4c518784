//! `keyhole login` / `keyhole logout`: the IO shell of the device flow
//! (RFC 8628) against the portal's `/api/v1/device/*`, and where `up`
//! finds its credentials.
//!
//! The device key is created (or read) here and only its public half is
//! sent: the portal binds the issued token to it, so the token is useless
//! on another device. The user approves in a browser, on this machine or
//! any other; opening one is only tried when a display is set.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::json;

use crate::device_flow::{Answer, Poller, Step, classify};
use crate::keys;
use crate::session_file::{self, Kind, Session};

pub struct LoginArgs {
    pub portal_url: Option<String>,
    /// A service-account token: stored as is, no browser.
    pub token: Option<String>,
    pub name: Option<String>,
    pub state_dir: PathBuf,
    pub open_browser: bool,
}

#[derive(Debug, Deserialize)]
struct Authorization {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: u64,
}

const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// `http(s)://host[:port]` from what the user gave (also `ws(s)://`).
pub fn http_base(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let base = if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else {
        bail!("portal URL must start with http://, https://, ws:// or wss://");
    };
    Ok(base)
}

/// The public half of the device key, as the portal expects it.
pub fn device_public_key(state_dir: &Path) -> Result<String> {
    let secret = keys::load_or_create(state_dir)?;
    let secret = x25519_dalek::StaticSecret::from(*secret);
    Ok(STANDARD.encode(x25519_dalek::PublicKey::from(&secret).as_bytes()))
}

pub fn default_device_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "client".into())
}

/// The portal URL and token `up` uses: given ones win, else the stored
/// session's.
pub fn credentials(
    state_dir: &Path,
    portal_url: Option<String>,
    token: Option<String>,
) -> Result<(String, String)> {
    let stored = session_file::read(state_dir)?;
    let portal_url = match (portal_url, &stored) {
        (Some(u), _) => u,
        (None, Some(s)) => s.portal_url.clone(),
        (None, None) => {
            bail!(
                "not signed in: run `keyhole login --portal-url URL` (or give --portal-url and --token)"
            )
        }
    };
    let token = match (token, stored) {
        (Some(t), _) => t,
        (None, Some(s)) => {
            if http_base(&s.portal_url)? != http_base(&portal_url)? {
                bail!(
                    "signed in to {}, not {portal_url}: run `keyhole login --portal-url {portal_url}`",
                    s.portal_url
                );
            }
            s.token
        }
        (None, None) => bail!("not signed in: run `keyhole login` (or give --token)"),
    };
    Ok((portal_url, token))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn http() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .user_agent(concat!("keyhole/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

pub fn login(args: LoginArgs) -> Result<()> {
    // A damaged file is replaced; only a readable one can be ended.
    let previous = session_file::read(&args.state_dir).unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), "the stored session is unreadable; replacing it");
        None
    });
    let portal_url = match (args.portal_url, &previous) {
        (Some(u), _) => u,
        (None, Some(s)) => s.portal_url.clone(),
        (None, None) => bail!("give the portal's URL: keyhole login --portal-url https://…"),
    };
    let base = http_base(&portal_url)?;
    if let Some(token) = args.token {
        // The device key still lives here; the token is the account's.
        keys::load_or_create(&args.state_dir)?;
        session_file::write(
            &args.state_dir,
            &Session {
                portal_url: base,
                token,
                kind: Kind::ServiceAccount,
                public_key: None,
            },
        )?;
        println!(
            "Stored the service-account token in {}. Run `keyhole up`.",
            session_file::path(&args.state_dir).display()
        );
        end_previous(previous);
        return Ok(());
    }
    let public_key = device_public_key(&args.state_dir)?;
    let name = args.name.unwrap_or_else(default_device_name);
    let token = runtime()?.block_on(device_flow(&base, &public_key, &name, args.open_browser))?;
    session_file::write(
        &args.state_dir,
        &Session {
            portal_url: base.clone(),
            token,
            kind: Kind::Device,
            public_key: Some(public_key),
        },
    )?;
    println!("Signed in to {base} as device \"{name}\". Run `keyhole up`.");
    end_previous(previous);
    Ok(())
}

/// The replaced device sign-in no longer needs to work: end it at its
/// portal, best effort (an admin can still revoke it).
fn end_previous(previous: Option<Session>) {
    let Some(old) = previous.filter(|s| s.kind == Kind::Device) else {
        return;
    };
    let ended = runtime().and_then(|rt| rt.block_on(revoke_at_portal(&old)));
    match ended {
        Ok(()) => println!("Ended the previous sign-in at {}.", old.portal_url),
        Err(e) => tracing::warn!(
            portal = %old.portal_url,
            error = %format!("{e:#}"),
            "could not end the previous sign-in"
        ),
    }
}

/// `POST /api/v1/device/revoke` with the session's own token.
async fn revoke_at_portal(session: &Session) -> Result<()> {
    let base = http_base(&session.portal_url)?;
    let r = http()?
        .post(format!("{base}/api/v1/device/revoke"))
        .json(&json!({ "token": session.token }))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "HTTP {}", r.status());
    Ok(())
}

async fn device_flow(base: &str, public_key: &str, name: &str, open: bool) -> Result<String> {
    let client = http()?;
    let r = client
        .post(format!("{base}/api/v1/device/authorize"))
        .json(&json!({ "public_key": public_key, "device_name": name }))
        .send()
        .await
        .with_context(|| format!("reaching the portal at {base}"))?;
    let status = r.status();
    let body = r.text().await.context("reading the portal's answer")?;
    if !status.is_success() {
        bail!("the portal refused to start a sign-in (HTTP {status}): {body}");
    }
    let auth: Authorization =
        serde_json::from_str(&body).context("the portal's answer to authorize")?;
    println!(
        "To sign in this device, open\n\n    {}\n",
        auth.verification_uri
    );
    println!("and enter the code  {}\n", auth.user_code);
    println!("Device \"{name}\", key {public_key}");
    if let Some(complete) = &auth.verification_uri_complete {
        println!("(or open {complete})");
        if open {
            try_open_browser(complete);
        }
    }
    println!("Waiting for approval…");
    let mut poller = Poller::new(Instant::now(), auth.interval, auth.expires_in);
    let mut step = poller.start(Instant::now());
    loop {
        match step {
            Step::Done(token) => return Ok(token),
            Step::Failed(why) => bail!(why),
            Step::PollAt(at) => {
                tokio::time::sleep_until(at.into()).await;
                let answer = poll(&client, base, &auth.device_code).await;
                step = poller.handle(Instant::now(), answer);
            }
        }
    }
}

async fn poll(client: &reqwest::Client, base: &str, device_code: &str) -> Answer {
    let sent = client
        .post(format!("{base}/api/v1/device/token"))
        .json(&json!({
            "device_code": device_code,
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        }))
        .send()
        .await;
    let r = match sent {
        Ok(r) => r,
        Err(e) => return Answer::Transient(format!("portal unreachable: {e}")),
    };
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match r.text().await {
        Ok(body) => classify(status, &body, retry_after.as_deref()),
        Err(e) => Answer::Transient(format!("reading the portal's answer: {e}")),
    }
}

/// Opens `url` in the desktop's browser if there is a desktop. Failing is
/// fine: the URL is printed.
fn try_open_browser(url: &str) {
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if !cfg!(target_os = "linux") || !has_display {
        return;
    }
    let spawned = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reap it in the background; its outcome does not matter.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => tracing::debug!(error = %e, "xdg-open not available"),
    }
}

/// Deletes the stored token; a device token is also revoked at the portal
/// when it can be reached.
pub fn logout(state_dir: &Path) -> Result<()> {
    let Some(session) = session_file::read(state_dir).unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), "the stored session is unreadable; deleting it");
        None
    }) else {
        session_file::remove(state_dir)?;
        println!("not signed in");
        return Ok(());
    };
    if session.kind == Kind::Device {
        let revoked = runtime()?.block_on(revoke_at_portal(&session));
        match revoked {
            Ok(()) => println!("Signed out at {}.", session.portal_url),
            Err(e) => println!(
                "Could not reach {} to revoke the sign-in ({e:#}); an admin can revoke it on the Clients page.",
                session.portal_url
            ),
        }
    }
    session_file::remove(state_dir)?;
    println!("Deleted the stored token.");
    Ok(())
}

/// A refused control-channel connection, with the portal's reason (it
/// answers before the upgrade, e.g. a token bound to another device key).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn connect_error(e: tokio_tungstenite::tungstenite::Error) -> anyhow::Error {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let status = resp.status();
            let reason = resp
                .body()
                .as_deref()
                .map(|b| {
                    String::from_utf8_lossy(&b[..b.len().min(300)])
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            let hint = if matches!(status.as_u16(), 401 | 403) && !reason.contains("keyhole login")
            {
                " (sign in again with `keyhole login`)"
            } else {
                ""
            };
            anyhow::anyhow!("the portal refused the connection: HTTP {status}: {reason}{hint}")
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_says_why() {
        use tokio_tungstenite::tungstenite::{Error, http::Response};
        let resp = Response::builder()
            .status(403)
            .body(Some(b"this sign-in belongs to another device key".to_vec()))
            .unwrap();
        let m = format!("{}", connect_error(Error::Http(Box::new(resp))));
        assert!(m.contains("HTTP 403"), "{m}");
        assert!(m.contains("another device key"), "{m}");
        assert!(m.contains("keyhole login"), "{m}");
        let resp = Response::builder()
            .status(403)
            .body(Some(b"run `keyhole login` on this device".to_vec()))
            .unwrap();
        let m = format!("{}", connect_error(Error::Http(Box::new(resp))));
        assert_eq!(m.matches("keyhole login").count(), 1, "{m}");
    }

    #[test]
    fn portal_urls_become_http_bases() {
        assert_eq!(
            http_base("https://p.example/").unwrap(),
            "https://p.example"
        );
        assert_eq!(
            http_base("ws://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(http_base("wss://p.example").unwrap(), "https://p.example");
        assert!(http_base("p.example").is_err());
    }

    #[test]
    fn credentials_come_from_flags_or_the_stored_session() {
        let dir = std::env::temp_dir().join(format!("keyhole-creds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(credentials(&dir, None, None).is_err());
        assert_eq!(
            credentials(&dir, Some("http://a".into()), Some("kh_t".into())).unwrap(),
            ("http://a".to_owned(), "kh_t".to_owned())
        );
        session_file::write(
            &dir,
            &Session {
                portal_url: "http://a:1".into(),
                token: "kh_stored".into(),
                kind: Kind::Device,
                public_key: None,
            },
        )
        .unwrap();
        assert_eq!(
            credentials(&dir, None, None).unwrap(),
            ("http://a:1".to_owned(), "kh_stored".to_owned())
        );
        assert_eq!(
            credentials(&dir, Some("ws://a:1/".into()), None).unwrap().1,
            "kh_stored"
        );
        let other = credentials(&dir, Some("http://b".into()), None).unwrap_err();
        assert!(format!("{other}").contains("signed in to http://a:1"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_public_key_matches_the_stored_private_key() {
        let dir = std::env::temp_dir().join(format!("keyhole-pub-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = device_public_key(&dir).unwrap();
        assert_eq!(a, device_public_key(&dir).unwrap());
        // RFC 7748 test vector: this private key has this public key.
        let private: [u8; 32] = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ];
        std::fs::write(dir.join(keys::KEY_FILE), STANDARD.encode(private)).unwrap();
        let public = STANDARD.decode(device_public_key(&dir).unwrap()).unwrap();
        assert_eq!(
            public[..4],
            [0x85, 0x20, 0xf0, 0x09],
            "RFC 7748 section 6.1 Alice's public key"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
