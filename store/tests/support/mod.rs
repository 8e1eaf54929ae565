//! What the store's test files share: the two engines a backend runs on, a fixture that opens
//! one, and [`on_both_engines!`], which makes each test once per engine (`on_redb::…`,
//! `on_postgres::…`). PostgreSQL is a throwaway server per test binary (Debian's package; see
//! `tests/src/postgres.rs`), one fresh database per fixture. Each test file uses part of it.
#![allow(dead_code)]

#[allow(dead_code)]
#[path = "../../../tests/src/postgres.rs"]
pub mod postgres;

use std::sync::OnceLock;

use fleetmq_store::{
    DeviceFields, DeviceKey, DeviceName, KvBackend, MacAddress, OrgId, OrganizationFields,
    PostgresOptions, Result, Slug, StoreOptions,
};

/// An active organization named after its slug.
pub fn org_fields(slug: &str) -> OrganizationFields {
    OrganizationFields {
        name: slug.to_uppercase(),
        slug: Slug::parse(slug).expect("valid slug"),
        description: String::new(),
        email: String::new(),
        url: String::new(),
        is_active: true,
    }
}

/// A device of `org` named `name` with `model`, a fresh key and a MAC address made from `n`
/// (`02:00:00:00:hh:ll`, distinct for each `n` below 65,536).
pub fn device_fields(org: OrgId, name: &str, n: u32, model: &str) -> DeviceFields {
    DeviceFields {
        name: DeviceName::parse(name).expect("valid name"),
        organization: org,
        group: None,
        mac_address: MacAddress::parse(&format!("02:00:00:00:{:02x}:{:02x}", n / 256, n % 256))
            .expect("valid mac"),
        key: DeviceKey::generate(),
        last_ip: None,
        management_ip: None,
        model: model.to_owned(),
        os: String::new(),
        system: String::new(),
        notes: String::new(),
        hardware_id: String::new(),
    }
}

/// Where a backend keeps its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// An embedded redb file.
    Redb,
    /// A PostgreSQL database.
    Postgres,
}

/// One store's data: its directory (redb's file, the sealing secret, blobs) and, on
/// PostgreSQL, its own database. Every [`Fixture::open`] opens the same data again.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    postgres: Option<String>,
}

impl Fixture {
    pub fn new(engine: Engine) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let postgres = match engine {
            Engine::Redb => None,
            Engine::Postgres => Some(server().database().expect("a fresh database")),
        };
        Self { dir, postgres }
    }

    /// A backend on this data (a reopen when one was open before).
    pub fn open(&self) -> KvBackend {
        self.try_open(&StoreOptions::default())
            .expect("store opens")
    }

    /// Everything stored, as bytes: redb's data file, or every value of every table in
    /// PostgreSQL (what someone holding the data but not the server's secret could read).
    pub fn raw_data(&self) -> Vec<u8> {
        let Some(url) = &self.postgres else {
            return std::fs::read(self.dir.path().join(fleetmq_store::kv_backend::DATA_FILE))
                .expect("data file");
        };
        let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect");
        let tables = client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_name LIKE 'kv_%'",
                &[],
            )
            .expect("tables");
        let mut data = Vec::new();
        for table in tables {
            let name: String = table.get(0);
            for row in client
                .query(&format!("SELECT k, v FROM {name}"), &[])
                .expect("rows")
            {
                data.extend(row.get::<_, Vec<u8>>(0));
                data.extend(row.get::<_, Vec<u8>>(1));
            }
        }
        data
    }

    /// Where its tables are, for `fleetmq_store::migrate`.
    pub fn location(&self) -> fleetmq_store::migrate::Location {
        match &self.postgres {
            None => fleetmq_store::migrate::Location::Redb(self.dir.path().to_path_buf()),
            Some(url) => fleetmq_store::migrate::Location::Postgres(PostgresOptions::new(url)),
        }
    }

    pub fn try_open(&self, options: &StoreOptions) -> Result<KvBackend> {
        match &self.postgres {
            None => KvBackend::open_with(self.dir.path(), options),
            Some(url) => KvBackend::connect(&PostgresOptions::new(url), self.dir.path(), options),
        }
    }
}

fn server() -> &'static postgres::TempPostgres {
    static SERVER: OnceLock<postgres::TempPostgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        postgres::TempPostgres::start(postgres::Durability::Off).expect("PostgreSQL starts")
    })
}

/// `on_both_engines!(a, b)`: tests `on_redb::a`, `on_postgres::a`, … calling `a(Engine::…)`.
#[allow(unused_macros)]
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod on_redb {
            $(#[test]
            fn $test() {
                super::$test(crate::support::Engine::Redb)
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $test() {
                super::$test(crate::support::Engine::Postgres)
            })*
        }
    };
}
