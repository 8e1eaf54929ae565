//! The PostgreSQL engine: each table is a PostgreSQL table `kv_<name> (k bytea primary key,
//! v bytea)` holding byte-ordered keys ([`super::Key`]) and redb-encoded values.
//!
//! Transactions keep redb's rules across every node sharing the database: a write transaction
//! takes a transaction-scoped advisory lock first, so writers run one at a time (reading at
//! READ COMMITTED then sees every earlier commit); a read transaction is REPEATABLE READ and
//! READ ONLY, one snapshot. Round trips are what costs (~90 µs on loopback, against
//! microseconds for redb's reads), so [`Txn`] sends BEGIN with its first statement and its
//! writes together; range scans fetch in growing chunks from either end, so walking a few
//! entries of a large table reads a few rows.
//!
//! A write transaction that changed something also notifies the other nodes with its COMMIT
//! (see [`super::notices`]), and each pool keeps one more connection, outside the pool, that
//! listens for theirs.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::notices::{self, RemoteCommit};
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

/// Runs `future` to completion on this thread, parking it while the future waits. The
/// futures waited on here only exchange messages with connection tasks on the pool's own
/// runtime, so this works on any thread, an async worker's included (where it blocks, as a
/// redb call does), and never needs (or enters) the caller's runtime.
fn wait<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Connections to one database, the runtime their I/O runs on, and the tables known to
/// exist in it.
pub(super) struct Pool {
    connections: r2d2::Pool<Manager>,
    /// This node's writers queue here, before taking a connection: one at a time asks for
    /// the database-wide writer lock, and the other connections stay free for readers.
    writer: Arc<WriterSlot>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    tables: Arc<Mutex<HashSet<String>>>,
    /// What this node's write transactions sign their notices with.
    notifier: Arc<Notifier>,
    /// Other nodes' commits, as the listener hears them.
    commits: tokio::sync::broadcast::Sender<RemoteCommit>,
}

/// This node's id in notices, and the number of its next notifying commit (so the parts of
/// one commit's notice are told from another's).
pub(super) struct Notifier {
    node: String,
    next: AtomicU64,
}

impl Drop for Pool {
    /// Without waiting for the connections' tasks (the listener's too, which stops with
    /// them): the last handle to a store may be dropped on an async worker, where a runtime
    /// must not block.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub(super) enum Mode {
    Read,
    Write,
}

impl Pool {
    pub(super) fn connect(options: &PostgresOptions) -> Result<Self> {
        let mut config: Config = options.url.parse().map_err(StoreError::Postgres)?;
        // The server's notices ("relation … already exists, skipping" for every table at each
        // start) are not news; its warnings and errors are.
        let quiet = "-c client_min_messages=warning";
        let server_options = match config.get_options() {
            Some(given) => format!("{given} {quiet}"),
            None => quiet.to_owned(),
        };
        config.options(&server_options);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fleetmq-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Task(format!("the PostgreSQL runtime: {e}")))?;
        let manager = Manager {
            config: config.clone(),
            runtime: runtime.handle().clone(),
            timeout: options.connect_timeout,
        };
        let connections = r2d2::Pool::builder()
            .max_size(options.max_connections.max(1))
            .min_idle(Some(1))
            // Checked out only if still open (no round trip: see `is_valid`).
            .test_on_check_out(true)
            .connection_timeout(options.connect_timeout)
            .build(manager)?;
        let node = notices::node_id();
        let commits = tokio::sync::broadcast::channel(notices::BACKLOG).0;
        let (listening, listened) = tokio::sync::oneshot::channel();
        runtime.spawn(
            notices::Listener {
                config,
                connect_timeout: options.connect_timeout,
                node: node.clone(),
                commits: commits.clone(),
                listening: Some(listening),
            }
            .run(),
        );
        // The first LISTEN in place before the store is used, so that no commit of another
        // node made after opening goes unheard. If it takes too long, the listener goes on
        // trying and says "anything changed" once it listens.
        let timeout = options.connect_timeout;
        let first = runtime.spawn(async move { tokio::time::timeout(timeout, listened).await });
        if !matches!(wait(first), Ok(Ok(Ok(())))) {
            tracing::warn!("not yet listening for other nodes' commits; going on without");
        }
        Ok(Self {
            connections,
            writer: Arc::default(),
            runtime: Some(runtime),
            tables: Arc::default(),
            notifier: Arc::new(Notifier {
                node,
                next: AtomicU64::new(0),
            }),
            commits,
        })
    }

    /// This node's id in the notices it sends.
    pub(super) fn node(&self) -> &str {
        &self.notifier.node
    }

    /// Other nodes' commits heard from now on.
    pub(super) fn remote_commits(&self) -> tokio::sync::broadcast::Receiver<RemoteCommit> {
        self.commits.subscribe()
    }

    /// A transaction; its BEGIN goes out with its first statement.
    pub(super) fn begin(&self, mode: Mode) -> Result<Txn> {
        let (writing, notifier) = match mode {
            Mode::Read => (None, None),
            Mode::Write => (
                Some(WriterSlot::take(&self.writer)),
                Some(Arc::clone(&self.notifier)),
            ),
        };
        let conn = self.connections.get()?;
        let begin = match mode {
            Mode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_owned(),
            Mode::Write => format!("BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})"),
        };
        Ok(Txn {
            conn: RefCell::new(conn),
            state: RefCell::new(State::NotBegun(begin)),
            pending: RefCell::default(),
            _writing: writing,
            tables: Arc::clone(&self.tables),
            created: RefCell::default(),
            notifier,
            changed: RefCell::default(),
            announcements: RefCell::default(),
        })
    }
}

