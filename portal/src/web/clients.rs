//! Client devices (revoke = disable; delete) and relays.

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Redirect},
};
use keyhole_proto::ClientId;
use maud::html;

use super::{
    layout::{WebResult, badge, page, post_button, time},
    session::{Post, Session},
};
use crate::{
    api::extract::path_id,
    policy::ActorId,
    state::{AppState, Change},
};

pub async fn list(State(state): State<AppState>, session: Session) -> WebResult {
    let clients = state.store.list_clients(None, 100_000, 0).await?;
    let users = state.store.list_users(100_000, 0).await?;
    let sas = state.store.list_service_accounts(100_000, 0).await?;
    let owner = |a: &ActorId| match a {
        ActorId::User(u) => users
            .iter()
            .find(|x| x.id == *u)
            .map(|x| x.email.clone())
            .unwrap_or_default(),
        ActorId::ServiceAccount(s) => sas
            .iter()
            .find(|x| x.id == *s)
            .map(|x| format!("{} (service account)", x.name))
            .unwrap_or_default(),
    };
    Ok(page(
        &session,
        "/clients",
        "Clients",
        html! {
            p.lead { "Devices that signed in. Revoking one disconnects it at once and ends its flows." }
            div.table-wrap {
                table.sortable #clients {
                    thead { tr { th { "Name" } th { "Owner" } th { "Status" } th { "Tunnel IPv4" } th { "Last seen" } th { "" } } }
                    tbody {
                        @for c in &clients {
                            tr {
                                td { (c.name) }
                                td { (owner(&c.owner)) }
                                td { (badge(!c.disabled, "active", "revoked")) }
                                td.mono { (c.tunnel.ipv4) }
                                td { (time(c.last_seen_at)) }
                                td.actions {
                                    @if !c.disabled {
                                        (post_button(&session, &format!("/clients/{}/revoke", c.id), "Revoke", "danger small", Some("Revoke this device?")))
                                    }
                                    (post_button(&session, &format!("/clients/{}/delete", c.id), "Delete", "small", Some("Delete this device?")))
                                }
                            }
                        }
                        @if clients.is_empty() { tr { td colspan="6" .muted { "No clients yet." } } }
                    }
                }
            }
        },
    )
    .into_response())
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _post: Post,
) -> WebResult {
    let id = ClientId(path_id(&id, "client")?);
    state.store.set_client_disabled(id, true).await?;
    state.publish(Change::ClientChanged(id.0));
    Ok(Redirect::to("/clients").into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _post: Post,
) -> WebResult {
    let id = ClientId(path_id(&id, "client")?);
    state.store.delete_client(id).await?;
    state.publish(Change::ClientDeleted(id.0));
    Ok(Redirect::to("/clients").into_response())
}

pub async fn relays(State(state): State<AppState>, session: Session) -> WebResult {
    let relays = state.store.list_relays(100_000, 0).await?;
    Ok(page(
        &session,
        "/relays",
        "Relays",
        html! {
            p.lead { "STUN/TURN relays register themselves with the portal." }
            div.table-wrap {
                table.sortable #relays {
                    thead { tr { th { "Id" } th { "IPv4" } th { "IPv6" } th { "Port" } th { "Status" } } }
                    tbody {
                        @for r in &relays {
                            tr {
                                td.mono { (r.id) }
                                td.mono { (r.public_ipv4.map(|a| a.to_string()).unwrap_or_default()) }
                                td.mono { (r.public_ipv6.map(|a| a.to_string()).unwrap_or_default()) }
                                td { (r.port) }
                                td data-sort=(u8::from(r.online)) { (badge(r.online, "online", "offline")) }
                            }
                        }
                        @if relays.is_empty() { tr { td colspan="5" .muted { "No relays registered." } } }
                    }
                }
            }
        },
    )
    .into_response())
}
