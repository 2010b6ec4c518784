//! Resources: DNS names/patterns, IPs, CIDRs and the Internet, with
//! traffic filters and the sites that serve them.
//!
//! The form is turned into the REST API's JSON and parsed by the same
//! validated types (`api::resources::ResourceIn` → `keyhole_proto`), so the
//! UI accepts exactly what the API accepts.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect},
};
use keyhole_proto::{Filter, Protocol, Resource, ResourceAddress, ResourceId};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::{
    form::{Errors, FormData, head},
    layout::{WebResult, csrf, field, general_errors, page, post_button},
    session::{Post, Session},
};
use crate::{
    api::{error::ApiError, extract::parse_json, extract::path_id, resources::ResourceIn},
    state::{AppState, Change},
    store::{NewResource, Site},
};

fn resource_id(raw: &str) -> Result<ResourceId, ApiError> {
    Ok(ResourceId(path_id(raw, "resource")?))
}

pub fn address_text(a: &ResourceAddress) -> (&'static str, String) {
    match a {
        ResourceAddress::Dns { pattern } => ("dns", pattern.to_string()),
        ResourceAddress::Ip { ip } => ("ip", ip.to_string()),
        ResourceAddress::Cidr { cidr } => ("cidr", cidr.to_string()),
        ResourceAddress::Internet => ("internet", String::new()),
    }
}

/// `tcp/22 tcp/8000-8100 udp icmp`.
pub fn filters_text(filters: &[Filter]) -> String {
    filters
        .iter()
        .map(|f| {
            let p = match f.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Icmp => "icmp",
            };
            match f.ports {
                Some(r) if r.start() == r.end() => format!("{p}/{}", r.start()),
                Some(r) => format!("{p}/{}-{}", r.start(), r.end()),
                None => p.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses the filter text into the API's JSON filters.
fn filters_json(text: &str) -> Result<Vec<Value>, String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (proto, ports) = match t.split_once('/') {
                Some((p, r)) => (p, Some(r)),
                None => (t, None),
            };
            let proto = proto.to_ascii_lowercase();
            if !matches!(proto.as_str(), "tcp" | "udp" | "icmp") {
                return Err(format!("`{t}`: the protocol must be tcp, udp or icmp"));
            }
            let port = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("`{t}`: `{s}` is not a port (1–65535)"))
            };
            Ok(match ports {
                None => json!({ "protocol": proto }),
                Some(r) => {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    json!({ "protocol": proto, "ports": { "start": port(a)?, "end": port(b)? } })
                }
            })
        })
        .collect()
}

/// What the form holds, to re-show it with errors.
#[derive(Debug, Default)]
struct Input {
    name: String,
    kind: String,
    address: String,
    filters: String,
    sites: Vec<String>,
}

impl Input {
    fn from_form(f: &FormData) -> Self {
        Self {
            name: f.text("name"),
            kind: f.text("kind"),
            address: f.text("address"),
            filters: f.text("filters"),
            sites: f.all("site_ids").into_iter().map(str::to_owned).collect(),
        }
    }

