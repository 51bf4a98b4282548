//! A pool of open snapshot databases, for callers that live long (the
//! library handle, a platform service): each call borrows an open
//! connection instead of connecting (and checking the schema) anew.
//!
//! `r2d2` keeps the connections. Its manager here opens whole backends
//! ([`SnapshotBackend`]), so one pool serves PostgreSQL and SQLite alike,
//! each pooled connection keeps its prepared statements, and the TLS choice
//! (`sslmode`, root certificates) stays in one place (`postgres.rs`).

use super::{Result, SnapshotBackend, SnapshotDb, SnapshotError, SnapshotRepo};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connections a pool keeps at most: beyond this, callers wait for one.
pub const DEFAULT_POOL_SIZE: u32 = 8;
/// How long a call waits for a free (or new) connection before failing.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens backends for the pool.
pub(crate) struct Manager {
    db: SnapshotDb,
    embedded: PathBuf,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Box<dyn SnapshotBackend>;
    type Error = SnapshotError;

    fn connect(&self) -> Result<Self::Connection> {
        super::open_backend(&self.db, &self.embedded)
    }

    /// Not run at checkout (a round trip per call is what the pool saves):
    /// a backend reopens a connection the server closed by itself.
    fn is_valid(&self, conn: &mut Self::Connection) -> Result<()> {
        conn.ping()
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.is_broken()
    }
}

/// A pool of open connections to one snapshot database. Cheap to share
/// (`Arc` inside r2d2); `Send + Sync`.
#[derive(Clone)]
pub struct RepoPool {
    pool: r2d2::Pool<Manager>,
    /// The database, without its password, for errors.
    target: String,
    /// Any database but the store's own file.
    shared: bool,
}

impl RepoPool {
    /// Connect to `db` once (a bad URL or a database that is down fails
    /// here, with its own error; the schema is migrated), then keep up to
    /// `size` connections open as calls need them.
    pub fn open(db: &SnapshotDb, embedded: &Path, size: u32) -> Result<Self> {
        let manager = Manager {
            db: db.clone(),
            embedded: embedded.to_path_buf(),
        };
        let first = r2d2::ManageConnection::connect(&manager)?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(size.max(1))
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(CHECKOUT_TIMEOUT)
            // Failures reach the caller through `get`; no log spam meanwhile.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(RepoPool {
            pool,
            target: db.to_string(),
            shared: *db != SnapshotDb::Embedded,
        })
    }

    /// A repository over a pooled connection; the connection goes back to
    /// the pool when the repository is dropped.
    pub fn get(&self) -> Result<SnapshotRepo> {
        let conn = self.pool.get().map_err(|e| SnapshotError::Pool {
            target: self.target.clone(),
            message: e.to_string(),
        })?;
        Ok(SnapshotRepo::with_pooled(conn, self.shared))
    }

    /// Connections open now (idle or lent out).
    pub fn connections(&self) -> u32 {
        self.pool.state().connections
    }
}

/// A pooled backend, as a repository holds it.
pub(crate) type Pooled = r2d2::PooledConnection<Manager>;
