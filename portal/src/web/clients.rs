//! Client devices (revoke = disable, and end its `keyhole login` sign-ins;
//! delete) and relays. Device sign-ins (tokens from `keyhole login`) are
//! listed with their owner and sign-in method, each revocable alone.

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Redirect},
};
use keyhole_proto::{ClientId, PublicKey};
use maud::html;

use super::{
    layout::{WebResult, badge, page, post_button, time},
    session::{Post, Session},
};
use crate::{
    api::extract::path_id,
    policy::{ActorId, SignInMethod},
    state::{AppState, Change},
};

fn method_name(m: Option<SignInMethod>) -> &'static str {
    match m {
        Some(SignInMethod::Password) => "password",
        Some(SignInMethod::Oidc) => "oidc",
        Some(SignInMethod::ServiceToken) => "service token",
        None => "-",
    }
}

pub async fn list(State(state): State<AppState>, session: Session) -> WebResult {
    let clients = state.store.list_clients(None, 100_000, 0).await?;
    let sign_ins = state.store.list_device_sign_ins(crate::api::now()).await?;
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
            p.lead { "Devices that signed in. Revoking one disconnects it at once, ends its flows and its " code { "keyhole login" } " sign-ins." }
            div.table-wrap {
                table.sortable #clients {
                    thead { tr { th { "Name" } th { "Owner" } th { "Signed in with" } th { "Status" } th { "Tunnel IPv4" } th { "Last seen" } th { "" } } }
                    tbody {
                        @for c in &clients {
                            tr data-key=(c.public_key) {
                                td { (c.name) }
                                td { (owner(&c.owner)) }
                                td.sign-in {
                                    @let methods: Vec<&str> = sign_ins.iter().filter(|d| d.public_key == c.public_key).map(|d| method_name(d.sign_in_method)).collect();
                                    @if methods.is_empty() {
                                        @if matches!(c.owner, ActorId::ServiceAccount(_)) { "service token" } @else { span.muted { "-" } }
                                    } @else {
                                        "keyhole login (" (methods.join(", ")) ")"
                                    }
                                }
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
                        @if clients.is_empty() { tr { td colspan="7" .muted { "No clients yet." } } }
                    }
                }
            }
            h2 { "Device sign-ins" }
            p.muted { "Tokens issued by " code { "keyhole login" } ", each bound to one device key. Revoking one signs that device out and disconnects it." }
            div.table-wrap {
                table.sortable #sign-ins {
                    thead { tr { th { "Device" } th { "Owner" } th { "Method" } th { "Device key" } th { "Signed in" } th { "Expires" } th { "" } } }
                    tbody {
                        @for d in &sign_ins {
                            tr data-key=(d.public_key) {
                                td { (d.device_name) }
                                td { (d.user.map(|u| owner(&ActorId::User(u))).unwrap_or_default()) }
                                td { (method_name(d.sign_in_method)) }
                                td.mono { (d.public_key) }
                                td { (time(Some(d.created_at))) }
                                td { (time(d.expires_at)) }
                                td.actions {
                                    (post_button(&session, &format!("/clients/sign-ins/{}/revoke", d.token_id), "Revoke", "danger small", Some("Sign this device out?")))
                                }
                            }
                        }
                        @if sign_ins.is_empty() { tr { td colspan="7" .muted { "No device sign-ins." } } }
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
    let client = state.store.get_client(id).await?;
    state.store.set_client_disabled(id, true).await?;
    state.publish(Change::ClientChanged(id.0));
    revoke_sign_ins_of(&state, client.public_key).await?;
    Ok(Redirect::to("/clients").into_response())
}

/// Ends every `keyhole login` token bound to `key`.
async fn revoke_sign_ins_of(state: &AppState, key: PublicKey) -> WebResult<()> {
    for token in state.store.revoke_device_sign_ins(key).await? {
        state.publish(Change::TokenRevoked(token));
    }
    Ok(())
}

pub async fn revoke_sign_in(
    State(state): State<AppState>,
    Path(token): Path<String>,
    post: Post,
) -> WebResult {
    let token = path_id(&token, "sign-in")?;
    state.store.revoke_device_sign_in(token).await?;
    state.publish(Change::TokenRevoked(token));
    tracing::info!(admin = %post.session.user.email, %token, "web: device sign-in revoked");
    Ok(Redirect::to("/clients").into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _post: Post,
) -> WebResult {
    let id = ClientId(path_id(&id, "client")?);
    let client = state.store.get_client(id).await?;
    state.store.delete_client(id).await?;
    state.publish(Change::ClientDeleted(id.0));
    // Else the device would come back with its token as a new client.
    revoke_sign_ins_of(&state, client.public_key).await?;
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
