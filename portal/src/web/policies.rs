//! Policies: a group may reach a resource, when enabled and its conditions
//! hold (source CIDRs, sign-in methods, weekly time windows in a zone).
//!
//! Like resources, the form becomes the REST API's JSON and goes through
//! `api::policies::PolicyIn` and its validation.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect},
};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::{
    form::{Errors, FormData},
    layout::{WebResult, badge, csrf, field, general_errors, page, post_button},
    session::{Post, Session},
};
use crate::{
    api::{error::ApiError, extract::parse_json, extract::path_id, policies::PolicyIn},
    policy::{Conditions, PolicyId, SignInMethod},
    state::{AppState, Change},
    store::{Group, NewPolicy, PolicyFilter, PolicyRecord},
};
use keyhole_proto::Resource;

const METHODS: [(&str, &str); 3] = [
    ("password", "Password"),
    ("oidc", "OIDC"),
    ("service_token", "Service token"),
];

fn policy_id(raw: &str) -> Result<PolicyId, ApiError> {
    Ok(PolicyId(path_id(raw, "policy")?))
}

fn method_name(m: SignInMethod) -> &'static str {
    match m {
        SignInMethod::Password => "password",
        SignInMethod::Oidc => "oidc",
        SignInMethod::ServiceToken => "service_token",
    }
}

#[derive(Debug, Default)]
struct Input {
    group_id: String,
    resource_id: String,
    enabled: bool,
    description: String,
    source_cidrs: String,
    methods: Vec<String>,
    timezone: String,
    windows: String,
}

