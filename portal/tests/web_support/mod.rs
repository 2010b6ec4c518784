//! Runs the admin UI in-process (the real `web::router` over a temp
//! SQLite store, served on 127.0.0.1:0) and drives it with a real headless
//! Chromium through chromedriver (Debian `chromium` + `chromium-driver`).
//!
//! A failing test leaves a screenshot and the page's HTML in
//! `<target>/ui-failures/`; with `KEYHOLE_UI_SCREENS=1` every `shot` is
//! kept in `<target>/ui-screens/` for looking at the pages.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt as _;
use keyhole_portal::{
    server_bootstrap::hash_password,
    state::AppState,
    store::{Store, User},
    web::{self, WebConfig},
};
use tokio::{net::TcpListener, process::Child};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery";

/// One browser test at a time: each runs its own Chromium, and the
/// machine is small.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
}

pub fn temp_dir(tag: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!(
        "keyhole-web-{tag}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&p).expect("temp dir");
    TempDir(p)
}

/// The portal's web UI on a loopback port.
pub struct Portal {
    pub state: AppState,
    pub addr: SocketAddr,
    pub admin: User,
    server: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Portal {
    pub async fn start(config: WebConfig) -> anyhow::Result<Self> {
        let dir = temp_dir("store");
        let store = Store::open_sqlite(&dir.0).await?;
        let admin = store
            .create_user(ADMIN_EMAIL, "Ada Admin", true, chrono::Utc::now())
            .await?;
        store
            .set_password_hash(&admin, &hash_password(ADMIN_PASSWORD)?)
            .await?;
        let state = AppState::new(store);
        let app = web::router_with(config).with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Ok(Self {
            state,
            addr,
            admin,
            server,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// chromedriver and one Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: TempDir,
}

async fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port())
}

impl Browser {
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port().await?;
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver (apt-get install chromium chromium-driver)")?;
        let profile = temp_dir("chrome-profile");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let attempt =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await;
            match attempt {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "chromedriver not ready");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => bail!("no chromedriver session: {e}"),
            }
        };
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    pub async fn set_size(&self, w: u32, h: u32) -> anyhow::Result<()> {
        self.client.set_window_size(w, h).await?;
        Ok(())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    pub async fn fill(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| css.to_owned())?;
        e.clear().await?;
        e.send_keys(value).await?;
        Ok(())
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| css.to_owned())?
            .click()
            .await?;
        Ok(())
    }

    /// Clicks a button that loads a new page, and waits for that page.
    pub async fn submit(&self, css: &str) -> anyhow::Result<()> {
        self.js("window.__khOldPage = true; return true").await?;
        self.click(css).await?;
        self.wait_js(
            "return window.__khOldPage === undefined && document.readyState === 'complete'",
            Duration::from_secs(15),
        )
        .await
    }

    pub async fn select(&self, css: &str, visible_text: &str) -> anyhow::Result<()> {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| css.to_owned())?;
        e.select_by_label(visible_text).await?;
        Ok(())
    }

    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| css.to_owned())?
            .text()
            .await?)
    }

    pub async fn path(&self) -> anyhow::Result<String> {
        Ok(self.client.current_url().await?.path().to_owned())
    }

    pub async fn js(&self, script: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Polls `script` (returning a boolean) until true or `timeout`.
    pub async fn wait_js(&self, script: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.js(script).await?.as_bool() == Some(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for `{script}`");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn sign_in(
        &self,
        portal: &Portal,
        email: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        self.goto(&portal.url("/sign-in")).await?;
        self.fill("#email", email).await?;
        self.fill("#password", password).await?;
        // Wait for the answer: a next `goto` racing this POST could get
        // its sign-in cookie overwritten by the late response (CSRF refusal).
        self.submit("form[action='/sign-in'] button[type=submit]")
            .await
    }

    /// Saves a screenshot as `<dir>/<name>.png` (and the HTML beside it).
    pub async fn save(&self, dir: &str, name: &str) -> anyhow::Result<PathBuf> {
        let dir = target_dir().join(dir);
        std::fs::create_dir_all(&dir)?;
        let png = dir.join(format!("{name}.png"));
        std::fs::write(&png, self.client.screenshot().await?)?;
        if let Ok(html) = self.client.source().await {
            let _ = std::fs::write(dir.join(format!("{name}.html")), html);
        }
        Ok(png)
    }

    /// A screenshot for review, kept only with `KEYHOLE_UI_SCREENS=1`.
    pub async fn shot(&self, name: &str) -> anyhow::Result<()> {
        if std::env::var_os("KEYHOLE_UI_SCREENS").is_some() {
            self.save("ui-screens", name).await?;
        }
        Ok(())
    }
}

/// Runs `body` with a fresh browser; on failure (error or panic) saves a
/// screenshot to `<target>/ui-failures/<name>.png` and fails the test.
pub async fn with_browser<F>(name: &str, body: F)
where
    F: for<'a> AsyncFnOnce(&'a Browser) -> anyhow::Result<()>,
{
    let _guard = BROWSER.lock().await;
    let browser = Browser::start().await.expect("browser");
    let outcome = std::panic::AssertUnwindSafe(body(&browser))
        .catch_unwind()
        .await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into()),
        ),
    };
    if let Some(msg) = failure {
        let saved = browser.save("ui-failures", name).await;
        let _ = browser.client.clone().close().await;
        panic!("{name} failed: {msg}\nscreenshot: {saved:?}");
    }
    let _ = browser.client.clone().close().await;
}
