//! Gateways: online/offline, backend, version, last seen; the table
//! updates live over server-sent events.
//!
//! Presence (connect, heartbeat, disconnect) is written to the store by the
//! control channel without a `Change` event, so the event stream re-reads
//! the store every `live_interval` and also wakes at once on any `Change`
//! (site deletions, gateway removals); it sends the rows only when they
//! differ from what the browser has.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, Query, State},
    response::{
        IntoResponse, Redirect,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::{Stream, stream};
use keyhole_proto::{GatewayId, SiteId, messages::connect::WireguardBackend};
use maud::{Markup, html};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::{
    WebExt,
    layout::{WebResult, badge, page, post_button, time},
    session::Session,
};
use crate::{
    api::extract::path_id,
    state::{AppState, Change},
    store::{GatewayRecord, Site},
};

fn backend(b: WireguardBackend) -> &'static str {
    match b {
        WireguardBackend::Kernel => "kernel",
        WireguardBackend::Userspace => "userspace",
    }
}

/// The `<tr>`s of the gateway table.
pub fn rows(gws: &[GatewayRecord], sites: &[Site], session: &Session) -> Markup {
    html! {
        @for g in gws {
            @let site = sites.iter().find(|s| s.id == g.site_id).map(|s| s.name.as_str()).unwrap_or("?");
            tr data-gateway=(g.id) {
                td { (g.name) }
                td { a href={ "/sites/" (g.site_id) } { (site) } }
                td.status data-sort=(u8::from(g.online)) { (badge(g.online, "online", "offline")) }
                td { (backend(g.backend)) }
                td { (g.version) }
                td { (time(g.last_seen_at)) }
                td.mono { (g.tunnel.ipv4) }
                td.mono { (g.remote_ip.map(|i| i.to_string()).unwrap_or_default()) }
                td { (post_button(session, &format!("/gateways/{}/delete", g.id), "Remove", "danger small", Some("Forget this gateway? It registers again when it reconnects."))) }
            }
        }
        @if gws.is_empty() {
            tr.empty { td colspan="9" .muted { "No gateways yet. Create a site and run its deploy command." } }
        }
    }
}

/// The live gateway table; `site` limits it to one site.
pub fn table(gws: &[GatewayRecord], sites: &[Site], session: &Session) -> Markup {
    let live = match sites {
        [one] if gws.iter().all(|g| g.site_id == one.id) => {
            format!("/gateways/events?site={}", one.id)
        }
        _ => "/gateways/events".to_owned(),
    };
    html! {
        div.table-wrap {
            table.sortable.gateways data-live=(live) {
                thead { tr {
                    th { "Name" } th { "Site" } th { "Status" } th { "Backend" } th { "Version" }
                    th { "Last seen" } th { "Tunnel IPv4" } th { "Remote IP" } th { "" }
                } }
                tbody { (rows(gws, sites, session)) }
            }
        }
    }
}

pub async fn list(State(state): State<AppState>, session: Session) -> WebResult {
    let gws = state.store.list_gateways_page(None, 10_000, 0).await?;
    let sites = state.store.list_sites().await?;
    Ok(page(
        &session,
        "/gateways",
        "Gateways",
        html! {
            p.lead { "Live: this table follows gateways connecting and disconnecting without reloading." }
            (table(&gws, &sites, &session))
        },
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    site: Option<String>,
}

struct Live {
    state: AppState,
    session: Session,
    site: Option<SiteId>,
    changes: broadcast::Receiver<Change>,
    interval: Duration,
    last: Option<String>,
    first: bool,
}

impl Live {
    /// The rows as HTML, or `None` when the session has ended.
    async fn render(&self) -> Option<String> {
        let now = crate::api::now();
        match self
            .state
            .store
            .web_session(&self.session.secret, now)
            .await
        {
            Ok(Some(s)) if s.user.is_admin && !s.user.disabled => {}
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "live gateways: session check failed");
                return Some(self.last.clone().unwrap_or_default());
            }
        }
        let gws = self
            .state
            .store
            .list_gateways_page(self.site, 10_000, 0)
            .await;
        let sites = self.state.store.list_sites().await;
        match (gws, sites) {
            (Ok(g), Ok(s)) => Some(rows(&g, &s, &self.session).into_string()),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "live gateways: store read failed");
                Some(self.last.clone().unwrap_or_default())
            }
        }
    }

    async fn wait(&mut self) {
        if self.first {
            self.first = false;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(self.interval) => {}
            r = self.changes.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = r {
                    // No more changes will come; the timer still runs.
                    tokio::time::sleep(self.interval).await;
                }
            }
        }
    }
}

pub async fn events(
    State(state): State<AppState>,
    session: Session,
    web: WebExt,
    Query(q): Query<EventsQuery>,
) -> WebResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let site = match q.site.as_deref() {
        Some(s) => Some(SiteId(path_id(s, "site")?)),
        None => None,
    };
    let live = Live {
        changes: state.changes.subscribe(),
        state,
        session,
        site,
        interval: web.config.live_interval,
        last: None,
        first: true,
    };
    let stream = stream::unfold(live, |mut live| async move {
        loop {
            live.wait().await;
            let html = live.render().await?;
            if live.last.as_deref() != Some(html.as_str()) {
                live.last = Some(html.clone());
                return Some((Ok(Event::default().event("rows").data(html)), live));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _post: super::session::Post,
) -> WebResult {
    let id = GatewayId(path_id(&id, "gateway")?);
    let gw = state.store.get_gateway(id).await?;
    state.store.delete_gateway(id).await?;
    state.publish(Change::SiteChanged(gw.site_id.0));
    Ok(Redirect::to("/gateways").into_response())
}
