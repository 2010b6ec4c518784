//! OIDC sign-in in a real headless Chromium against a real OpenID Connect
//! provider: panva's `oidc-provider` from npm (installed by `cargo xtask
//! setup` into ~/.cache/keyhole/oidc-provider), run by node with its
//! development login form (tests/oidc/provider.mjs).

mod web_support;

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use keyhole_portal::{
    policy::{ActorId, SignInMethod},
    web::{OidcConfig, WebConfig},
};
use web_support::{Browser, Portal, TempDir, with_browser};

const CLIENT_ID: &str = "keyhole-portal";
const CLIENT_SECRET: &str = "test-client-secret";

fn provider_dir() -> PathBuf {
    let dir = std::env::var_os("KEYHOLE_OIDC_PROVIDER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/keyhole/oidc-provider")
        });
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed in {}; run `cargo xtask setup`",
        dir.display()
    );
    dir
}

/// The provider process; killed on drop.
struct Provider {
    child: Child,
    issuer: String,
    _dir: TempDir,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start_provider(port: u16, redirect_uri: &str, groups: &str) -> Provider {
    // ESM resolves packages next to the script: run a copy of it in a
    // scratch dir that links the installed node_modules.
    let dir = web_support::temp_dir("oidc");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/provider.mjs"),
        dir.0.join("provider.mjs"),
    )
    .expect("copy provider.mjs");
    std::os::unix::fs::symlink(
        provider_dir().join("node_modules"),
        dir.0.join("node_modules"),
    )
    .expect("link node_modules");
    let mut child = Command::new("node")
        .arg(dir.0.join("provider.mjs"))
        .env("PORT", port.to_string())
        .env("REDIRECT_URI", redirect_uri)
        .env("CLIENT_ID", CLIENT_ID)
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("GROUPS", groups)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let issuer = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("ready ") => break l["ready ".len()..].to_owned(),
            Some(Ok(_)) => continue,
            _ => panic!("oidc-provider exited before it was ready"),
        }
    };
    // Keep draining: node dies of EPIPE if it writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Provider {
        child,
        issuer,
        _dir: dir,
    }
}

