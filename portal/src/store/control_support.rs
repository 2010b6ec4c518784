//! What the binary and the control channel need from the store besides the
//! entity methods: a health probe, deployment settings (key/value) and the
//! batched flow-log writer.

use uuid::Uuid;

use super::{FlowDecision, FlowLogEntry, Result, Store, actors::actor_columns, ms};

/// Rows per INSERT statement (10 binds each). On PostgreSQL the binds
/// are numbered (`$n`). On SQLite they are anonymous (`?`): sqlx asks
/// SQLite for every bind's name, and for numbered ones SQLite finds it by
/// a linear scan, so a numbered statement costs quadratic time in its
/// binds (at 200 rows that lookup was a fifth of the portal's CPU in the
/// authorisation benchmark); anonymous binds have no names to scan, so
/// SQLite takes bigger statements and fewer round trips to its thread.
const FLOW_LOG_ROWS_PER_STATEMENT_PG: usize = 20;
const FLOW_LOG_ROWS_PER_STATEMENT_SQLITE: usize = 100;

impl Store {
    /// A trivial query, to tell whether the database answers.
    pub async fn ping_db(&self) -> Result<()> {
        let _: (i64,) = sqlx::query_as("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    pub async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(v,)| v))
    }

    /// Stores `value` unless `key` is already set; returns whether it did.
    pub async fn insert_setting_if_absent(&self, key: &str, value: &str) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn has_any_user(&self) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM users LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    pub async fn has_any_site(&self) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM sites LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Appends many flow-log entries in one transaction, a few hundred rows
    /// per statement: the control channel logs every decision, so one
    /// round trip per entry would cap the authorisation rate.
    pub async fn append_flow_log_batch(&self, entries: &[FlowLogEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let sqlite = self.backend == super::Backend::Sqlite;
        let rows_per_statement = if sqlite {
            FLOW_LOG_ROWS_PER_STATEMENT_SQLITE
        } else {
            FLOW_LOG_ROWS_PER_STATEMENT_PG
        };
        let mut tx = self.pool.begin().await?;
        for chunk in entries.chunks(rows_per_statement) {
            let mut sql = String::from(
                "INSERT INTO flow_log (id, at, actor_kind, actor_id, client_id, resource_id, \
                 gateway_id, policy_id, decision, reason) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 10;
                if i > 0 {
                    sql.push(',');
                }
                if sqlite {
                    sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                    continue;
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9,
                    b + 10
                ));
            }
            let mut q = sqlx::query(&sql);
            for e in chunk {
                let (kind, actor_id) = match actor_columns(e.actor) {
                    (Some(u), _) => ("user", u),
                    (_, Some(s)) => ("service_account", s),
                    (None, None) => unreachable!("actor_columns sets exactly one"),
                };
                q = q
                    // Time-ordered: new rows go to the end of the
                    // primary-key index instead of random pages of it.
                    .bind(Uuid::now_v7().to_string())
                    .bind(ms(e.at))
                    .bind(kind)
                    .bind(actor_id)
                    .bind(e.client_id.to_string())
                    .bind(e.resource_id.to_string())
                    .bind(e.gateway_id.map(|g| g.to_string()))
                    .bind(e.policy_id.map(|p| p.to_string()))
                    .bind(match e.decision {
                        FlowDecision::Allow => "allow",
                        FlowDecision::Deny => "deny",
                    })
                    .bind(e.reason.clone());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
