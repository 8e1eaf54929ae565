//! The PostgreSQL engine: each table is a PostgreSQL table `kv_<name> (k bytea primary key,
//! v bytea)` holding byte-ordered keys ([`super::Key`]) and redb-encoded values.
//!
//! Transactions keep redb's rules across every node sharing the database: a write transaction
//! takes a transaction-scoped advisory lock first, so writers run one at a time (reading at
//! READ COMMITTED then sees every earlier commit); a read transaction is REPEATABLE READ and
//! READ ONLY, one snapshot. Range scans fetch in growing chunks from either end, so walking a
//! few entries of a large table reads a few rows.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::postgres::types::ToSql;
use ::postgres::{Client, Config, NoTls, Statement};

use crate::{Result, StoreError};

/// The advisory lock every write transaction holds ("fleetmq" in ASCII).
const WRITER_LOCK: i64 = 0x0066_6c65_6574_6d71;

/// Rows a scan fetches first; each further fetch from the same end doubles, up to
/// [`MAX_CHUNK`].
const FIRST_CHUNK: i64 = 128;
const MAX_CHUNK: i64 = 4096;

/// Where the database is and how many connections a node may hold.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database` (or libpq's `key=value` form).
    pub url: String,
    /// Connections this node keeps at most; a call waits for a free one.
    pub max_connections: u32,
    /// How long a call waits for a connection before it fails.
    pub connect_timeout: Duration,
}

impl PostgresOptions {
    /// The database at `url`, 16 connections, 10 s to get one.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    /// Without the URL, which may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"…")
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Connections to one database, and the tables known to exist in it.
pub(super) struct Pool {
    /// `None` only while dropping.
    connections: Option<r2d2::Pool<Manager>>,
    tables: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Pool {
    /// Closing a connection blocks on the client's own runtime, which panics on a thread that
    /// drives async tasks, and the last handle to a store may well be dropped on one: the
    /// connections are closed on a thread of their own.
    fn drop(&mut self) {
        if let Some(connections) = self.connections.take() {
            std::thread::spawn(move || drop(connections));
        }
    }
}

pub(super) enum Mode {
    Read,
    Write,
}

impl Pool {
    pub(super) fn connect(options: &PostgresOptions) -> Result<Self> {
        let config: Config = options.url.parse().map_err(StoreError::Postgres)?;
        let connections = r2d2::Pool::builder()
            .max_size(options.max_connections.max(1))
            .min_idle(Some(1))
            // A broken connection fails its call (and is then dropped); checking each
            // one out with a query first would cost every transaction a round trip.
            .test_on_check_out(false)
            .connection_timeout(options.connect_timeout)
            .build(Manager { config })?;
        Ok(Self {
            connections: Some(connections),
            tables: Arc::default(),
        })
    }

    pub(super) fn begin(&self, mode: Mode) -> Result<Txn> {
        let Some(connections) = &self.connections else {
            return Err(StoreError::Task("the store is closing".to_owned()));
        };
        let mut conn = connections.get()?;
        let begin = match mode {
            Mode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_owned(),
            Mode::Write => format!("BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})"),
        };
        if let Err(e) = conn.client.batch_execute(&begin) {
            conn.broken = true;
            return Err(e.into());
        }
        Ok(Txn {
            conn: RefCell::new(conn),
            open: Cell::new(true),
            tables: Arc::clone(&self.tables),
            created: RefCell::default(),
        })
    }
}

struct Manager {
    config: Config,
}

/// A connection with the statements prepared on it.
pub(super) struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// A transaction could not be ended: never hand the connection out again.
    broken: bool,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = ::postgres::Error;

    fn connect(&self) -> Result<Conn, ::postgres::Error> {
        Ok(Conn {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), ::postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

impl Conn {
    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<::postgres::Row>> {
        let statement = match self.statements.get(sql) {
            Some(statement) => statement.clone(),
            None => {
                let statement = self.client.prepare(sql)?;
                self.statements.insert(sql.to_owned(), statement.clone());
                statement
            }
        };
        Ok(self.client.query(&statement, params)?)
    }
}

/// One transaction on one pooled connection; rolled back when dropped uncommitted.
pub(super) struct Txn {
    conn: RefCell<r2d2::PooledConnection<Manager>>,
    open: Cell<bool>,
    tables: Arc<Mutex<HashSet<String>>>,
    /// Tables this transaction created, known to exist once it commits.
    created: RefCell<Vec<String>>,
}

impl Txn {
    /// A table to read (it must exist).
    pub(super) fn table(&self, name: &str) -> TableRef<'_> {
        TableRef {
            txn: self,
            name: name.to_owned(),
            sql: sql_name(name),
        }
    }

    /// A table to read and write, created if it does not exist.
    pub(super) fn create_table(&self, name: &str) -> Result<TableRef<'_>> {
        let table = self.table(name);
        let known = self
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&table.sql);
        if !known {
            self.conn.borrow_mut().client.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (k bytea PRIMARY KEY, v bytea NOT NULL)",
                table.sql
            ))?;
            self.created.borrow_mut().push(table.sql.clone());
        }
        Ok(table)
    }

    pub(super) fn commit(self) -> Result<()> {
        self.open.set(false);
        let result = self.conn.borrow_mut().client.batch_execute("COMMIT");
        if let Err(e) = result {
            self.conn.borrow_mut().broken = true;
            return Err(e.into());
        }
        let created = std::mem::take(&mut *self.created.borrow_mut());
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(created);
        Ok(())
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<::postgres::Row>> {
        self.conn.borrow_mut().query(sql, params)
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if self.open.get() {
            let conn = self.conn.get_mut();
            if conn.client.batch_execute("ROLLBACK").is_err() {
                conn.broken = true;
            }
        }
    }
}

