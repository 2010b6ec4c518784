//! The web UI as the binary mounts it (`server::start`), over HTTP:
//! the first-start sign-in link, cookie attributes, sessions stored
//! hashed, one-time links, Secure cookies behind https.

use std::path::PathBuf;

use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use keyhole_portal::server::{self, Portal, ServerConfig};

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(public_url: Option<&str>) -> (Portal, Dir) {
    let dir = std::env::temp_dir().join(format!(
        "keyhole-web-http-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let cfg = ServerConfig {
        public_url: public_url.map(str::to_owned),
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.clone())
    };
    let portal = server::start(cfg, std::future::pending()).await.unwrap();
    (portal, Dir(dir))
}

struct Reply {
    status: u16,
    cookies: Vec<String>,
    location: Option<String>,
    body: String,
}

async fn request(portal: &Portal, method: &str, path: &str, cookie: &str, form: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<axum::body::Bytes>>();
    let req = axum::http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", portal.addr))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(axum::body::Bytes::from(form.to_owned())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let body =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    Reply {
        status,
        cookies,
        location,
        body,
    }
}

fn cookie_value<'a>(cookies: &'a [String], name: &str) -> Option<(&'a str, &'a str)> {
    cookies.iter().find_map(|c| {
        let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some((v, attrs))
    })
}

fn form_token(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("csrf field") + 20;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn first_start_link_signs_in_once_with_hashed_session_and_safe_cookies() {
    let (portal, dir) = start(None).await;
    let link = portal
        .first_start
        .as_ref()
        .unwrap()
        .sign_in_link
        .clone()
        .unwrap();
    let token = link.split("#token=").nth(1).unwrap().to_owned();

    let page = request(&portal, "GET", "/sign-in", "", "").await;
    assert_eq!(page.status, 200);
    let (pre, attrs) = cookie_value(&page.cookies, "kh_signin").expect("sign-in cookie");
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Lax"),
        "{attrs}"
    );
    assert!(!attrs.contains("Secure"), "plain http: no Secure ({attrs})");
    assert_eq!(form_token(&page.body), pre);

    // The link without the double-submit cookie is refused.
    let forged = request(
        &portal,
        "POST",
        "/sign-in/link",
        "",
        &format!("_csrf={pre}&token={token}"),
    )
    .await;
    assert_eq!(forged.status, 403);

    let jar = format!("kh_signin={pre}");
    let ok = request(
        &portal,
        "POST",
        "/sign-in/link",
        &jar,
        &format!("_csrf={pre}&token={token}&next=/sites"),
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.location.as_deref(), Some("/sites"));
    let (secret, attrs) = cookie_value(&ok.cookies, "kh_session").expect("session cookie");
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Lax") && attrs.contains("Path=/"),
        "{attrs}"
    );
    assert!(!attrs.contains("Secure"));

    // The session works, and the portal's default site is listed.
    let sites = request(
        &portal,
        "GET",
        "/sites",
        &format!("kh_session={secret}"),
        "",
    )
    .await;
    assert_eq!(sites.status, 200);
    assert!(sites.body.contains(">default<"), "{}", sites.body);

    // Only the hash of the session secret is on disk.
    let mut disk = Vec::new();
    for f in ["keyhole.sqlite3", "keyhole.sqlite3-wal"] {
        if let Ok(b) = std::fs::read(dir.0.join(f)) {
            disk.extend(b);
        }
    }
    assert!(!disk.is_empty());
    let hay = String::from_utf8_lossy(&disk);
    assert!(!hay.contains(secret), "the raw session secret is stored");
    let hashed: String = <sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(hay.contains(&hashed), "the session hash is not stored");

    // A link works once.
    let again = request(
        &portal,
        "POST",
        "/sign-in/link",
        &jar,
        &format!("_csrf={pre}&token={token}"),
    )
    .await;
    assert_eq!(again.status, 401);

    // Sign-out (with the session's CSRF token) ends the session.
    let csrf = form_token(&sites.body);
    let out = request(
        &portal,
        "POST",
        "/sign-out",
        &format!("kh_session={secret}"),
        &format!("_csrf={csrf}"),
    )
    .await;
    assert_eq!(out.status, 303);
    let after = request(
        &portal,
        "GET",
        "/sites",
        &format!("kh_session={secret}"),
        "",
    )
    .await;
    assert_eq!(after.status, 303);
    assert_eq!(after.location.as_deref(), Some("/sign-in?next=%2Fsites"));
    portal.abort();
}

#[tokio::test]
async fn https_public_url_makes_cookies_secure() {
    let (portal, _dir) = start(Some("https://portal.example.com")).await;
    let page = request(&portal, "GET", "/sign-in", "", "").await;
    let (_, attrs) = cookie_value(&page.cookies, "kh_signin").unwrap();
    assert!(attrs.contains("Secure"), "{attrs}");
    // The API and health endpoints still answer beside the UI.
    assert_eq!(
        request(&portal, "GET", "/healthz", "", "").await.status,
        200
    );
    assert_eq!(
        request(&portal, "GET", "/api/v1/users", "", "")
            .await
            .status,
        401
    );
    let css = request(&portal, "GET", "/assets/app.css", "", "").await;
    assert!(css.status == 200 && css.body.contains("--accent"));
    portal.abort();
}
