//! Background tasks of the control plane: applying committed changes,
//! timers, and the batched flow-log writer.

use std::{sync::Arc, time::Duration};

use keyhole_proto::SiteId;
use tokio::sync::{broadcast, mpsc};

use super::hub::Hub;
use crate::{
    metrics::Metrics,
    state::{AppState, Change},
    store::{FlowLogEntry, Store},
};

/// Timer resolution: gateway timeouts and expiries fire within this.
const TICK: Duration = Duration::from_millis(100);

/// Flow-log entries per database write.
const FLOW_LOG_BATCH: usize = 2000;

/// Follow the change bus: revoke and close at once what a change ends,
/// then reload the snapshot (coalescing bursts into one reload) and let the
/// core revoke whatever no longer holds.
pub fn spawn_change_listener(
    app: AppState,
    hub: Arc<Hub>,
    mut rx: broadcast::Receiver<Change>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut reload = false;
            let first = rx.recv().await;
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Ok(change) => reload |= apply_directly(&hub, &change),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "change bus lagged; reloading");
                        reload = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                next = match rx.try_recv() {
                    Ok(c) => Some(Ok(c)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(_) => None,
                };
            }
            if reload {
                reload_snapshot(&app.store, &hub).await;
            }
        }
    })
}

/// Changes the core handles without a reload; returns whether a reload is
/// needed too.
fn apply_directly(hub: &Hub, change: &Change) -> bool {
    match change {
        Change::TokenRevoked(id) => {
            hub.with_core(|core, _| core.token_revoked(*id));
            false
        }
        Change::SiteDeleted(id) => {
            hub.with_core(|core, _| core.site_deleted(SiteId(*id)));
            true
        }
        _ => true,
    }
}

pub async fn reload_snapshot(store: &Store, hub: &Hub) {
    let epoch = hub.with_core(|core, _| core.epoch());
    match store.load_snapshot().await {
        Ok(snapshot) => {
            Metrics::inc(&hub.metrics().snapshot_reloads);
            hub.with_core(|core, now| core.replace_snapshot(now, snapshot, epoch));
        }
        Err(e) => tracing::error!(error = %e, "reloading the policy snapshot failed"),
    }
}

/// Drive the core's timers.
pub fn spawn_timer(hub: Arc<Hub>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            hub.with_core_open(|core, now| {
                if core.poll_timeout().is_some_and(|t| t <= now) {
                    core.handle_timeout(now);
                }
            });
        }
    })
}

/// Write flow-log entries in batches, off the authorisation path. Ends
/// once the queue is closed ([`Hub::shutdown`]) and everything queued is
/// written.
pub fn spawn_flow_log_writer(
    store: Store,
    mut rx: mpsc::Receiver<FlowLogEntry>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(FLOW_LOG_BATCH);
        while rx.recv_many(&mut batch, FLOW_LOG_BATCH).await > 0 {
            match store.append_flow_log_batch(&batch).await {
                Ok(()) => {
                    metrics
                        .flow_log_written
                        .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, entries = batch.len(), "writing the flow log failed");
                    metrics
                        .flow_log_dropped
                        .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            batch.clear();
        }
    })
}
