//! Sites: list, create (with the gateway deploy command and a token shown
//! once), rename, delete, gateway tokens.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect},
};
use keyhole_proto::SiteId;
use maud::{Markup, html};

use super::{
    WebExt,
    form::Errors,
    gateways,
    layout::{WebResult, csrf, field, general_errors, no_store, page, post_button, time},
    session::{Post, Session, is_https},
};
use crate::{
    api::{
        extract::path_id,
        tokens::{self, NewToken},
    },
    state::{AppState, Change},
    store::{Site, TokenKind, TokenOwner},
};

fn site_id(raw: &str) -> Result<SiteId, crate::api::error::ApiError> {
    Ok(SiteId(path_id(raw, "site")?))
}

/// How gateways reach the portal: the configured public URL, else what
/// the browser used.
pub fn portal_url(headers: &HeaderMap, web: &WebExt) -> String {
    if let Some(u) = &web.config.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if is_https(headers, web) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

fn create_form(session: &Session, errors: &Errors, name: &str) -> Markup {
    html! {
        section.card {
            h2 { "New site" }
            (general_errors(errors))
            form method="post" action="/sites" {
                (csrf(session))
                (field(errors, "name", "Name", html! {
                    input #name name="name" value=(name) required maxlength="255";
                }))
                button.primary type="submit" { "Create site" }
            }
        }
    }
}

async fn list_page(
    state: &AppState,
    session: &Session,
    errors: &Errors,
    name: &str,
) -> WebResult<Markup> {
    let sites = state.store.list_sites().await?;
    let gateways = state.store.list_gateways_page(None, 10_000, 0).await?;
    Ok(page(
        session,
        "/sites",
        "Sites",
        html! {
            p.lead { "A site is a network your gateways serve. Deploy one or more gateways per site with the site's token." }
            div.table-wrap {
                table.sortable #sites {
                    thead { tr { th { "Name" } th { "Gateways online" } th { "Created" } } }
                    tbody {
                        @for s in &sites {
                            @let total = gateways.iter().filter(|g| g.site_id == s.id).count();
                            @let online = gateways.iter().filter(|g| g.site_id == s.id && g.online).count();
                            tr {
                                td { a href={ "/sites/" (s.id) } { (s.name) } }
                                td data-sort=(online) { (online) " / " (total) }
                                td { (time(Some(s.created_at))) }
                            }
                        }
                        @if sites.is_empty() { tr { td colspan="3" .muted { "No sites yet." } } }
                    }
                }
            }
            (create_form(session, errors, name))
        },
    ))
}

pub async fn list(State(state): State<AppState>, session: Session) -> WebResult {
    Ok(list_page(&state, &session, &Errors::default(), "")
        .await?
        .into_response())
}

fn token_shown_once(site: &Site, url: &str, token: &str, created: bool) -> Markup {
    html! {
        section.card.secret {
            h2 { @if created { "Site created — deploy a gateway" } @else { "New gateway token" } }
            p { "Run this on a Linux host in " strong { (site.name) } ". "
                strong { "The token is shown only now" } "; copy it before leaving this page." }
            pre.command #deploy-command {
                "sudo env KEYHOLE_PORTAL_URL=" (url) " \\\n     KEYHOLE_TOKEN=" (token) " \\\n     keyhole-gateway"
            }
            p { "Token: " code #site-token { (token) } }
            p { a href={ "/sites/" (site.id) } { "Continue to the site" } }
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    web: WebExt,
    Post { session, form }: Post,
) -> WebResult {
    let name = form.text("name");
    let site = match state.store.create_site(&name, crate::api::now()).await {
        Ok(s) => s,
        Err(e) => {
            let errors = Errors::from_api(e.into(), |f| f.to_owned())?;
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                list_page(&state, &session, &errors, &name).await?,
            )
                .into_response());
        }
    };
    state.publish(Change::SiteChanged(site.id.0));
    let (_, created) = tokens::create(
        &state,
        TokenOwner::Site(site.id),
        TokenKind::Gateway,
        NewToken::default(),
    )
    .await?;
    let url = portal_url(&headers, &web);
    Ok(no_store(page(
        &session,
        "/sites",
        &site.name,
        token_shown_once(&site, &url, &created.0.token, true),
    )))
}

