//! The flow log (every authorisation decision) with filters and paging.

use axum::{
    extract::{RawQuery, State},
    response::IntoResponse,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use keyhole_proto::{ClientId, ResourceId};
use maud::html;
use uuid::Uuid;

use super::{
    form::{Errors, FormData},
    layout::{WebResult, badge, field, page, time},
    session::Session,
};
use crate::{
    policy::ActorId,
    state::AppState,
    store::{FlowDecision, FlowLogFilter},
};

const PAGE: i64 = 100;

/// `datetime-local` values (`2025-03-01T09:30`) are read as UTC; RFC 3339
/// is accepted too.
fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S"))
                .ok()
                .map(|n| n.and_utc())
        })
}

fn filter(q: &FormData, errors: &mut Errors) -> FlowLogFilter {
    let mut uuid = |name: &str| {
        let v = q.text(name);
        if v.is_empty() {
            return None;
        }
        Uuid::parse_str(&v).ok().or_else(|| {
            errors.add(name, "is not a valid id");
            None
        })
    };
    let actor_id = uuid("actor_id");
    let client_id = uuid("client_id").map(ClientId);
    let resource_id = uuid("resource_id").map(ResourceId);
    let decision = match q.text("decision").as_str() {
        "allow" => Some(FlowDecision::Allow),
        "deny" => Some(FlowDecision::Deny),
        "" => None,
        _ => {
            errors.add("decision", "must be allow or deny");
            None
        }
    };
    let mut time = |name: &str| {
        let v = q.text(name);
        if v.is_empty() {
            return None;
        }
        parse_time(&v).or_else(|| {
            errors.add(name, "is not a date and time (YYYY-MM-DDTHH:MM, UTC)");
            None
        })
    };
    let from = time("from");
    let until = time("until");
    if let (Some(f), Some(u)) = (from, until)
        && f > u
    {
        errors.add("until", "is before From");
    }
    FlowLogFilter {
        actor_id,
        client_id,
        resource_id,
        decision,
        from,
        until,
    }
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> WebResult {
    let q = FormData::parse(raw.unwrap_or_default().as_bytes());
    let mut errors = Errors::default();
    let f = filter(&q, &mut errors);
    let offset = q
        .text("offset")
        .parse::<i64>()
        .unwrap_or(0)
        .clamp(0, 1_000_000);
    let entries = if errors.is_empty() {
        state.store.query_flow_log(f, PAGE + 1, offset).await?
    } else {
        vec![]
    };
    let more = entries.len() as i64 > PAGE;
    let users = state.store.list_users(100_000, 0).await?;
    let sas = state.store.list_service_accounts(100_000, 0).await?;
    let resources = state.store.list_resources(100_000, 0).await?;
    let clients = state.store.list_clients(None, 100_000, 0).await?;
    let actor_name = |a: &ActorId| {
        match a {
            ActorId::User(u) => users.iter().find(|x| x.id == *u).map(|x| x.email.clone()),
            ActorId::ServiceAccount(s) => sas.iter().find(|x| x.id == *s).map(|x| x.name.clone()),
        }
        .unwrap_or_else(|| "(deleted)".into())
    };
    let next_query = {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for name in [
            "actor_id",
            "client_id",
            "resource_id",
            "decision",
            "from",
            "until",
        ] {
            s.append_pair(name, &q.text(name));
        }
        s.append_pair("offset", &(offset + PAGE).to_string());
        s.finish()
    };
    let sel = |name: &str, v: &str| q.text(name) == v;
    Ok(page(
        &session,
        "/flow-log",
        "Flow log",
        html! {
            form.filters method="get" action="/flow-log" {
                (field(&errors, "actor_id", "Actor", html! {
                    select #actor_id name="actor_id" {
                        option value="" { "any" }
                        @for u in &users { @let id = u.id.to_string(); option value=(id) selected[sel("actor_id", &id)] { (u.email) } }
                        @for s in &sas { @let id = s.id.to_string(); option value=(id) selected[sel("actor_id", &id)] { (s.name) } }
                    }
                }))
                (field(&errors, "resource_id", "Resource", html! {
                    select #resource_id name="resource_id" {
                        option value="" { "any" }
                        @for r in &resources { @let id = r.id.to_string(); option value=(id) selected[sel("resource_id", &id)] { (r.name.as_str()) } }
                    }
                }))
                (field(&errors, "client_id", "Client", html! {
                    select #client_id name="client_id" {
                        option value="" { "any" }
                        @for c in &clients { @let id = c.id.to_string(); option value=(id) selected[sel("client_id", &id)] { (c.name) } }
                    }
                }))
                (field(&errors, "decision", "Decision", html! {
                    select #decision name="decision" {
                        option value="" { "any" }
                        option value="allow" selected[sel("decision", "allow")] { "allow" }
                        option value="deny" selected[sel("decision", "deny")] { "deny" }
                    }
                }))
                (field(&errors, "from", "From (UTC)", html! { input #from type="datetime-local" name="from" value=(q.text("from")); }))
                (field(&errors, "until", "Until (UTC)", html! { input #until type="datetime-local" name="until" value=(q.text("until")); }))
                div.field { button.primary type="submit" { "Filter" } }
            }
            div.table-wrap {
                table.sortable #flow-log {
                    thead { tr { th { "Time" } th { "Decision" } th { "Actor" } th { "Resource" } th { "Client" } th { "Reason" } } }
                    tbody {
                        @for e in entries.iter().take(PAGE as usize) {
                            tr {
                                td { (time(Some(e.at))) }
                                td { (badge(e.decision == FlowDecision::Allow, "allow", "deny")) }
                                td { (actor_name(&e.actor)) }
                                td { (resources.iter().find(|r| r.id == e.resource_id).map(|r| r.name.as_str().to_owned()).unwrap_or_else(|| e.resource_id.to_string())) }
                                td { (clients.iter().find(|c| c.id == e.client_id).map(|c| c.name.clone()).unwrap_or_else(|| e.client_id.to_string())) }
                                td { (e.reason.as_deref().unwrap_or("")) }
                            }
                        }
                        @if entries.is_empty() { tr { td colspan="6" .muted { "No matching entries." } } }
                    }
                }
            }
            @if more { p { a.button href={ "/flow-log?" (next_query) } { "Older entries" } } }
        },
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_bad_filters() {
        assert!(parse_time("2025-03-01T09:30").is_some());
        assert!(parse_time("2025-03-01T09:30:00Z").is_some());
        assert!(parse_time("yesterday").is_none());
        let mut errors = Errors::default();
        let q = FormData::parse(
            b"decision=maybe&from=2025-03-02T00:00&until=2025-03-01T00:00&actor_id=x",
        );
        filter(&q, &mut errors);
        for f in ["decision", "until", "actor_id"] {
            assert_eq!(errors.for_field(f).len(), 1, "{f}: {errors:?}");
        }
    }
}
