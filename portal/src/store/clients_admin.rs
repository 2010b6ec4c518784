//! Admin listing of client devices.

use super::{
    ClientRecord, Result, Store,
    actors::actor_columns,
    clients::{CLIENT_COLUMNS, ClientRow, client_from_row},
};
use crate::policy::ActorId;

impl Store {
    /// Clients (of one owner, or all) ordered by name then id.
    pub async fn list_clients(
        &self,
        owner: Option<ActorId>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<ClientRecord>> {
        let (user, sa) = owner.map(actor_columns).unwrap_or((None, None));
        let rows: Vec<ClientRow> = sqlx::query_as(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients \
             WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR service_account_id = $2) \
             ORDER BY name, id LIMIT $3 OFFSET $4"
        ))
        .bind(user)
        .bind(sa)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(client_from_row).collect()
    }
}
