//! Assembling the portal: store, first-start bootstrap, control plane,
//! HTTP routes (`/api/v1`, the control WebSockets, `/healthz`, `/metrics`)
//! and the listener. The binary and the in-process tests share this.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
    serve::ListenerExt as _,
};
use chrono::Utc;
use tokio::net::TcpListener;

use crate::{
    control::{self, ControlConfig, Hub},
    metrics::Metrics,
    server_bootstrap::{self, BootstrapOptions, FirstStart},
    state::AppState,
    store::Store,
};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Holds the SQLite file when no `database_url` is given.
    pub data_dir: PathBuf,
    /// `postgres://…` (or `sqlite:…`); overrides the data dir's SQLite.
    pub database_url: Option<String>,
    /// How users and peers reach the portal; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Shared secret relays may register with instead of a relay token.
    pub relay_secret: Option<String>,
    /// TURN secret; generated and stored at first start when not given.
    pub turn_secret: Option<String>,
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
    pub control: ControlConfig,
    /// Admin sign-in through an OIDC provider.
    pub oidc: Option<crate::web::OidcConfig>,
    /// `keyhole login` (device flow); its `public_url` follows the above.
    pub device: crate::api::device::DeviceConfig,
}

impl ServerConfig {
    /// Defaults for everything but where to listen and store.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            database_url: None,
            public_url: None,
            relay_secret: None,
            turn_secret: None,
            admin_email: None,
            admin_password: None,
            control: ControlConfig::default(),
            oidc: None,
            device: crate::api::device::DeviceConfig::default(),
        }
    }
}

/// A running portal.
pub struct Portal {
    pub addr: SocketAddr,
    pub public_url: String,
    pub app: AppState,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Set on the first start only: the secrets to show once.
    pub first_start: Option<FirstStart>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    flow_log_writer: tokio::task::JoinHandle<()>,
}

/// How long a graceful shutdown waits for the flow log's last entries.
const FLOW_LOG_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Portal {
    /// Serve until `shutdown` resolves.
    /// Then close the control connections (they outlive the HTTP server)
    /// and write the flow log's queued entries.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.hub.shutdown();
        if tokio::time::timeout(FLOW_LOG_FLUSH_TIMEOUT, self.flow_log_writer)
            .await
            .is_err()
        {
            tracing::error!("the flow log was not written within 30 s of shutdown");
        }
        served??;
        Ok(())
    }

    /// Stop serving (tests).
    pub fn abort(&self) {
        self.server.abort();
    }
}

async fn open_store(cfg: &ServerConfig) -> anyhow::Result<Store> {
    match &cfg.database_url {
        Some(url) => Store::connect(url)
            .await
            .with_context(|| "connecting to the database (DATABASE_URL)".to_string()),
        None => {
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
            Store::open_sqlite(&cfg.data_dir)
                .await
                .with_context(|| format!("opening the database in {}", cfg.data_dir.display()))
        }
    }
}

/// Open the store, bootstrap, bind, and serve in the background until
/// `shutdown` resolves.
pub async fn start(
    mut cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Portal> {
    let store = open_store(&cfg).await?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let first_start = server_bootstrap::first_start(
        &store,
        &BootstrapOptions {
            admin_email: cfg.admin_email.clone(),
            admin_password: cfg.admin_password.clone(),
            public_url: public_url.clone(),
        },
        Utc::now(),
    )
    .await
    .context("first-start setup")?;
    cfg.control.turn_secret =
        Some(server_bootstrap::turn_secret(&store, cfg.turn_secret.clone()).await?);

    let app = AppState::new(store);
    let metrics = Arc::new(Metrics::default());
    let control = control::start(
        app.clone(),
        cfg.control.clone(),
        metrics.clone(),
        cfg.relay_secret.clone(),
    )
    .await
    .context("starting the control plane")?;

    let web = crate::web::router_with(crate::web::WebConfig {
        public_url: cfg.public_url.clone(),
        oidc: cfg.oidc.clone(),
        ..crate::web::WebConfig::default()
    });
    let api = crate::api::router_with(crate::api::device::DeviceConfig {
        public_url: cfg.public_url.clone(),
        ..cfg.device.clone()
    });
    let router = routes(app.clone(), api, control.router, web, metrics.clone());
    // Control frames are small and written in batches with one flush:
    // Nagle's algorithm would only hold them back waiting for ACKs.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY");
        }
    });
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    });
    Ok(Portal {
        addr,
        public_url,
        app,
        hub: control.hub,
        metrics,
        first_start,
        server,
        flow_log_writer: control.flow_log_writer,
    })
}

fn routes(
    app: AppState,
    api: Router<AppState>,
    control: Router<AppState>,
    web: Router<AppState>,
    metrics: Arc<Metrics>,
) -> Router {
    let api = api.merge(control);
    Router::new()
        .nest("/api/v1", api)
        // The admin UI at `/` (sign-in, pages, /assets).
        .merge(web)
        .route("/healthz", get(healthz))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .with_state(app)
}

async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    match app.store.ping_db().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
        }
    }
}
