//! The store's one error type.

use crate::{DeviceId, Unique};

/// Everything that can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule would be broken by the write; nothing was written.
    #[error("uniqueness violated: {0:?}")]
    Unique(Unique),
    /// The object the write refers to does not exist (any more).
    #[error("not found")]
    NotFound,
    /// The data file was written by a newer fleetmq than this one.
    #[error(
        "the data file has schema version {found}, but this fleetmq understands at most version {supported}; \
         upgrade fleetmq or point --data-dir at another directory"
    )]
    NewerSchema {
        /// Version recorded in the file.
        found: u64,
        /// Highest version this build understands.
        supported: u64,
    },
    /// Another process (usually a running server) holds the data file.
    #[error(
        "the data file is in use by another fleetmq process (a running server holds it exclusively); \
         stop it first or use the REST API"
    )]
    InUse,
    /// redb failed (I/O, corruption, ...).
    #[error("database error: {0}")]
    Database(#[from] redb::Error),
    /// PostgreSQL failed or could not be reached.
    #[error("PostgreSQL error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection became free (or could be made) in time.
    #[error("no PostgreSQL connection: {0}")]
    PostgresPool(#[from] r2d2::Error),
    /// A store migration's target already holds data; nothing was copied.
    #[error("the target store is not empty (table {table} holds data); migrate into an empty one")]
    TargetNotEmpty {
        /// The first table found holding data.
        table: String,
    },
    /// A store migration's copy does not match its source (entry count or checksum).
    #[error("the copy of table {table} differs from its source")]
    CopyDiffers {
        /// The first table that differs.
        table: String,
    },
    /// A stored key could not be decoded: a bug or a damaged database.
    #[error("corrupt key in table {table}")]
    CorruptKey {
        /// Table holding the key.
        table: String,
    },
    /// A stored record could not be decoded: a bug or a damaged file.
    #[error("corrupt record in table {table}: {source}")]
    Corrupt {
        /// Table holding the record.
        table: &'static str,
        /// Decoder error.
        source: serde_json::Error,
    },
    /// A device's configuration would not render (its templates and own config merged are not
    /// valid NetJSON for its backend); nothing was written.
    #[error("the configuration of device {device} does not render: {source}")]
    InvalidConfig {
        /// The device whose configuration fails.
        device: DeviceId,
        /// Where in the merged configuration, and why.
        source: fleetmq_netjson::Invalid,
    },
    /// A certificate or key a client gave (or asked for) is not acceptable; reported under
    /// `field` (`__all__` when it is not one field's fault). Nothing was written.
    #[error("{field}: {source}")]
    Pki {
        /// The API field at fault.
        field: &'static str,
        /// What the PKI says.
        source: fleetmq_pki::PkiError,
    },
    /// A rule between objects would be broken (OpenWISP's model validation); nothing was
    /// written.
    #[error("{field}: {message}")]
    Rule {
        /// The API field at fault.
        field: &'static str,
        /// The message, as OpenWISP words it.
        message: &'static str,
    },
    /// A sealed private key could not be opened: the server secret is not the one it was
    /// sealed with, or the record was tampered with.
    #[error(
        "a private key in table {table} cannot be opened: {reason} (is --pki-secret the one this data was written with?)"
    )]
    Sealed {
        /// Table holding the record.
        table: &'static str,
        /// Why.
        reason: String,
    },
    /// A VPN server's configuration does not render for its backend; nothing was written.
    #[error("the VPN server's configuration does not render: {0}")]
    InvalidVpnConfig(fleetmq_netjson::Invalid),
    /// Hashing a password failed.
    #[error("password hashing failed: {0}")]
    Password(String),
    /// The blocking task running the call panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
            other => StoreError::Database(other.into()),
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
