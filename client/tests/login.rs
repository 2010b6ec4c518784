//! The real `keyhole login` / `keyhole logout` binary against a real portal
//! (`keyhole_portal::server::start` on SQLite in this process). A non-admin
//! user approves the printed code over HTTP exactly as the `/device` page's
//! forms do (sign-in with CSRF cookie, then the approve form); the client
//! stores the token 0600 and the control channel accepts it with this
//! device's key only. Denial ends `login` with an error; `logout` revokes
//! the token at the portal and deletes it.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use keyhole_portal::{
    api::device::DeviceConfig,
    server::{self, Portal, ServerConfig},
    server_bootstrap::hash_password,
    store::TokenKind,
};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

const EMAIL: &str = "dev@example.com";
const PASSWORD: &str = "a long enough password";

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp(tag: &str) -> Dir {
    let p = std::env::temp_dir().join(format!(
        "keyhole-login-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&p).unwrap();
    Dir(p)
}

async fn start_portal(dir: &Path) -> Portal {
    let cfg = ServerConfig {
        device: DeviceConfig {
            poll_interval_secs: 1,
            ..DeviceConfig::default()
        },
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf())
    };
    let portal = server::start(cfg, std::future::pending()).await.unwrap();
    let store = &portal.app.store;
    let user = store
        .create_user(EMAIL, "Dev", false, chrono::Utc::now())
        .await
        .unwrap();
    store
        .set_password_hash(&user, &hash_password(PASSWORD).unwrap())
        .await
        .unwrap();
    portal
}

/// `keyhole login` running, with its stdout lines arriving on a channel.
struct Login {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn keyhole(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyhole"));
    c.env("KEYHOLE_STATE_DIR", state)
        .env_remove("KEYHOLE_PORTAL_URL")
        .env_remove("KEYHOLE_TOKEN")
        // No browser may be tried in a test.
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    c
}

fn start_login(state: &Path, portal: &str) -> Login {
    let mut child = keyhole(state)
        .args(["login", "--portal-url", portal, "--name", "ci-laptop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Login { child, lines }
}

impl Login {
    /// Reads lines until one contains `needle`; returns everything read.
    fn read_until(&self, needle: &str) -> String {
        let mut all = String::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no `{needle}` in the output:\n{all}"));
            all.push_str(&line);
            all.push('\n');
            if line.contains(needle) {
                return all;
            }
        }
    }

    fn wait(mut self) -> (bool, String) {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends at EOF, which closes the channel.
                let mut rest = Vec::new();
                while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    rest.push(l);
                }
                return (status.success(), rest.join("\n"));
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("keyhole login did not finish");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn user_code(output: &str) -> String {
    let line = output
        .lines()
        .find(|l| l.contains("enter the code"))
        .expect("code line");
    line.split_whitespace().last().unwrap().to_owned()
}

fn cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let (k, v) = c.split(';').next()?.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("csrf field") + 20;
    html[at..].split('"').next().unwrap().to_owned()
}

/// What a user does in the browser: sign in on the way to /device, open
/// the code, press Approve or Deny.
async fn decide_over_http(base: &str, code: &str, decision: &str) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(format!("{base}/sign-in")).send().await.unwrap();
    let signin = cookie(&page, "kh_signin");
    let next = format!("/device?code={code}");
    let r = http
        .post(format!("{base}/sign-in"))
        .header("cookie", format!("kh_signin={signin}"))
        .form(&[
            ("_csrf", signin.as_str()),
            ("next", next.as_str()),
            ("email", EMAIL),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = format!("kh_session={}", cookie(&r, "kh_session"));
    let page = http
        .get(format!("{base}{next}"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("ci-laptop"), "device name shown");
    let r = http
        .post(format!("{base}/device"))
        .header("cookie", &session)
        .form(&[
            ("_csrf", csrf(&html).as_str()),
            ("code", code),
            ("decision", decision),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

fn percent(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// The control channel's answer to this token with this key.
async fn control_status(addr: SocketAddr, token: &str, key: &str) -> u16 {
    let mut req = format!(
        "ws://{addr}/api/v1/client/ws?public_key={}&version=0.1.0&name=ci-laptop",
        percent(key)
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, r)) => {
            let _ = ws.close(None).await;
            r.status().as_u16()
        }
        Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("connect: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_approve_use_and_logout() {
    let portal_dir = temp("portal");
    let portal = start_portal(&portal_dir.0).await;
    let base = format!("http://{}", portal.addr);
    let state = temp("state");

    let login = start_login(&state.0, &base);
    let out = login.read_until("Waiting for approval");
    assert!(out.contains(&format!("{base}/device")), "{out}");
    let code = user_code(&out);
    // The device key was made here and only its public half was shown.
    let private = std::fs::read_to_string(state.0.join("private_key")).unwrap();
    assert!(!out.contains(private.trim()));
    decide_over_http(&base, &code, "approve").await;
    let (ok, rest) = tokio::task::spawn_blocking(move || login.wait())
        .await
        .unwrap();
    assert!(ok, "login failed: {rest}");
    assert!(rest.contains("Signed in"), "{rest}");

    let file = state.0.join("session.json");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(stored["kind"], "device");
    assert_eq!(stored["portal_url"], base.as_str());
    let token = stored["token"].as_str().unwrap().to_owned();
    let key = stored["public_key"].as_str().unwrap().to_owned();
    assert!(out.contains(&key), "the key shown matches the stored one");

    let info = portal
        .app
        .store
        .verify_token(&token, chrono::Utc::now())
        .await
        .unwrap()
        .expect("token valid");
    assert_eq!(info.kind, TokenKind::ClientSession);
    // Accepted with this device's key, refused with any other.
    assert_eq!(control_status(portal.addr, &token, &key).await, 101);
    let other = keyhole_proto::PublicKey::from_bytes([3; 32]).to_base64();
    assert_eq!(control_status(portal.addr, &token, &other).await, 403);

    // Signing in again ends the replaced sign-in at the portal.
    let login = start_login(&state.0, &base);
    let code = user_code(&login.read_until("Waiting for approval"));
    decide_over_http(&base, &code, "approve").await;
    let (ok, rest) = tokio::task::spawn_blocking(move || login.wait())
        .await
        .unwrap();
    assert!(ok && rest.contains("Ended the previous sign-in"), "{rest}");
    assert_eq!(control_status(portal.addr, &token, &key).await, 401);
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let token = stored["token"].as_str().unwrap().to_owned();
    assert_eq!(stored["public_key"], key.as_str(), "same device key");
    assert_eq!(control_status(portal.addr, &token, &key).await, 101);

    // logout revokes at the portal and deletes the file.
    let state_path = state.0.clone();
    let out = tokio::task::spawn_blocking(move || keyhole(&state_path).arg("logout").output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Signed out"),
        "{text}"
    );
    assert!(!file.exists());
    assert!(
        portal
            .app
            .store
            .verify_token(&token, chrono::Utc::now())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(control_status(portal.addr, &token, &key).await, 401);

    // Service-account tokens keep working through --token.
    let state_path = state.0.clone();
    let out = tokio::task::spawn_blocking(move || {
        keyhole(&state_path)
            .args([
                "login",
                "--portal-url",
                "http://127.0.0.1:1",
                "--token",
                "kh_sa",
            ])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success());
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(stored["kind"], "service_account");
    assert_eq!(stored["token"], "kh_sa");
    portal.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_login_fails_and_stores_nothing() {
    let portal_dir = temp("portal-deny");
    let portal = start_portal(&portal_dir.0).await;
    let base = format!("http://{}", portal.addr);
    let state = temp("state-deny");
    let login = start_login(&state.0, &base);
    let code = user_code(&login.read_until("Waiting for approval"));
    decide_over_http(&base, &code, "deny").await;
    let mut child = login.child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    assert!(!state.0.join("session.json").exists());
    portal.abort();
}
