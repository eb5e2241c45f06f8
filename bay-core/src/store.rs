//! Persistence: diesel + diesel-async over SQLite (a pooled `SyncConnectionWrapper`, WAL), with
//! embedded migrations.
//!
//! Every unit of work runs as one `BEGIN IMMEDIATE` transaction on a blocking thread
//! ([`Store::tx`]), so multi-step lifecycle changes (slot checks, deadline recomputation) are
//! atomic and concurrent writers queue on SQLite's busy timeout instead of failing.

use std::path::Path;

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt;

use crate::model::{EffectiveSpec, ShipStatus, Timestamp};

/// The migrations compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

type Conn = SyncConnectionWrapper<SqliteConnection>;

const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                       PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

/// A database failure (connection, query or migration).
#[derive(Debug, Clone, thiserror::Error)]
#[error("database error: {0}")]
pub struct StoreError(pub String);

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        Self(e.to_string())
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The database schema (kept in step with `migrations/`).
pub mod schema {
    diesel::table! {
        ships (id) {
            id -> Text,
            status -> Integer,
            created_at -> BigInt,
            updated_at -> BigInt,
            container_id -> Nullable<Text>,
            ip_address -> Nullable<Text>,
            ttl -> BigInt,
            max_session_num -> Integer,
            spec_cpus -> Nullable<Double>,
            spec_memory -> Nullable<BigInt>,
            spec_disk -> Nullable<BigInt>,
            auth_token -> Text,
            deadline -> Nullable<BigInt>,
            ever_running -> Bool,
            warm -> Bool,
        }
    }

    diesel::table! {
        session_ships (id) {
            id -> Text,
            session_id -> Text,
            ship_id -> Text,
            created_at -> BigInt,
            last_activity -> BigInt,
            expires_at -> BigInt,
            initial_ttl -> BigInt,
        }
    }

    diesel::joinable!(session_ships -> ships (ship_id));
    diesel::allow_tables_to_appear_in_same_query!(ships, session_ships);
}

use schema::{session_ships, ships};

/// A stored ship.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = ships, check_for_backend(diesel::sqlite::Sqlite), treat_none_as_null = true)]
pub struct ShipRow {
    /// ship id (UUID v4)
    pub id: String,
    /// status code
    pub status: i32,
    /// creation time (µs)
    pub created_at: i64,
    /// last change (µs)
    pub updated_at: i64,
    /// container id while one exists
    pub container_id: Option<String>,
    /// agent address while one exists
    pub ip_address: Option<String>,
    /// requested ttl of the last start
    pub ttl: i64,
    /// session slots
    pub max_session_num: i32,
    /// effective spec: CPUs
    pub spec_cpus: Option<f64>,
    /// effective spec: memory bytes
    pub spec_memory: Option<i64>,
    /// effective spec: disk bytes
    pub spec_disk: Option<i64>,
    /// per-ship agent token
    pub auth_token: String,
    /// deadline (µs) while running
    pub deadline: Option<i64>,
    /// whether it ever became ready
    pub ever_running: bool,
    /// a warm-pool ship: no session, default spec, never expires while idle (RUNNING: ready to
    /// be claimed; CREATING: being filled)
    pub warm: bool,
}

impl ShipRow {
    /// The typed status.
    pub fn status(&self) -> ShipStatus {
        ShipStatus::from_code(self.status)
    }

    /// The stored effective spec.
    pub fn spec(&self) -> EffectiveSpec {
        EffectiveSpec {
            cpus: self.spec_cpus,
            memory_bytes: self.spec_memory.and_then(|m| u64::try_from(m).ok()),
            disk_bytes: self.spec_disk.and_then(|d| u64::try_from(d).ok()),
        }
    }

    /// Sets the status and the update time.
    pub fn set_status(&mut self, status: ShipStatus, now: Timestamp) {
        self.status = status.code();
        self.updated_at = now.micros();
    }
}

/// A stored relation between a session and a ship.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = session_ships, check_for_backend(diesel::sqlite::Sqlite))]
pub struct RelationRow {
    /// relation id
    pub id: String,
    /// the client's session string
    pub session_id: String,
    /// the ship
    pub ship_id: String,
    /// creation time (µs)
    pub created_at: i64,
    /// last use (µs)
    pub last_activity: i64,
    /// end of activity (µs)
    pub expires_at: i64,
    /// ttl by which activity refreshes the expiry
    pub initial_ttl: i64,
}

impl RelationRow {
    /// Whether the relation is active at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.expires_at > now.micros()
    }
}

