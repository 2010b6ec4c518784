//! `/clients`: devices. Disabling or deleting one revokes its access.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use keyhole_proto::ClientId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    auth::Admin,
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiQuery, parse_param, path_id},
    groups::Member,
    page::{Page, PageParams, page_schema},
};
use crate::{
    policy::{ActorId, ServiceAccountId, UserId},
    state::{AppState, Change},
    store::ClientRecord,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientOut {
    pub id: Uuid,
    pub owner: Member,
    pub name: String,
    /// WireGuard public key, base64.
    pub public_key: String,
    pub ipv4: String,
    pub ipv6: String,
    pub disabled: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl From<ClientRecord> for ClientOut {
    fn from(c: ClientRecord) -> Self {
        Self {
            id: c.id.0,
            owner: c.owner.into(),
            name: c.name,
            public_key: c.public_key.to_string(),
            ipv4: c.tunnel.ipv4.to_string(),
            ipv6: c.tunnel.ipv6.to_string(),
            disabled: c.disabled,
            last_seen_at: c.last_seen_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    /// A disabled client is disconnected and refused until enabled again.
    pub disabled: bool,
}

page_schema!(ClientPage, ClientOut);

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClientQuery {
    /// Only clients of this user.
    #[param(value_type = Option<Uuid>)]
    pub user_id: Option<String>,
    /// Only clients of this service account.
    #[param(value_type = Option<Uuid>)]
    pub service_account_id: Option<String>,
}

fn client_id(raw: &str) -> ApiResult<ClientId> {
    Ok(ClientId(path_id(raw, "client")?))
}

/// Clients, ordered by name then id.
#[utoipa::path(get, path = "/clients", tag = "clients", params(ClientQuery, PageParams),
    responses((status = 200, description = "A page of clients", body = ClientPage)))]
pub async fn list_clients(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ClientQuery>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ClientOut>>> {
    let user = parse_param::<Uuid>(q.user_id.as_deref(), "user_id", "a UUID")?;
    let sa = parse_param::<Uuid>(
        q.service_account_id.as_deref(),
        "service_account_id",
        "a UUID",
    )?;
    let owner = match (user, sa) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "service_account_id",
                "give user_id or service_account_id, not both",
            ));
        }
        (Some(u), None) => Some(ActorId::User(UserId(u))),
        (None, Some(s)) => Some(ActorId::ServiceAccount(ServiceAccountId(s))),
        (None, None) => None,
    };
    let page = params.validate()?;
    let (limit, offset) = page.fetch();
    let rows = state.store.list_clients(owner, limit, offset).await?;
    Ok(Json(page.page(rows, ClientOut::from)))
}

#[utoipa::path(get, path = "/clients/{id}", tag = "clients",
    params(("id" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "The client", body = ClientOut)))]
pub async fn get_client(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ClientOut>> {
    Ok(Json(state.store.get_client(client_id(&id)?).await?.into()))
}

/// Disables or re-enables a client.
#[utoipa::path(patch, path = "/clients/{id}", tag = "clients", request_body = ClientPatch,
    params(("id" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "Updated", body = ClientOut)))]
pub async fn update_client(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ClientPatch>,
) -> ApiResult<Json<ClientOut>> {
    let id = client_id(&id)?;
    state.store.set_client_disabled(id, patch.disabled).await?;
    state.publish(Change::ClientChanged(id.0));
    Ok(Json(state.store.get_client(id).await?.into()))
}

/// Deletes (revokes) a client and its `keyhole login` sign-ins; its
/// tunnel addresses are never reused.
#[utoipa::path(delete, path = "/clients/{id}", tag = "clients",
    params(("id" = Uuid, Path, description = "Client id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_client(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = client_id(&id)?;
    let client = state.store.get_client(id).await?;
    state.store.delete_client(id).await?;
    state.publish(Change::ClientDeleted(id.0));
    // Its `keyhole login` tokens go too, else it would come back as a
    // new client.
    for token in state
        .store
        .revoke_device_sign_ins(client.public_key)
        .await?
    {
        state.publish(Change::TokenRevoked(token));
    }
    Ok(StatusCode::NO_CONTENT)
}