async fn show_page(
    state: &AppState,
    session: &Session,
    site: &Site,
    errors: &Errors,
) -> WebResult<Markup> {
    let gws = state
        .store
        .list_gateways_page(Some(site.id), 10_000, 0)
        .await?;
    let toks = state
        .store
        .list_tokens(TokenOwner::Site(site.id), TokenKind::Gateway, 1000, 0)
        .await?;
    let sid = site.id.to_string();
    Ok(page(
        session,
        "/sites",
        &site.name,
        html! {
            section.card {
                h2 { "Gateways" }
                (gateways::table(&gws, std::slice::from_ref(site), session))
            }
            section.card {
                h2 { "Gateway tokens" }
                div.table-wrap {
                    table.sortable {
                        thead { tr { th { "Id" } th { "Created" } th { "Last used" } th { "Expires" } th { "" } } }
                        tbody {
                            @for t in &toks {
                                tr {
                                    td { code { (t.id) } }
                                    td { (time(Some(t.created_at))) }
                                    td { (time(t.last_used_at)) }
                                    td { (time(t.expires_at)) }
                                    td { (post_button(session, &format!("/sites/{sid}/tokens/{}/revoke", t.id), "Revoke", "danger", Some("Revoke this token? Gateways using it are disconnected."))) }
                                }
                            }
                            @if toks.is_empty() { tr { td colspan="5" .muted { "No tokens." } } }
                        }
                    }
                }
                (post_button(session, &format!("/sites/{sid}/tokens"), "New gateway token", "primary", None))
            }
            section.card {
                h2 { "Rename" }
                (general_errors(errors))
                form method="post" action={ "/sites/" (sid) "/rename" } {
                    (csrf(session))
                    (field(errors, "name", "Name", html! {
                        input #name name="name" value=(site.name) required maxlength="255";
                    }))
                    button type="submit" { "Save" }
                }
            }
            section.card.danger-zone {
                h2 { "Delete" }
                p { "Deletes the site with its gateways, their tokens and its resource links." }
                (post_button(session, &format!("/sites/{sid}/delete"), "Delete site", "danger", Some("Delete this site?")))
            }
        },
    ))
}

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> WebResult {
    let site = state.store.get_site(site_id(&id)?).await?;
    Ok(show_page(&state, &session, &site, &Errors::default())
        .await?
        .into_response())
}

pub async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Post { session, form }: Post,
) -> WebResult {
    let id = site_id(&id)?;
    match state.store.rename_site(id, &form.text("name")).await {
        Ok(_) => {
            state.publish(Change::SiteChanged(id.0));
            Ok(Redirect::to(&format!("/sites/{id}")).into_response())
        }
        Err(e) => {
            let errors = Errors::from_api(e.into(), |f| f.to_owned())?;
            let site = state.store.get_site(id).await?;
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                show_page(&state, &session, &site, &errors).await?,
            )
                .into_response())
        }
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _post: Post,
) -> WebResult {
    let id = site_id(&id)?;
    state.store.delete_site(id).await?;
    state.publish(Change::SiteDeleted(id.0));
    Ok(Redirect::to("/sites").into_response())
}

pub async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    web: WebExt,
    Path(id): Path<String>,
    Post { session, .. }: Post,
) -> WebResult {
    let site = state.store.get_site(site_id(&id)?).await?;
    let (_, created) = tokens::create(
        &state,
        TokenOwner::Site(site.id),
        TokenKind::Gateway,
        NewToken::default(),
    )
    .await?;
    let url = portal_url(&headers, &web);
    Ok(no_store(page(
        &session,
        "/sites",
        &site.name,
        token_shown_once(&site, &url, &created.0.token, false),
    )))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
    _post: Post,
) -> WebResult {
    let id = site_id(&id)?;
    tokens::revoke(&state, TokenOwner::Site(id), TokenKind::Gateway, &token).await?;
    Ok(Redirect::to(&format!("/sites/{id}")).into_response())
}