/// The database handle: a small pool of SQLite connections.
#[derive(Clone)]
pub struct Store {
    pool: Pool<Conn>,
    /// One write transaction at a time in this process: a transaction waiting for another
    /// queues here and starts as soon as it ends, instead of polling SQLite's write lock with
    /// the busy handler's millisecond sleeps.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, applies pending migrations and builds
    /// the pool. `:memory:` is refused because every pooled connection would see another
    /// database.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let url = path
            .to_str()
            .ok_or_else(|| StoreError(format!("database path {path:?} is not UTF-8")))?
            .to_owned();
        if url == ":memory:" {
            return Err(StoreError(
                "an in-memory database cannot be shared by the pool: use a file".into(),
            ));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", parent.display())))?;
        }
        run_migrations(&url).await?;
        let mut manager_config = ManagerConfig::<Conn>::default();
        manager_config.custom_setup = Box::new(|url| {
            let url = url.to_owned();
            async move {
                let mut conn = Conn::establish(&url).await?;
                conn.batch_execute(PRAGMAS)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(url, manager_config);
        let pool = Pool::builder()
            .max_size(4)
            .connection_timeout(std::time::Duration::from_secs(10))
            .build(manager)
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(Self {
            pool,
            writer: std::sync::Arc::default(),
        })
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on a blocking thread.
    ///
    /// The work runs in a task of its own: a caller that is cancelled (a client that
    /// disconnects) only detaches from it, instead of blocking a runtime thread until SQLite
    /// finishes, as dropping a connection in the middle of a query would.
    pub async fn tx<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut SqliteConnection) -> QueryResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let (pool, writer) = (self.pool.clone(), self.writer.clone());
        tokio::spawn(async move {
            let _turn = writer.lock().await;
            let mut conn = pool
                .get()
                .await
                .map_err(|e| StoreError(format!("no database connection: {e}")))?;
            Ok(conn
                .spawn_blocking(move |c| c.immediate_transaction(f))
                .await?)
        })
        .await
        .map_err(|e| StoreError(format!("database task failed: {e}")))?
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        self.tx(|c| diesel::sql_query("SELECT 1").execute(c).map(|_| ()))
            .await
    }
}

/// Applies pending migrations over a plain sync connection on a blocking thread (the
/// migration harness must not run on an async runtime thread).
pub async fn run_migrations(url: &str) -> StoreResult<Vec<String>> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = SqliteConnection::establish(&url)
            .map_err(|e| StoreError(format!("cannot open {url}: {e}")))?;
        diesel::connection::SimpleConnection::batch_execute(&mut conn, PRAGMAS)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| StoreError(format!("migration failed: {e}")))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await
    .map_err(|e| StoreError(format!("migration task failed: {e}")))?
}

/// Synchronous queries, used inside [`Store::tx`].
pub mod q {
    use super::*;

    /// One ship.
    pub fn ship(c: &mut SqliteConnection, id: &str) -> QueryResult<Option<ShipRow>> {
        ships::table
            .find(id)
            .select(ShipRow::as_select())
            .first(c)
            .optional()
    }

    /// Every ship, newest first (ties: id ascending).
    pub fn all_ships(c: &mut SqliteConnection) -> QueryResult<Vec<ShipRow>> {
        ships::table
            .order((ships::created_at.desc(), ships::id.asc()))
            .select(ShipRow::as_select())
            .load(c)
    }

    /// Ships with a status.
    pub fn ships_with_status(
        c: &mut SqliteConnection,
        status: ShipStatus,
    ) -> QueryResult<Vec<ShipRow>> {
        ships::table
            .filter(ships::status.eq(status.code()))
            .order((ships::created_at.asc(), ships::id.asc()))
            .select(ShipRow::as_select())
            .load(c)
    }

    /// Inserts a ship.
    pub fn insert_ship(c: &mut SqliteConnection, row: &ShipRow) -> QueryResult<()> {
        diesel::insert_into(ships::table)
            .values(row)
            .execute(c)
            .map(|_| ())
    }

    /// Writes every column of a ship.
    pub fn save_ship(c: &mut SqliteConnection, row: &ShipRow) -> QueryResult<()> {
        diesel::update(ships::table.find(&row.id))
            .set(row)
            .execute(c)
            .map(|_| ())
    }

    /// Deletes a ship and (by cascade) its relations.
    pub fn delete_ship(c: &mut SqliteConnection, id: &str) -> QueryResult<()> {
        diesel::delete(session_ships::table.filter(session_ships::ship_id.eq(id))).execute(c)?;
        diesel::delete(ships::table.find(id)).execute(c).map(|_| ())
    }

    /// The earliest deadline among running ships.
    pub fn next_deadline(c: &mut SqliteConnection) -> QueryResult<Option<i64>> {
        use diesel::dsl::min;
        ships::table
            .filter(ships::status.eq(ShipStatus::Running.code()))
            .filter(ships::warm.eq(false))
            .select(min(ships::deadline))
            .first(c)
    }