/// Whether one of this node's write transactions is running.
#[derive(Default)]
struct WriterSlot {
    busy: Mutex<bool>,
    freed: std::sync::Condvar,
}

/// Held by the running write transaction; frees the slot when dropped.
struct Writing(Arc<WriterSlot>);

impl WriterSlot {
    fn take(slot: &Arc<WriterSlot>) -> Writing {
        let mut busy = slot.busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            busy = slot.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy = true;
        Writing(Arc::clone(slot))
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0.freed.notify_one();
    }
}

struct Manager {
    config: Config,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

/// A connection with the statements prepared on it, and the runtime its I/O runs on.
pub(super) struct Conn {
    client: Arc<Client>,
    statements: HashMap<String, Statement>,
    runtime: tokio::runtime::Handle,
    /// A statement failed on a closed connection: never hand it out again.
    broken: bool,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = std::io::Error;

    fn connect(&self) -> std::io::Result<Conn> {
        let config = self.config.clone();
        let timeout = self.timeout;
        let connecting = self.runtime.spawn(async move {
            let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting"))?
                .map_err(std::io::Error::other)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection closed");
                }
            });
            Ok::<_, std::io::Error>(client)
        });
        let client = wait(connecting).map_err(std::io::Error::other)??;
        Ok(Conn {
            client: Arc::new(client),
            statements: HashMap::new(),
            runtime: self.runtime.clone(),
            broken: false,
        })
    }

    /// Whether the connection is still open, without a round trip: a connection the server
    /// closed (a restart, an outage) is not handed out again.
    fn is_valid(&self, conn: &mut Conn) -> std::io::Result<()> {
        if conn.client.is_closed() {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed by the server",
            ))
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