/// Signs in at the provider's development form as `login`.
async fn provider_login(b: &Browser, login: &str) -> anyhow::Result<()> {
    b.wait_js(
        "return !!document.querySelector('input[name=login]')",
        Duration::from_secs(10),
    )
    .await?;
    b.fill("input[name=login]", login).await?;
    b.fill("input[name=password]", "anything").await?;
    b.submit("button[type=submit]").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_sign_in_maps_groups_and_admits_only_admins() {
    let port = free_port();
    let portal = Portal::start(WebConfig {
        oidc: Some(OidcConfig {
            issuer: format!("http://127.0.0.1:{port}"),
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            groups_claim: "groups".into(),
            admin_group: Some("keyhole-admins".into()),
            display_name: "Test IdP".into(),
        }),
        ..WebConfig::default()
    })
    .await
    .unwrap();
    let store = portal.state.store.clone();
    let now = chrono::Utc::now();
    let eng = store.create_group("engineering", now).await.unwrap();
    let ops = store.create_group("ops", now).await.unwrap();
    let provider = start_provider(
        port,
        &portal.url("/sign-in/oidc/callback"),
        r#"{"carol":["keyhole-admins","engineering","not-in-keyhole"],"bob":["ops"]}"#,
    );
    assert_eq!(provider.issuer, format!("http://127.0.0.1:{port}"));

    // An admin by group: signed in, back where they started, groups synced.
    with_browser("oidc_admin", async |b: &Browser| {
        b.goto(&portal.url("/resources")).await?;
        anyhow::ensure!(b.path().await? == "/sign-in", "not sent to sign-in");
        anyhow::ensure!(b.text("#sso").await? == "Sign in with Test IdP");
        b.submit("#sso").await?;
        provider_login(b, "carol").await?;
        b.wait_js(
            "return location.pathname === '/resources'",
            Duration::from_secs(15),
        )
        .await?;
        let carol = store
            .user_by_email("carol@example.com")
            .await?
            .ok_or_else(|| anyhow::anyhow!("carol not created"))?;
        anyhow::ensure!(carol.is_admin, "admin group not mapped");
        let cookies = b.client.get_all_cookies().await?;
        let secret = cookies
            .iter()
            .find(|c| c.name() == "kh_session")
            .map(|c| c.value().to_owned())
            .ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
        let session = store
            .web_session(&secret, chrono::Utc::now())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no session"))?;
        anyhow::ensure!(session.sign_in_method == SignInMethod::Oidc);
        anyhow::ensure!(
            store.list_members(eng.id, 10, 0).await? == vec![ActorId::User(carol.id)],
            "carol not in engineering"
        );
        anyhow::ensure!(store.list_members(ops.id, 10, 0).await?.is_empty());
        Ok(())
    })
    .await;

    // Not an admin: groups still synced (for the client sign-in), but the
    // console stays closed.
    with_browser("oidc_non_admin", async |b: &Browser| {
        b.goto(&portal.url("/sign-in")).await?;
        b.submit("#sso").await?;
        provider_login(b, "bob").await?;
        b.wait_js(
            "return !!document.querySelector('#sign-in-error')",
            Duration::from_secs(15),
        )
        .await?;
        let msg = b.text("#sign-in-error").await?;
        anyhow::ensure!(msg.contains("only Keyhole administrators"), "{msg}");
        let bob = store
            .user_by_email("bob@example.com")
            .await?
            .ok_or_else(|| anyhow::anyhow!("bob not created"))?;
        anyhow::ensure!(!bob.is_admin);
        anyhow::ensure!(
            store.list_members(ops.id, 10, 0).await? == vec![ActorId::User(bob.id)],
            "bob not in ops"
        );
        // The console is still closed to bob.
        b.goto(&portal.url("/resources")).await?;
        anyhow::ensure!(b.path().await? == "/sign-in");

        // A callback this browser did not start is refused, and says so.
        b.goto(&portal.url("/sign-in/oidc/callback?code=forged&state=forged"))
            .await?;
        let msg = b.text("#sign-in-error").await?;
        anyhow::ensure!(msg.contains("not started in this browser"), "{msg}");
        Ok(())
    })
    .await;

    // bob may sign in with SSO on the way to approve a device (`keyhole
    // login`); the device's token then carries the oidc sign-in method.
    let request = store
        .start_device_authorization(
            keyhole_proto::PublicKey::from_bytes([8; 32]),
            "bob-laptop",
            chrono::TimeDelta::minutes(10),
            5,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let link = portal.url(&format!("/device?code={}", request.user_code));
    with_browser("oidc_device", async |b: &Browser| {
        b.goto(&link).await?;
        anyhow::ensure!(b.path().await? == "/sign-in", "not sent to sign-in");
        b.submit("#sso").await?;
        provider_login(b, "bob").await?;
        b.wait_js(
            "return location.pathname === '/device'",
            Duration::from_secs(15),
        )
        .await?;
        anyhow::ensure!(b.text("#device-name").await? == "bob-laptop");
        anyhow::ensure!(b.text("#who").await?.contains("single sign-on"));
        b.submit("#approve").await?;
        let result = b.text("#device-result").await?;
        anyhow::ensure!(result.starts_with("Approved"), "{result}");
        Ok(())
    })
    .await;
    let polled = store
        .poll_device_authorization(
            &request.device_code,
            chrono::TimeDelta::days(1),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let keyhole_portal::store::DevicePoll::Approved { token, .. } = polled else {
        panic!("approved through SSO, got {polled:?}");
    };
    let info = store
        .verify_token(&token.secret, chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.sign_in_method, Some(SignInMethod::Oidc));
}
