//! The WebSocket control channel for gateways, clients and relays.
//!
//! - [`core`]: the sans-IO state machine (sessions, flow authorisation,
//!   ICE relay, revocation, expiry), unit-tested without sockets;
//! - [`hub`]: the core behind a mutex with a send queue per connection;
//! - [`ws`], [`socket`]: the axum endpoints and connection loops;
//! - [`tasks`]: change-bus listener, timers, flow-log writer.

mod config;
pub mod core;
pub mod hub;
mod socket;
pub mod tasks;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use tokio::sync::mpsc;

pub use config::ControlConfig;
pub use ws::ControlState;

use crate::{metrics::Metrics, state::AppState, store::StoreError};

/// Flow-log entries queued for the writer before new ones are dropped.
const FLOW_LOG_QUEUE: usize = 200_000;

/// The running control plane.
pub struct Control {
    pub hub: Arc<Hub>,
    /// Ends once [`Hub::shutdown`] closed the queue and the rest is written.
    pub flow_log_writer: tokio::task::JoinHandle<()>,
    /// The WebSocket routes, relative to `/api/v1`.
    pub router: Router<AppState>,
}

pub use hub::Hub;

/// Load the snapshot, start the background tasks, build the routes.
/// Subscribes to the change bus before loading, so no change is missed.
pub async fn start(
    app: AppState,
    config: ControlConfig,
    metrics: Arc<Metrics>,
    relay_secret: Option<String>,
) -> Result<Control, StoreError> {
    let changes = app.changes.subscribe();
    let snapshot = app.store.load_snapshot().await?;
    let (log_tx, log_rx) = mpsc::channel(FLOW_LOG_QUEUE);
    let liveness = socket::Liveness {
        interval: config.ping_interval,
        timeout: config.ping_timeout,
    };
    let core = core::ControlCore::new(config, snapshot, metrics.clone());
    let hub = Arc::new(Hub::new(core, metrics.clone(), log_tx));
    tasks::spawn_change_listener(app.clone(), hub.clone(), changes);
    tasks::spawn_timer(hub.clone());
    let flow_log_writer = tasks::spawn_flow_log_writer(app.store.clone(), log_rx, metrics);
    let router = ws::router(ControlState {
        app,
        hub: hub.clone(),
        relay_secret: relay_secret.map(Arc::from),
        liveness,
    });
    Ok(Control {
        hub,
        flow_log_writer,
        router,
    })
}
