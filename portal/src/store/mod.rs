//! Persistent state: sqlx over SQLite (embedded default) or PostgreSQL.
//!
//! One code path serves both through sqlx's `Any` driver; the schema is
//! kept portable (see `migrations/*/0001_init.sql`): UUIDs as text, times
//! as unix milliseconds, flags as 0/1, structured values as JSON text.
//! Every multi-statement change runs in a transaction, so bad input leaves
//! nothing half-written. Secrets are stored only as SHA-256 hashes.
//!
//! Methods take `now` from the caller like the rest of the portal's logic.

mod actors;
mod actors_admin;
mod clients;
mod clients_admin;
mod control_support;
mod device_auth;
mod error;
mod flow_log;
mod flow_log_admin;
mod network;
mod network_admin;
mod oidc_users;
mod passwords;
mod resources;
mod resources_admin;
mod snapshot;
mod tokens;
mod tokens_admin;
mod web_sessions;

use std::{path::Path, str::FromStr};

use chrono::{DateTime, Utc};
use sqlx::{
    AnyPool, Executor as _,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
};
use uuid::Uuid;

pub use actors::{Group, ServiceAccount, User};
pub use actors_admin::UserUpdate;
pub use clients::ClientRecord;
pub use device_auth::{
    DeviceAuthStatus, DeviceAuthorization, DevicePoll, DeviceSignIn, NewDeviceAuthorization,
    normalize_user_code,
};
pub use error::StoreError;
pub use flow_log::{FlowDecision, FlowLogEntry};
pub use flow_log_admin::FlowLogFilter;
pub use network::{GatewayRecord, GatewayRegistration, RelayRecord, Site};
pub use oidc_users::OidcSync;
pub use resources::{NewPolicy, NewResource, PolicyRecord};
pub use resources_admin::PolicyFilter;
pub use tokens::{IssuedToken, TokenInfo, TokenKind, TokenOwner};
pub use tokens_admin::TokenRecord;
pub use web_sessions::{NewWebSession, WebSession, random_secret};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Name of the SQLite file inside the data directory.
pub const SQLITE_FILE: &str = "keyhole.sqlite3";

impl Store {
    /// The embedded SQLite database in `data_dir` (created if missing).
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(SQLITE_FILE);
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect(&url).await
    }

    /// Connect to `sqlite://…` or `postgres://…` and apply migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::invalid(
                "database_url",
                "must start with sqlite: or postgres:",
            ));
        };
        let options = AnyConnectOptions::from_str(url)?;
        // SQLite allows one writer at a time; more connections only add
        // lock contention.
        let max = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 16,
        };
        let mut pool_options = AnyPoolOptions::new().max_connections(max);
        if backend == Backend::Sqlite {
            // sqlx leaves SQLite in its defaults: a rollback journal with
            // synchronous=FULL, several fsyncs per commit (the flow log
            // commits many times a second). WAL with synchronous=NORMAL
            // fsyncs only at checkpoints and stays consistent after a crash;
            // a power loss can lose the last commits, not the database.
            pool_options = pool_options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect_with(options).await?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| StoreError::Corrupt(format!("bad uuid `{s}` in database")))
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}