    /// Running ships whose deadline is at or before `now`.
    pub fn overdue_ships(c: &mut SqliteConnection, now: i64) -> QueryResult<Vec<String>> {
        ships::table
            .filter(ships::status.eq(ShipStatus::Running.code()))
            .filter(ships::warm.eq(false))
            .filter(ships::deadline.le(now).or(ships::deadline.is_null()))
            .select(ships::id)
            .load(c)
    }

    /// Ships in status 1 or 2.
    pub fn occupying_ship_ids(c: &mut SqliteConnection) -> QueryResult<Vec<String>> {
        ships::table
            .filter(ships::status.eq_any([ShipStatus::Running.code(), ShipStatus::Creating.code()]))
            .select(ships::id)
            .load(c)
    }

    /// Ships that hold an admission slot: RUNNING, CREATING, and STOPPED ships whose container
    /// could not be removed yet (`container_id` kept until it is).
    pub fn slot_holders(c: &mut SqliteConnection) -> QueryResult<Vec<String>> {
        ships::table
            .filter(
                ships::status
                    .eq_any([ShipStatus::Running.code(), ShipStatus::Creating.code()])
                    .or(ships::container_id.is_not_null()),
            )
            .select(ships::id)
            .load(c)
    }

    /// STOPPED ships whose container could not be removed yet.
    pub fn stopped_with_container(c: &mut SqliteConnection) -> QueryResult<Vec<ShipRow>> {
        ships::table
            .filter(ships::status.eq(ShipStatus::Stopped.code()))
            .filter(ships::container_id.is_not_null())
            .order((ships::created_at.asc(), ships::id.asc()))
            .select(ShipRow::as_select())
            .load(c)
    }

    /// Id and deadline of every running ship outside the warm pool.
    pub fn running_deadlines(c: &mut SqliteConnection) -> QueryResult<Vec<(String, Option<i64>)>> {
        ships::table
            .filter(ships::status.eq(ShipStatus::Running.code()))
            .filter(ships::warm.eq(false))
            .select((ships::id, ships::deadline))
            .load(c)
    }

    /// Warm-pool ships with a status, oldest first.
    pub fn warm_ships(c: &mut SqliteConnection, status: ShipStatus) -> QueryResult<Vec<ShipRow>> {
        ships::table
            .filter(ships::warm.eq(true))
            .filter(ships::status.eq(status.code()))
            .order((ships::created_at.asc(), ships::id.asc()))
            .select(ShipRow::as_select())
            .load(c)
    }

    /// Relations of a ship, oldest first.
    pub fn relations_of_ship(
        c: &mut SqliteConnection,
        ship_id: &str,
    ) -> QueryResult<Vec<RelationRow>> {
        session_ships::table
            .filter(session_ships::ship_id.eq(ship_id))
            .order((session_ships::created_at.asc(), session_ships::id.asc()))
            .select(RelationRow::as_select())
            .load(c)
    }

    /// Relations of a session with their ships.
    pub fn relations_of_session(
        c: &mut SqliteConnection,
        session_id: &str,
    ) -> QueryResult<Vec<(RelationRow, ShipRow)>> {
        session_ships::table
            .inner_join(ships::table)
            .filter(session_ships::session_id.eq(session_id))
            .select((RelationRow::as_select(), ShipRow::as_select()))
            .load(c)
    }

    /// Every relation, oldest first (ties: id).
    pub fn all_relations(c: &mut SqliteConnection) -> QueryResult<Vec<RelationRow>> {
        session_ships::table
            .order((session_ships::created_at.asc(), session_ships::id.asc()))
            .select(RelationRow::as_select())
            .load(c)
    }

    /// The relation (session, ship).
    pub fn relation(
        c: &mut SqliteConnection,
        session_id: &str,
        ship_id: &str,
    ) -> QueryResult<Option<RelationRow>> {
        session_ships::table
            .filter(session_ships::session_id.eq(session_id))
            .filter(session_ships::ship_id.eq(ship_id))
            .select(RelationRow::as_select())
            .first(c)
            .optional()
    }

    /// Inserts or rewrites a relation.
    pub fn save_relation(c: &mut SqliteConnection, row: &RelationRow) -> QueryResult<()> {
        diesel::insert_into(session_ships::table)
            .values(row)
            .on_conflict(session_ships::id)
            .do_update()
            .set(row)
            .execute(c)
            .map(|_| ())
    }

    /// Deletes one relation.
    pub fn delete_relation(c: &mut SqliteConnection, id: &str) -> QueryResult<()> {
        diesel::delete(session_ships::table.find(id))
            .execute(c)
            .map(|_| ())
    }

    /// Number of active relations of a ship.
    pub fn active_count(c: &mut SqliteConnection, ship_id: &str, now: i64) -> QueryResult<i64> {
        session_ships::table
            .filter(session_ships::ship_id.eq(ship_id))
            .filter(session_ships::expires_at.gt(now))
            .count()
            .get_result(c)
    }
}