    fn from_resource(r: &Resource) -> Self {
        let (kind, address) = address_text(&r.address);
        Self {
            name: r.name.as_str().to_owned(),
            kind: kind.to_owned(),
            address,
            filters: filters_text(&r.filters),
            sites: r.site_ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn validate(&self) -> Result<NewResource, Errors> {
        let mut errors = Errors::default();
        let address = match self.kind.as_str() {
            "dns" => json!({ "kind": "dns", "pattern": self.address }),
            "ip" => json!({ "kind": "ip", "ip": self.address }),
            "cidr" => json!({ "kind": "cidr", "cidr": self.address }),
            "internet" => json!({ "kind": "internet" }),
            _ => {
                errors.add("kind", "choose DNS, IP, CIDR or Internet");
                Value::Null
            }
        };
        if self.kind != "internet" && self.address.is_empty() && errors.is_empty() {
            errors.add("address", "must not be empty");
        }
        let filters = filters_json(&self.filters).unwrap_or_else(|m| {
            errors.add("filters", m);
            vec![]
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        let body = json!({
            "name": self.name,
            "address": address,
            "filters": filters,
            "site_ids": self.sites,
        });
        parse_json::<ResourceIn>(body.to_string().as_bytes())
            .map(NewResource::from)
            .map_err(|e| {
                Errors::from_api(e, |f| match head(f).as_str() {
                    "site_ids" => "site_ids".into(),
                    other => other.to_owned(),
                })
                .unwrap_or_default()
            })
    }
}

fn form_markup(
    session: &Session,
    action: &str,
    input: &Input,
    sites: &[Site],
    errors: &Errors,
    button: &str,
) -> Markup {
    let kinds = [
        ("dns", "DNS name or pattern"),
        ("ip", "IP address"),
        ("cidr", "CIDR network"),
        ("internet", "Internet (everything else)"),
    ];
    html! {
        (general_errors(errors))
        form.resource-form method="post" action=(action) {
            (csrf(session))
            (field(errors, "name", "Name", html! {
                input #name name="name" value=(input.name) required maxlength="255";
            }))
            (field(errors, "kind", "Type", html! {
                select #kind name="kind" {
                    @for (k, label) in kinds {
                        option value=(k) selected[input.kind == k] { (label) }
                    }
                }
            }))
            (field(errors, "address", "Address", html! {
                input #address name="address" value=(input.address)
                    placeholder="app.corp, *.corp, **.corp, 10.0.0.5 or 10.1.0.0/16";
                p.hint { "DNS: " code { "app.corp" } " exactly, " code { "*.corp" } " one label below, "
                    code { "**.corp" } " the name and any depth below. Empty for Internet." }
            }))
            (field(errors, "filters", "Traffic filters", html! {
                input #filters name="filters" value=(input.filters) placeholder="tcp/443 tcp/8000-8100 udp/53 icmp";
                p.hint { "Empty allows all traffic." }
            }))
            (field(errors, "site_ids", "Sites", html! {
                div.checks {
                    @for s in sites {
                        @let id = s.id.to_string();
                        label.check {
                            input type="checkbox" name="site_ids" value=(id) checked[input.sites.contains(&id)];
                            " " (s.name)
                        }
                    }
                    @if sites.is_empty() { p.muted { "No sites yet." } }
                }
            }))
            button.primary type="submit" { (button) }
        }
    }
}

pub async fn list(State(state): State<AppState>, session: Session) -> WebResult {
    let rs = state.store.list_resources(10_000, 0).await?;
    let sites = state.store.list_sites().await?;
    Ok(page(
        &session,
        "/resources",
        "Resources",
        html! {
            p { a.button.primary href="/resources/new" { "New resource" } }
            div.table-wrap {
                table.sortable #resources {
                    thead { tr { th { "Name" } th { "Type" } th { "Address" } th { "Filters" } th { "Sites" } } }
                    tbody {
                        @for r in &rs {
                            @let (kind, address) = address_text(&r.address);
                            tr {
                                td { a href={ "/resources/" (r.id) } { (r.name.as_str()) } }
                                td { (kind) }
                                td.mono { (address) }
                                td.mono { @if r.filters.is_empty() { span.muted { "all traffic" } } @else { (filters_text(&r.filters)) } }
                                td { (r.site_ids.iter().filter_map(|id| sites.iter().find(|s| s.id == *id)).map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")) }
                            }
                        }
                        @if rs.is_empty() { tr { td colspan="5" .muted { "No resources yet." } } }
                    }
                }
            }
        },
    )
    .into_response())
}

pub async fn new(State(state): State<AppState>, session: Session) -> WebResult {
    let sites = state.store.list_sites().await?;
    let input = Input {
        kind: "dns".into(),
        // One site: preselect it, the common case.
        sites: match sites.as_slice() {
            [one] => vec![one.id.to_string()],
            _ => vec![],
        },
        ..Input::default()
    };
    Ok(page(
        &session,
        "/resources",
        "New resource",
        form_markup(
            &session,
            "/resources",
            &input,
            &sites,
            &Errors::default(),
            "Create resource",
        ),
    )
    .into_response())
}

pub async fn create(State(state): State<AppState>, Post { session, form }: Post) -> WebResult {
    let input = Input::from_form(&form);
    let result = match input.validate() {
        Ok(new) => state
            .store
            .create_resource(new, crate::api::now())
            .await
            .map_err(|e| Errors::from_api(e.into(), head)),
        Err(errors) => Err(Ok(errors)),
    };
    match result {
        Ok(r) => {
            state.publish(Change::ResourceUpserted(r.id.0));
            Ok(Redirect::to("/resources").into_response())
        }
        Err(errors) => {
            let errors = errors?;
            let sites = state.store.list_sites().await?;
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                page(
                    &session,
                    "/resources",
                    "New resource",
                    form_markup(
                        &session,
                        "/resources",
                        &input,
                        &sites,
                        &errors,
                        "Create resource",
                    ),
                ),
            )
                .into_response())
        }
    }
}

fn edit_page(
    session: &Session,
    id: ResourceId,
    input: &Input,
    sites: &[Site],
    errors: &Errors,
) -> Markup {
    let action = format!("/resources/{id}");
    page(
        session,
        "/resources",
        &format!("Resource {}", input.name),
        html! {
            (form_markup(session, &action, input, sites, errors, "Save"))
            section.card.danger-zone {
                h2 { "Delete" }
                p { "Deletes the resource and its policies; access to it is revoked at once." }
                (post_button(session, &format!("/resources/{id}/delete"), "Delete resource", "danger", Some("Delete this resource?")))
            }
        },
    )
}

pub async fn edit(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> WebResult {
    let r = state.store.get_resource(resource_id(&id)?).await?;
    let sites = state.store.list_sites().await?;
    Ok(edit_page(
        &session,
        r.id,
        &Input::from_resource(&r),
        &sites,
        &Errors::default(),
    )
    .into_response())
}

pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Post { session, form }: Post,
) -> WebResult {
    let id = resource_id(&id)?;
    let input = Input::from_form(&form);
    let result = match input.validate() {
        Ok(new) => state
            .store
            .update_resource(id, new)
            .await
            .map_err(|e| Errors::from_api(e.into(), head)),
        Err(errors) => Err(Ok(errors)),
    };
    match result {
        Ok(_) => {
            state.publish(Change::ResourceUpserted(id.0));
            Ok(Redirect::to("/resources").into_response())
        }
        Err(errors) => {
            let errors = errors?;
            let sites = state.store.list_sites().await?;
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                edit_page(&session, id, &input, &sites, &errors),
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
    let id = resource_id(&id)?;
    state.store.delete_resource(id).await?;
    state.publish(Change::ResourceDeleted(id.0));
    Ok(Redirect::to("/resources").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: &str, address: &str, filters: &str) -> Input {
        Input {
            name: "app".into(),
            kind: kind.into(),
            address: address.into(),
            filters: filters.into(),
            sites: vec![],
        }
    }

    #[test]
    fn filter_text_round_trips() {
        let r = input("dns", "**.corp", "tcp/22, tcp/8000-8100 udp icmp")
            .validate()
            .unwrap();
        assert_eq!(filters_text(&r.filters), "tcp/22 tcp/8000-8100 udp icmp");
    }

    #[test]
    fn bad_inputs_name_their_fields() {
        let e = input("cidr", "10.0.0.1/24", "").validate().unwrap_err();
        assert_eq!(e.for_field("address").len(), 1, "{e:?}");
        let e = input("ip", "10.0.0.1", "tcp/9-1").validate().unwrap_err();
        assert_eq!(e.for_field("filters").len(), 1, "{e:?}");
        let e = input("ip", "10.0.0.1", "sctp/1").validate().unwrap_err();
        assert_eq!(e.for_field("filters").len(), 1, "{e:?}");
        let e = input("dns", "", "").validate().unwrap_err();
        assert_eq!(e.for_field("address").len(), 1, "{e:?}");
        assert!(input("internet", "", "").validate().is_ok());
    }
}