/// `mon,tue,wed 09:00-17:00`, one window per line.
fn windows_text(c: &Conditions) -> String {
    c.schedule
        .as_ref()
        .map(|s| {
            s.windows
                .iter()
                .map(|w| {
                    let days = w
                        .days
                        .iter()
                        .map(|d| d.to_string().to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(",");
                    format!(
                        "{days} {}-{}",
                        w.start.format("%H:%M"),
                        w.end.format("%H:%M")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn windows_json(text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let bad =
                || format!("`{line}`: write days then a time range, e.g. `mon,tue 09:00-17:00`");
            let (days, range) = line.rsplit_once(char::is_whitespace).ok_or_else(bad)?;
            let (start, end) = range.split_once('-').ok_or_else(bad)?;
            let days: Vec<&str> = days
                .split([',', ' '])
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect();
            Ok(json!({ "days": days, "start": start, "end": end }))
        })
        .collect()
}

impl Input {
    fn from_form(f: &FormData) -> Self {
        Self {
            group_id: f.text("group_id"),
            resource_id: f.text("resource_id"),
            enabled: f.checked("enabled"),
            description: f.text("description"),
            source_cidrs: f.text("source_cidrs"),
            methods: f
                .all("sign_in_methods")
                .into_iter()
                .map(str::to_owned)
                .collect(),
            timezone: f.text("timezone"),
            windows: f.get("windows").unwrap_or("").trim().to_owned(),
        }
    }

    fn from_record(p: &PolicyRecord) -> Self {
        let c = &p.policy.conditions;
        Self {
            group_id: p.policy.group_id.to_string(),
            resource_id: p.policy.resource_id.to_string(),
            enabled: p.policy.enabled,
            description: p.description.clone(),
            source_cidrs: c
                .source_cidrs
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            methods: c
                .sign_in_methods
                .iter()
                .map(|m| method_name(*m).to_owned())
                .collect(),
            timezone: c
                .schedule
                .as_ref()
                .map(|s| s.timezone.name().to_owned())
                .unwrap_or_default(),
            windows: windows_text(c),
        }
    }

    fn validate(&self) -> Result<NewPolicy, Errors> {
        let mut errors = Errors::default();
        let cidrs: Vec<&str> = self
            .source_cidrs
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .collect();
        let schedule = if self.timezone.is_empty() && self.windows.is_empty() {
            Value::Null
        } else {
            if self.timezone.is_empty() {
                errors.add(
                    "timezone",
                    "a schedule needs a time zone, e.g. Europe/Berlin",
                );
            }
            match windows_json(&self.windows) {
                Ok(w) => json!({ "timezone": self.timezone, "windows": w }),
                Err(m) => {
                    errors.add("windows", m);
                    Value::Null
                }
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let body = json!({
            "group_id": self.group_id,
            "resource_id": self.resource_id,
            "enabled": self.enabled,
            "description": self.description,
            "conditions": {
                "source_cidrs": cidrs,
                "sign_in_methods": self.methods,
                "schedule": schedule,
            },
        });
        let map = |f: &str| -> String {
            let f = f.strip_prefix("conditions.").unwrap_or(f);
            match super::form::head(f).as_str() {
                "schedule" if f.contains("timezone") => "timezone".into(),
                "schedule" => "windows".into(),
                "" => "conditions".into(),
                other => other.to_owned(),
            }
        };
        parse_json::<PolicyIn>(body.to_string().as_bytes())
            .and_then(PolicyIn::validate)
            .map_err(|e| Errors::from_api(e, map).unwrap_or_default())
    }
}

fn form_markup(
    session: &Session,
    action: &str,
    input: &Input,
    groups: &[Group],
    resources: &[Resource],
    errors: &Errors,
    button: &str,
) -> Markup {
    html! {
        (general_errors(errors))
        form.policy-form method="post" action=(action) {
            (csrf(session))
            (field(errors, "group_id", "Group", html! {
                select #group_id name="group_id" {
                    option value="" { "— choose —" }
                    @for g in groups {
                        @let id = g.id.to_string();
                        option value=(id) selected[input.group_id == id] { (g.name) }
                    }
                }
            }))
            (field(errors, "resource_id", "Resource", html! {
                select #resource_id name="resource_id" {
                    option value="" { "— choose —" }
                    @for r in resources {
                        @let id = r.id.to_string();
                        option value=(id) selected[input.resource_id == id] { (r.name.as_str()) }
                    }
                }
            }))
            (field(errors, "enabled", "Status", html! {
                label.check { input #enabled type="checkbox" name="enabled" checked[input.enabled]; " Enabled" }
            }))
            (field(errors, "description", "Description", html! {
                input #description name="description" value=(input.description) maxlength="1000";
            }))
            fieldset {
                legend { "Conditions (all optional)" }
                (field(errors, "source_cidrs", "Client source networks", html! {
                    input #source_cidrs name="source_cidrs" value=(input.source_cidrs) placeholder="203.0.113.0/24 2001:db8::/32";
                    p.hint { "The client's public address must be in one of these. Empty: anywhere." }
                }))
                (field(errors, "sign_in_methods", "Sign-in methods", html! {
                    div.checks {
                        @for (m, label) in METHODS {
                            label.check {
                                input type="checkbox" name="sign_in_methods" value=(m) checked[input.methods.iter().any(|x| x == m)];
                                " " (label)
                            }
                        }
                    }
                    p.hint { "None checked: any." }
                }))
                (field(errors, "timezone", "Schedule time zone", html! {
                    input #timezone name="timezone" value=(input.timezone) placeholder="Europe/Berlin";
                }))
                (field(errors, "windows", "Schedule windows", html! {
                    textarea #windows name="windows" rows="3" placeholder="mon,tue,wed,thu,fri 08:00-18:00" { (input.windows) }
                    p.hint { "One window per line; an end before the start crosses midnight. Empty: always." }
                }))
            }
            button.primary type="submit" { (button) }
        }
    }
}

fn conditions_summary(c: &Conditions) -> String {
    let mut parts = Vec::new();
    if !c.source_cidrs.is_empty() {
        parts.push(format!(
            "from {}",
            c.source_cidrs
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !c.sign_in_methods.is_empty() {
        parts.push(format!(
            "via {}",
            c.sign_in_methods
                .iter()
                .map(|m| method_name(*m))
                .collect::<Vec<_>>()
                .join("/")
        ));
    }
    if let Some(s) = &c.schedule {
        parts.push(format!(
            "{} ({})",
            windows_text(c).replace('\n', "; "),
            s.timezone.name()
        ));
    }
    parts.join(" · ")
}

pub async fn list(State(state): State<AppState>, session: Session) -> WebResult {
    let ps = state
        .store
        .list_policies(PolicyFilter::default(), 100_000, 0)
        .await?;
    let groups = state.store.list_groups(100_000, 0).await?;
    let resources = state.store.list_resources(100_000, 0).await?;
    Ok(page(
        &session,
        "/policies",
        "Policies",
        html! {
            p { a.button.primary href="/policies/new" { "New policy" } }
            div.table-wrap {
                table.sortable #policies {
                    thead { tr { th { "Group" } th { "Resource" } th { "Status" } th { "Conditions" } th { "Description" } th { "" } } }
                    tbody {
                        @for p in &ps {
                            tr {
                                td { (groups.iter().find(|g| g.id == p.policy.group_id).map(|g| g.name.as_str()).unwrap_or("?")) }
                                td { (resources.iter().find(|r| r.id == p.policy.resource_id).map(|r| r.name.as_str()).unwrap_or("?")) }
                                td { (badge(p.policy.enabled, "enabled", "disabled")) }
                                td { @let s = conditions_summary(&p.policy.conditions); @if s.is_empty() { span.muted { "none" } } @else { (s) } }
                                td { (p.description) }
                                td { a href={ "/policies/" (p.policy.id) } { "Edit" } }
                            }
                        }
                        @if ps.is_empty() { tr { td colspan="6" .muted { "No policies yet: nobody can reach anything (default deny)." } } }
                    }
                }
            }
        },
    )
    .into_response())
}

async fn options(state: &AppState) -> WebResult<(Vec<Group>, Vec<Resource>)> {
    Ok((
        state.store.list_groups(100_000, 0).await?,
        state.store.list_resources(100_000, 0).await?,
    ))
}

pub async fn new(State(state): State<AppState>, session: Session) -> WebResult {
    let (groups, resources) = options(&state).await?;
    let input = Input {
        enabled: true,
        ..Input::default()
    };
    Ok(page(
        &session,
        "/policies",
        "New policy",
        form_markup(
            &session,
            "/policies",
            &input,
            &groups,
            &resources,
            &Errors::default(),
            "Create policy",
        ),
    )
    .into_response())
}

pub async fn create(State(state): State<AppState>, Post { session, form }: Post) -> WebResult {
    let input = Input::from_form(&form);
    let result = match input.validate() {
        Ok(new) => state
            .store
            .create_policy(new, crate::api::now())
            .await
            .map_err(|e| Errors::from_api(e.into(), super::form::head)),
        Err(e) => Err(Ok(e)),
    };
    match result {
        Ok(p) => {
            state.publish(Change::PolicyChanged(p.policy.id.0));
            Ok(Redirect::to("/policies").into_response())
        }
        Err(errors) => {
            let errors = errors?;
            let (groups, resources) = options(&state).await?;
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                page(
                    &session,
                    "/policies",
                    "New policy",
                    form_markup(
                        &session,
                        "/policies",
                        &input,
                        &groups,
                        &resources,
                        &errors,
                        "Create policy",
                    ),
                ),
            )
                .into_response())
        }
    }
}

fn edit_page(
    session: &Session,
    id: PolicyId,
    input: &Input,
    groups: &[Group],
    resources: &[Resource],
    errors: &Errors,
) -> Markup {
    page(
        session,
        "/policies",
        "Edit policy",
        html! {
            (form_markup(session, &format!("/policies/{id}"), input, groups, resources, errors, "Save"))
            section.card.danger-zone {
                h2 { "Delete" }
                (post_button(session, &format!("/policies/{id}/delete"), "Delete policy", "danger", Some("Delete this policy? Access it granted is revoked.")))
            }
        },
    )
}

pub async fn edit(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> WebResult {
    let p = state.store.get_policy(policy_id(&id)?).await?;
    let (groups, resources) = options(&state).await?;
    Ok(edit_page(
        &session,
        p.policy.id,
        &Input::from_record(&p),
        &groups,
        &resources,
        &Errors::default(),
    )
    .into_response())
}

pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Post { session, form }: Post,
) -> WebResult {
    let id = policy_id(&id)?;
    let input = Input::from_form(&form);
    let result = match input.validate() {
        Ok(new) => state
            .store
            .update_policy(id, new)
            .await
            .map_err(|e| Errors::from_api(e.into(), super::form::head)),
        Err(e) => Err(Ok(e)),
    };
    match result {
        Ok(_) => {
            state.publish(Change::PolicyChanged(id.0));
            Ok(Redirect::to("/policies").into_response())
        }
        Err(errors) => {
            let errors = errors?;
            let (groups, resources) = options(&state).await?;
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                edit_page(&session, id, &input, &groups, &resources, &errors),
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
    let id = policy_id(&id)?;
    state.store.delete_policy(id).await?;
    state.publish(Change::PolicyDeleted(id.0));
    Ok(Redirect::to("/policies").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(windows: &str, tz: &str) -> Input {
        Input {
            group_id: uuid::Uuid::new_v4().to_string(),
            resource_id: uuid::Uuid::new_v4().to_string(),
            enabled: true,
            timezone: tz.into(),
            windows: windows.into(),
            source_cidrs: "203.0.113.0/24".into(),
            methods: vec!["password".into()],
            ..Input::default()
        }
    }

    #[test]
    fn schedule_round_trips_through_the_api_types() {
        let p = input("mon,tue 09:00-17:30\nsat 22:00-06:00", "Europe/Berlin")
            .validate()
            .unwrap();
        assert_eq!(
            windows_text(&p.conditions),
            "mon,tue 09:00-17:30\nsat 22:00-06:00"
        );
        assert_eq!(p.conditions.source_cidrs.len(), 1);
    }

    #[test]
    fn errors_land_on_form_fields() {
        let e = input("mon 09:00-17:00", "Mars/Olympus")
            .validate()
            .unwrap_err();
        assert_eq!(e.for_field("timezone").len(), 1, "{e:?}");
        let e = input("funday 09:00-17:00", "UTC").validate().unwrap_err();
        assert_eq!(e.for_field("windows").len(), 1, "{e:?}");
        let e = input("mon 25:00-17:00", "UTC").validate().unwrap_err();
        assert_eq!(e.for_field("windows").len(), 1, "{e:?}");
        let mut i = input("", "");
        i.source_cidrs = "10.0.0.0/99".into();
        let e = i.validate().unwrap_err();
        assert_eq!(e.for_field("source_cidrs").len(), 1, "{e:?}");
        let mut i = input("", "");
        i.group_id = String::new();
        let e = i.validate().unwrap_err();
        assert_eq!(e.for_field("group_id").len(), 1, "{e:?}");
    }
}