impl Conn {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = wait(self.client.prepare(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Marks the connection broken when an error closed it.
    fn checked<T>(&mut self, result: Result<T, tokio_postgres::Error>) -> Result<T> {
        if result.is_err() && self.client.is_closed() {
            self.broken = true;
        }
        Ok(result?)
    }
}

enum State {
    /// Nothing sent yet; this BEGIN goes out with the first statement.
    NotBegun(String),
    /// BEGIN sent: ending needs COMMIT or ROLLBACK.
    Open,
    /// Committed.
    Done,
}

/// Rows a table's buffered writes reach before they are sent without waiting for a read or
/// the commit (bounds a transaction's memory, e.g. a store migration's).
const FLUSH_AT: usize = 4096;

/// Which buffered writes must reach the server before a statement.
#[derive(Clone, Copy)]
enum Flush<'a> {
    /// None (the statement does not touch a table with writes).
    Nothing,
    /// This table's (the statement reads or deletes in it).
    Table(&'a str),
    /// Every table's (commit).
    All,
}

/// One table's buffered writes: key → value to store (`None`: to delete).
type Writes = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A statement sent ahead of another in the same round trip.
enum Ahead {
    /// BEGIN (simple protocol).
    Begin(String),
    /// One table's buffered writes: keys and values as two arrays, one upsert.
    Upsert(Statement, Vec<Vec<u8>>, Vec<Vec<u8>>),
    /// One table's buffered deletes: the keys as one array.
    Delete(Statement, Vec<Vec<u8>>),
    /// The commit's notice to the other nodes: its payloads as one array.
    Notify(Statement, Vec<String>),
}

async fn send_ahead(client: &Client, ahead: &[Ahead]) -> Result<(), tokio_postgres::Error> {
    // join_all polls in order, so the statements queue on the connection in order.
    let results = futures_util::future::join_all(ahead.iter().map(|a| async move {
        match a {
            Ahead::Begin(begin) => client.batch_execute(begin).await,
            Ahead::Upsert(statement, keys, values) => {
                client.execute(statement, &[keys, values]).await.map(drop)
            }
            Ahead::Delete(statement, keys) => client.execute(statement, &[keys]).await.map(drop),
            Ahead::Notify(statement, payloads) => {
                client.execute(statement, &[payloads]).await.map(drop)
            }
        }
    }))
    .await;
    results.into_iter().collect()
}

/// One transaction on one pooled connection; rolled back when dropped uncommitted.
///
/// Writes and deletes are buffered per table (the last one per key) and reach the server in one upsert per
/// table, in the same round trip as the next statement that reads or deletes in that table,
/// or as the COMMIT. So a transaction costs about one round trip per read, and a write-only
/// one a single round trip, with the semantics unchanged: every read sees the transaction's
/// own writes.
pub(super) struct Txn {
    conn: RefCell<r2d2::PooledConnection<Manager>>,
    state: RefCell<State>,
    /// Table (SQL name) → key → value to store (`None`: to delete), not yet sent.
    pending: RefCell<HashMap<String, Writes>>,
    /// A write transaction's place as this node's writer (dropped after the connection
    /// went back: fields drop in order).
    _writing: Option<Writing>,
    tables: Arc<Mutex<HashSet<String>>>,
    /// Tables this transaction created, known to exist once it commits.
    created: RefCell<Vec<String>>,
    /// A write transaction's signature on its notice; `None` for a reader.
    notifier: Option<Arc<Notifier>>,
    /// Tables (redb's names) with an entry written or removed: what the notice names.
    changed: RefCell<std::collections::BTreeSet<String>>,
    /// What the notice carries besides (see [`Txn::announce`]).
    announcements: RefCell<Vec<String>>,
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
            self.execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (k bytea PRIMARY KEY, v bytea NOT NULL)",
                table.sql
            ))?;
            self.created.borrow_mut().push(table.sql.clone());
        }
        Ok(table)
    }

    /// What must go ahead of the next statement: the BEGIN if still to go, then the buffered
    /// writes `flush` names. From now on the transaction is open.
    fn ahead(&self, flush: Flush<'_>) -> Result<Vec<Ahead>> {
        let mut ahead = Vec::new();
        if let State::NotBegun(begin) =
            std::mem::replace(&mut *self.state.borrow_mut(), State::Open)
        {
            ahead.push(Ahead::Begin(begin));
        }
        let writes: Vec<(String, Writes)> = {
            let mut pending = self.pending.borrow_mut();
            match flush {
                Flush::Nothing => Vec::new(),
                Flush::Table(table) => pending.remove_entry(table).into_iter().collect(),
                Flush::All => pending.drain().collect(),
            }
        };
        let mut conn = self.conn.borrow_mut();
        for (table, rows) in writes {
            let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
            for (key, value) in rows {
                match value {
                    Some(value) => {
                        keys.push(key);
                        values.push(value);
                    }
                    None => gone.push(key),
                }
            }
            if !gone.is_empty() {
                let statement =
                    conn.statement(&format!("DELETE FROM {table} WHERE k = ANY($1)"))?;
                ahead.push(Ahead::Delete(statement, gone));
            }
            if !keys.is_empty() {
                let statement = conn.statement(&format!(
                    "INSERT INTO {table} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                ))?;
                ahead.push(Ahead::Upsert(statement, keys, values));
            }
        }
        Ok(ahead)
    }

    /// Buffers a write (`None`: a delete); a table whose buffer is full is sent at once.
    fn buffer(&self, table: &str, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let full = {
            let mut pending = self.pending.borrow_mut();
            let rows = pending.entry(table.to_owned()).or_default();
            rows.insert(key.to_vec(), value.map(<[u8]>::to_vec));
            rows.len() >= FLUSH_AT
        };
        if full {
            let ahead = self.ahead(Flush::Table(table))?;
            let mut conn = self.conn.borrow_mut();
            let client = Arc::clone(&conn.client);
            let result = wait(send_ahead(&client, &ahead));
            conn.checked(result)?;
        }
        Ok(())
    }

    /// Runs statements without rows (DDL) after what must go ahead.
    fn execute(&self, sql: &str) -> Result<()> {
        let ahead = self.ahead(Flush::Nothing)?;
        let mut conn = self.conn.borrow_mut();
        let client = Arc::clone(&conn.client);
        let result = wait(async {
            let (ahead, done) =
                futures_util::join!(send_ahead(&client, &ahead), client.batch_execute(sql));
            ahead.and(done)
        });
        conn.checked(result)
    }

    /// One statement's rows, in one round trip with what must go ahead of it.
    fn query(
        &self,
        flush: Flush<'_>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let ahead = self.ahead(flush)?;
        let mut conn = self.conn.borrow_mut();
        let statement = conn.statement(sql)?;
        let client = Arc::clone(&conn.client);
        let result = wait(async {
            let (ahead, rows) = futures_util::join!(
                send_ahead(&client, &ahead),
                client.query(&statement, params)
            );
            ahead.and(rows)
        });
        conn.checked(result)
    }

    /// Queues `announcement` to go to the other nodes with the commit (and nowhere if the
    /// transaction is rolled back).
    pub(super) fn announce(&self, announcement: String) {
        self.announcements.borrow_mut().push(announcement);
    }

    /// The notify payloads of the commit: none when it changed nothing and announces nothing.
    fn notice(&self) -> Option<Vec<String>> {
        let notifier = self.notifier.as_ref()?;
        let tables: Vec<String> = std::mem::take(&mut *self.changed.borrow_mut())
            .into_iter()
            .collect();
        let announcements = std::mem::take(&mut *self.announcements.borrow_mut());
        if tables.is_empty() && announcements.is_empty() {
            return None;
        }
        let commit = notifier.next.fetch_add(1, Ordering::Relaxed);
        Some(notices::payloads(
            &notifier.node,
            commit,
            tables,
            announcements,
        ))
    }

    /// Sends the buffered writes, the notice to the other nodes and COMMIT together, and
    /// waits for the commit.
    pub(super) fn commit(self) -> Result<()> {
        let nothing_sent = matches!(*self.state.borrow(), State::NotBegun(_));
        let nothing_buffered = self.pending.borrow().values().all(|rows| rows.is_empty());
        let notice = self.notice();
        if !(nothing_sent && nothing_buffered && notice.is_none()) {
            let mut ahead = self.ahead(Flush::All)?;
            let mut conn = self.conn.borrow_mut();
            if let Some(payloads) = notice {
                ahead.push(Ahead::Notify(
                    conn.statement(notices::NOTIFY_SQL)?,
                    payloads,
                ));
            }
            let client = Arc::clone(&conn.client);
            let result = wait(async {
                let (ahead, done) = futures_util::join!(
                    send_ahead(&client, &ahead),
                    client.batch_execute("COMMIT")
                );
                ahead.and(done)
            });
            conn.checked(result)?;
        }
        *self.state.borrow_mut() = State::Done;
        let created = std::mem::take(&mut *self.created.borrow_mut());
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(created);
        Ok(())
    }
}

impl Drop for Txn {
    /// Rolls back without waiting for the answer: the ROLLBACK is queued on the connection
    /// before it goes back to the pool, so whoever takes the connection next is behind it.
    fn drop(&mut self) {
        if !matches!(*self.state.get_mut(), State::Open) {
            return;
        }
        let conn = self.conn.get_mut();
        let client = Arc::clone(&conn.client);
        let mut rollback = Box::pin(async move {
            if let Err(e) = client.batch_execute("ROLLBACK").await {
                tracing::debug!(error = %e, "PostgreSQL rollback failed");
            }
        });
        // The first poll queues the message (and usually no more: the answer is pending).
        let waker = Waker::noop();
        if rollback
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending()
        {
            conn.runtime.spawn(rollback);
        }
    }
}

/// `kv_<name>`: redb's table names are lower-case words joined by `_`, valid identifiers.
fn sql_name(name: &str) -> String {
    format!("kv_{name}")
}

fn bytes(row: &Row, column: usize) -> Result<Vec<u8>> {
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
        let rows = self.txn.query(Flush::Table(&self.sql), &sql, &[&key])?;
        rows.first().map(|row| bytes(row, 0)).transpose()
    }

    /// The values under `keys`, in their order, in one statement.
    pub(super) fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT k, v FROM {} WHERE k = ANY($1)", self.sql);
        let wanted = keys.to_vec();
        let rows = self.txn.query(Flush::Table(&self.sql), &sql, &[&wanted])?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in &rows {
            found.insert(bytes(row, 0)?, bytes(row, 1)?);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    /// Stores `value` under `key` (buffered until the table is next read or the commit).
    pub(super) fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.changed();
        self.txn.buffer(&self.sql, key, Some(value))
    }

    /// Deletes the entry under `key` (buffered like [`TableRef::insert`]).
    pub(super) fn remove(&self, key: &[u8]) -> Result<()> {
        self.changed();
        self.txn.buffer(&self.sql, key, None)
    }

    /// Names the table in the commit's notice.
    fn changed(&self) {
        let mut changed = self.txn.changed.borrow_mut();
        if !changed.contains(&self.name) {
            changed.insert(self.name.clone());
        }
    }

    pub(super) fn remove_all(&self, keys: &[Vec<u8>]) -> Result<()> {
        for key in keys {
            self.remove(key)?;
        }
        Ok(())
    }

    pub(super) fn len(&self) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {}", self.sql);
        let rows = self.txn.query(Flush::Table(&self.sql), &sql, &[])?;
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
        let rows = self.txn.query(Flush::Table(&self.sql), &sql, &params)?;
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
