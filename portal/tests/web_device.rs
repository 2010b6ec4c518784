//! `keyhole login`'s browser side against the whole portal
//! (`server::start`: API, web UI, control plane) on SQLite: a non-admin
//! user opens the verification link in a real headless Chromium, signs in
//! with a password, checks the device and approves; polling the API then
//! yields the token. The same user gets 403 on admin pages; the admin sees
//! the device sign-in with its owner and method on the clients page and
//! revokes it.

mod web_support;

use std::{net::SocketAddr, time::Duration};

use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use keyhole_portal::{
    api::device::DeviceConfig,
    server::{self, Portal, ServerConfig},
    server_bootstrap::hash_password,
};
use serde_json::{Value, json};
use web_support::{ADMIN_EMAIL, ADMIN_PASSWORD, TempDir, temp_dir, with_browser};

const USER_EMAIL: &str = "ann@example.com";
const USER_PASSWORD: &str = "ann's long password";

async fn start() -> (Portal, TempDir) {
    let dir = temp_dir("device");
    let cfg = ServerConfig {
        admin_email: Some(ADMIN_EMAIL.into()),
        admin_password: Some(ADMIN_PASSWORD.into()),
        device: DeviceConfig {
            poll_interval_secs: 1,
            ..DeviceConfig::default()
        },
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.0.clone())
    };
    let portal = server::start(cfg, std::future::pending()).await.unwrap();
    let store = &portal.app.store;
    let ann = store
        .create_user(USER_EMAIL, "Ann", false, chrono::Utc::now())
        .await
        .unwrap();
    store
        .set_password_hash(&ann, &hash_password(USER_PASSWORD).unwrap())
        .await
        .unwrap();
    (portal, dir)
}

