//! Reads: a pool of connections through which no write is possible.
use crate::sql;
use bulwark_db_api::api::{Column, Params, Value};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Read-only connections to the database, for queries.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

/// Open a connection through which no write is possible.
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.pragma_update(None, "query_only", true)?;
    Ok(c)
}

/// Why a read failed: the statement (the request's fault), or this
/// node's pool of read connections.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Statement(#[from] sql::StatementError),
    #[error("{0}")]
    Closed(#[from] tokio::sync::AcquireError),
    #[error("{0}")]
    Open(#[source] rusqlite::Error),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ReadPool {
    pub fn new(path: PathBuf, size: usize) -> ReadPool {
        ReadPool { path, idle: Mutex::new(Vec::new()), permits: tokio::sync::Semaphore::new(size.max(1)) }
    }

    /// Run a read-only query on a pooled connection.
    pub async fn query(
        self: &Arc<Self>,
        sql: String,
        params: Params,
    ) -> Result<(Vec<Column>, Vec<Vec<Value>>), ReadError> {
        let _permit = self.permits.acquire().await?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => open_read_only(&pool.path).map_err(ReadError::Open)?,
            };
            let result = sql::run_query(&conn, &sql, &params);
            pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            Ok(result?)
        })
        .await?
    }
}
