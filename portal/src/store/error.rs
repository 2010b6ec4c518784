//! Store errors, classified so the API can answer 404/409/422.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    /// A unique value is taken (name, email, public key, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced entity does not exist.
    #[error("invalid reference: {0}")]
    Reference(String),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The database holds something this build cannot read.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("tunnel address pool exhausted")]
    AddressesExhausted,
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Db(sqlx::Error),
}

impl StoreError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    pub fn not_found(entity: &'static str) -> Self {
        Self::NotFound { entity }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            if db.is_unique_violation() {
                return Self::Conflict(db.message().to_owned());
            }
            if db.is_foreign_key_violation() {
                return Self::Reference(db.message().to_owned());
            }
        }
        Self::Db(e)
    }
}