struct Reply {
    status: u16,
    location: Option<String>,
    cookies: Vec<String>,
    body: String,
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    content_type: &str,
    body: String,
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<axum::body::Bytes>>();
    let req = axum::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("cookie", cookie)
        .header("content-type", content_type)
        .body(Full::new(axum::body::Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    Reply {
        status,
        location,
        cookies,
        body,
    }
}

async fn api_post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let r = request(
        addr,
        "POST",
        &format!("/api/v1{path}"),
        "",
        "application/json",
        body.to_string(),
    )
    .await;
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

fn key_b64(n: u8) -> String {
    keyhole_proto::PublicKey::from_bytes([n; 32]).to_base64()
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("csrf field") + 20;
    html[at..].split('"').next().unwrap().to_owned()
}

fn cookie_of(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find_map(|c| {
            let kv = c.split(';').next()?;
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
}

/// Signs in over plain HTTP; returns the session cookie.
async fn http_sign_in(addr: SocketAddr, email: &str, password: &str, next: &str) -> Reply {
    let page = request(addr, "GET", "/sign-in", "", "text/plain", String::new()).await;
    let token = cookie_of(&page.cookies, "kh_signin");
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("_csrf", &token)
        .append_pair("next", next)
        .append_pair("email", email)
        .append_pair("password", password)
        .finish();
    request(
        addr,
        "POST",
        "/sign-in",
        &format!("kh_signin={token}"),
        "application/x-www-form-urlencoded",
        form,
    )
    .await
}

/// Over HTTP: a non-admin signs in only on the way to /device, and their
/// session gets 403 on admin pages and the admin API stays closed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sign_in_for_devices_only() {
    let (portal, _dir) = start().await;
    let addr = portal.addr;
    // Straight to the admin console: refused.
    let r = http_sign_in(addr, USER_EMAIL, USER_PASSWORD, "/sites").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("may not use the admin portal"));
    // On the way to approve a device: signed in.
    let r = http_sign_in(addr, USER_EMAIL, USER_PASSWORD, "/device?code=BCDF-GHJK").await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/device?code=BCDF-GHJK"));
    let cookie = format!("kh_session={}", cookie_of(&r.cookies, "kh_session"));
    for page in [
        "/sites",
        "/users",
        "/clients",
        "/gateways",
        "/policies",
        "/flow-log",
    ] {
        let r = request(addr, "GET", page, &cookie, "text/plain", String::new()).await;
        assert_eq!(r.status, 403, "{page}: {}", r.body);
        assert!(r.body.contains("Administrators only"), "{page}");
    }
    // A state-changing admin form with the user's own valid CSRF token is
    // refused too.
    let device = request(addr, "GET", "/device", &cookie, "text/plain", String::new()).await;
    assert_eq!(device.status, 200);
    let csrf = csrf_in(&device.body);
    let r = request(
        addr,
        "POST",
        "/sites",
        &cookie,
        "application/x-www-form-urlencoded",
        format!("_csrf={csrf}&name=evil"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        portal
            .app
            .store
            .list_sites()
            .await
            .unwrap()
            .iter()
            .all(|s| s.name != "evil")
    );
    // An unknown code is an inline error, a wrong CSRF token a refusal.
    let r = request(
        addr,
        "GET",
        "/device?code=ZZZZ-ZZZZ",
        &cookie,
        "text/plain",
        String::new(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("No pending sign-in has this code"));
    let r = request(
        addr,
        "POST",
        "/device",
        &cookie,
        "application/x-www-form-urlencoded",
        "_csrf=forged&code=BCDF-GHJK&decision=approve".into(),
    )
    .await;
    assert_eq!(r.status, 403);
    // Signing out works for users as well.
    let r = request(
        addr,
        "POST",
        "/sign-out",
        &cookie,
        "application/x-www-form-urlencoded",
        format!("_csrf={csrf}"),
    )
    .await;
    assert_eq!(r.status, 303);
    let r = request(addr, "GET", "/device", &cookie, "text/plain", String::new()).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location.as_deref(), Some("/sign-in?next=%2Fdevice"));
    portal.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_approves_a_device_in_the_browser_and_the_admin_revokes_it() {
    let (portal, _dir) = start().await;
    let addr = portal.addr;
    let key = key_b64(42);
    let (status, auth) = api_post(
        addr,
        "/device/authorize",
        json!({"public_key": key, "device_name": "ann-laptop"}),
    )
    .await;
    assert_eq!(status, 200, "{auth}");
    let device_code = auth["device_code"].as_str().unwrap().to_owned();
    let user_code = auth["user_code"].as_str().unwrap().to_owned();
    let link = auth["verification_uri_complete"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(link, format!("http://{addr}/device?code={user_code}"));
    let poll = json!({"device_code": device_code});
    let (status, body) = api_post(addr, "/device/token", poll.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );

    with_browser("device_approval", async |b| {
        // The link leads through sign-in back to the device.
        b.goto(&link).await?;
        anyhow::ensure!(b.path().await? == "/sign-in", "sent to sign in");
        anyhow::ensure!(b.text("h1").await? == "Sign in to approve a device");
        b.fill("#email", USER_EMAIL).await?;
        b.fill("#password", USER_PASSWORD).await?;
        b.submit("form[action='/sign-in'] button[type=submit]")
            .await?;
        anyhow::ensure!(b.path().await? == "/device", "back on /device");
        anyhow::ensure!(b.text("#device-name").await? == "ann-laptop");
        anyhow::ensure!(b.text("#device-key").await? == key);
        anyhow::ensure!(b.text("#device-code").await? == user_code);
        anyhow::ensure!(b.text("#who").await?.contains(USER_EMAIL));
        b.shot("device-confirm").await?;
        b.submit("#approve").await?;
        let result = b.text("#device-result").await?;
        anyhow::ensure!(result.starts_with("Approved"), "{result}");

        // The same browser session is no admin's.
        b.goto(&format!("http://{addr}/clients")).await?;
        let h1 = b.text("h1").await?;
        anyhow::ensure!(h1 == "Administrators only", "{h1}");

        // The code typed by hand (lower case, no dash) now says it is used.
        b.goto(&format!("http://{addr}/device")).await?;
        b.fill("#code", &user_code.to_lowercase().replace('-', ""))
            .await?;
        b.submit("#continue").await?;
        let result = b.text("#device-result").await?;
        anyhow::ensure!(result.contains("already approved"), "{result}");
        Ok(())
    })
    .await;

    // Polling now yields the token, once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, tok) = api_post(addr, "/device/token", poll.clone()).await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!(tok["public_key"], key.as_str());
    let token = tok["access_token"].as_str().unwrap().to_owned();
    let info = portal
        .app
        .store
        .verify_token(&token, chrono::Utc::now())
        .await
        .unwrap()
        .expect("live token");
    assert_eq!(
        info.sign_in_method,
        Some(keyhole_portal::policy::SignInMethod::Password)
    );

    // The admin sees the sign-in with owner and method, and revokes it.
    with_browser("device_admin_revoke", async |b| {
        b.sign_in_with(addr, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        b.goto(&format!("http://{addr}/clients")).await?;
        let row = b.text("#sign-ins tbody tr").await?;
        for want in ["ann-laptop", USER_EMAIL, "password", key.as_str()] {
            anyhow::ensure!(row.contains(want), "{want} missing in {row}");
        }
        b.shot("device-sign-ins").await?;
        b.js("window.confirm = () => true; return true").await?;
        b.submit("#sign-ins form[action$='/revoke'] button").await?;
        let empty = b.text("#sign-ins tbody").await?;
        anyhow::ensure!(empty.contains("No device sign-ins"), "{empty}");
        Ok(())
    })
    .await;
    assert!(
        portal
            .app
            .store
            .verify_token(&token, chrono::Utc::now())
            .await
            .unwrap()
            .is_none(),
        "revoked token no longer works"
    );
    portal.abort();
}

trait SignInAt {
    async fn sign_in_with(
        &self,
        addr: SocketAddr,
        email: &str,
        password: &str,
    ) -> anyhow::Result<()>;
}

impl SignInAt for web_support::Browser {
    async fn sign_in_with(
        &self,
        addr: SocketAddr,
        email: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        self.goto(&format!("http://{addr}/sign-in")).await?;
        self.fill("#email", email).await?;
        self.fill("#password", password).await?;
        self.submit("form[action='/sign-in'] button[type=submit]")
            .await
    }
}