/// `kv_<name>`: redb's table names are lower-case words joined by `_`, valid identifiers.
fn sql_name(name: &str) -> String {
    format!("kv_{name}")
}

fn bytes(row: &::postgres::Row, column: usize) -> Result<Vec<u8>> {
    Ok(row.try_get::<_, Vec<u8>>(column)?)
}

/// A table inside a transaction.
pub(super) struct TableRef<'t> {
    txn: &'t Txn,
    /// redb's name of the table.
    name: String,
    /// PostgreSQL's.
    sql: String,
}

impl<'t> TableRef<'t> {
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sql = format!("SELECT v FROM {} WHERE k = $1", self.sql);
        let rows = self.txn.query(&sql, &[&key])?;
        rows.first().map(|row| bytes(row, 0)).transpose()
    }

    /// Stores `value` under `key` and returns the value it replaced, in one statement.
    pub(super) fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        let sql = format!(
            "WITH old AS (SELECT v FROM {t} WHERE k = $1), \
             put AS (INSERT INTO {t} (k, v) VALUES ($1, $2) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v) \
             SELECT v FROM old",
            t = self.sql
        );
        let rows = self.txn.query(&sql, &[&key, &value])?;
        rows.first().map(|row| bytes(row, 0)).transpose()
    }

    pub(super) fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sql = format!("DELETE FROM {} WHERE k = $1 RETURNING v", self.sql);
        let rows = self.txn.query(&sql, &[&key])?;
        rows.first().map(|row| bytes(row, 0)).transpose()
    }

    pub(super) fn remove_all(&self, keys: &[Vec<u8>]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let sql = format!("DELETE FROM {} WHERE k = ANY($1)", self.sql);
        let keys = keys.to_vec();
        self.txn.query(&sql, &[&keys])?;
        Ok(())
    }

    pub(super) fn len(&self) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {}", self.sql);
        let rows = self.txn.query(&sql, &[])?;
        let count: i64 = match rows.first() {
            Some(row) => row.try_get(0)?,
            None => 0,
        };
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Entries with keys between `lo` and `hi` (byte-ordered), fetched as they are walked.
    pub(super) fn scan(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Scan<'t> {
        Scan {
            txn: self.txn,
            sql: self.sql.clone(),
            lo,
            hi,
            front: End::default(),
            back: End::default(),
        }
    }
}

/// One end of a scan: rows fetched and not yet yielded, and whether the table has no more.
struct End {
    rows: VecDeque<(Vec<u8>, Vec<u8>)>,
    exhausted: bool,
    chunk: i64,
}

impl Default for End {
    fn default() -> Self {
        Self {
            rows: VecDeque::new(),
            exhausted: false,
            chunk: FIRST_CHUNK,
        }
    }
}

/// A range scan walked from either end. `lo` and `hi` shrink as entries are yielded, so the
/// two ends never yield one entry twice and stop where they meet.
pub(super) struct Scan<'t> {
    txn: &'t Txn,
    sql: String,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    front: End,
    back: End,
}

impl Scan<'_> {
    fn within(&self, key: &[u8]) -> bool {
        let above = match &self.lo {
            Bound::Included(lo) => key >= lo.as_slice(),
            Bound::Excluded(lo) => key > lo.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match &self.hi {
            Bound::Included(hi) => key <= hi.as_slice(),
            Bound::Excluded(hi) => key < hi.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }

    /// The next chunk from the front (`descending` false) or the back.
    fn fetch(&mut self, descending: bool) -> Result<()> {
        let mut conditions = Vec::new();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        for (bound, strict, loose) in [(&self.lo, ">", ">="), (&self.hi, "<", "<=")] {
            let (op, key) = match bound {
                Bound::Included(key) => (loose, key),
                Bound::Excluded(key) => (strict, key),
                Bound::Unbounded => continue,
            };
            params.push(key);
            conditions.push(format!("k {op} ${}", params.len()));
        }
        let end = if descending {
            &mut self.back
        } else {
            &mut self.front
        };
        let limit = end.chunk;
        params.push(&limit);
        let sql = format!(
            "SELECT k, v FROM {} {}{} ORDER BY k{} LIMIT ${}",
            self.sql,
            if conditions.is_empty() { "" } else { "WHERE " },
            conditions.join(" AND "),
            if descending { " DESC" } else { "" },
            params.len()
        );
        let rows = self.txn.query(&sql, &params)?;
        end.exhausted = (rows.len() as i64) < limit;
        end.chunk = (limit * 2).min(MAX_CHUNK);
        for row in &rows {
            end.rows.push_back((bytes(row, 0)?, bytes(row, 1)?));
        }
        Ok(())
    }

    fn step(&mut self, descending: bool) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        loop {
            let end = if descending {
                &mut self.back
            } else {
                &mut self.front
            };
            if let Some((key, value)) = end.rows.pop_front() {
                if !self.within(&key) {
                    // The other end already yielded this one: the ends met.
                    self.front = End::exhausted();
                    self.back = End::exhausted();
                    return None;
                }
                if descending {
                    self.hi = Bound::Excluded(key.clone());
                } else {
                    self.lo = Bound::Excluded(key.clone());
                }
                return Some(Ok((key, value)));
            }
            if end.exhausted {
                return None;
            }
            if let Err(e) = self.fetch(descending) {
                self.front = End::exhausted();
                self.back = End::exhausted();
                return Some(Err(e));
            }
        }
    }
}

impl End {
    fn exhausted() -> Self {
        Self {
            exhausted: true,
            ..Self::default()
        }
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}

impl DoubleEndedIterator for Scan<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}
