//! A throwaway PostgreSQL server (Debian's `postgresql` package) on a free loopback port, in a
//! temporary directory, for tests and benchmarks: `initdb`, `pg_ctl start`, one fresh database
//! per caller ([`TempPostgres::database`]).
//!
//! PostgreSQL refuses to run as root, so when the caller is root (CI) the server runs as the
//! package's `postgres` user. A small shell keeps it: it starts the server, says `ready`, and
//! stops it and deletes the directory when its stdin closes, which happens when the handle is
//! dropped or the process holding it exits, however it exits. So a server shared by a whole
//! test binary (in a `static`) never outlives it.
//!
//! This file depends on std and tempfile only: the store's tests include it by path.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A running server; stopped (and its directory removed) when dropped.
pub struct TempPostgres {
    child: Child,
    stdin: Option<ChildStdin>,
    bin: PathBuf,
    /// The server's command-line options (to start it again after [`TempPostgres::stop`]).
    options: String,
    /// The loopback port it listens on.
    pub port: u16,
    dir: PathBuf,
}

/// How durable the server is: tests want speed, benchmarks want what production has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`: a crash of the machine may lose data (tests).
    Off,
    /// PostgreSQL's defaults: every commit flushed to disk.
    Full,
}

impl TempPostgres {
    /// Initializes and starts a server (a few seconds). Fails when PostgreSQL is not installed
    /// (`apt-get install postgresql`) or does not start, with its log.
    pub fn start(durability: Durability) -> std::io::Result<TempPostgres> {
        let bin = server_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("fleetmq-postgres-")
            .tempdir()?
            .keep();
        let mut command = Command::new("sh");
        if is_root() {
            let (uid, gid) = postgres_user()?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let fsync = match durability {
            Durability::Off => "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            Durability::Full => "",
        };
        let script = r#"
            set -e
            "$BIN/initdb" -D "$DIR/data" -U fleetmq --auth=trust -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1
            "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 -o "$OPTIONS" start >/dev/null
            echo ready
            read _ || true
            "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
            rm -rf "$DIR"
        "#;
        // More server settings for a run, e.g. statement logging while looking into a test.
        let extra = std::env::var("FLEETMQ_TEST_POSTGRES_OPTIONS").unwrap_or_default();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 {fsync} {extra}",
            dir.display()
        );
        let mut child = command
            .args(["-c", script])
            .env("BIN", &bin)
            .env("DIR", &dir)
            .env("PORT", port.to_string())
            .env("OPTIONS", &options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut ready = String::new();
        if let Some(stdout) = child.stdout.take() {
            BufReader::new(stdout).read_line(&mut ready)?;
        }
        if ready.trim() != "ready" {
            let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(std::io::Error::other(format!(
                "PostgreSQL did not start; initdb said:\n{}\nthe server said:\n{}",
                log("initdb.log"),
                log("server.log")
            )));
        }
        Ok(TempPostgres {
            child,
            stdin,
            bin,
            options,
            port,
            dir,
        })
    }

    /// Creates a new, empty database and returns its URL.
    pub fn database(&self) -> std::io::Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fleetmq_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "fleetmq",
                &name,
            ])
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "createdb {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(self.url(&name))
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://fleetmq@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server (fast shutdown: sessions are cut), keeping its data: an outage.
    pub fn stop(&self) -> std::io::Result<()> {
        self.pg_ctl(&["-m", "fast", "stop"])
    }

    /// Starts the server again after [`TempPostgres::stop`], same port, same data.
    pub fn start_again(&self) -> std::io::Result<()> {
        let log = self.dir.join("server.log").display().to_string();
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "-o", &self.options, "start"])
    }

    /// `pg_ctl -D <data> <args>`, as the server's user.
    fn pg_ctl(&self, args: &[&str]) -> std::io::Result<()> {
        let mut command = Command::new(self.bin.join("pg_ctl"));
        if is_root() {
            let (uid, gid) = postgres_user()?;
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        let out = command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "pg_ctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        let mut log = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.join("server.log")) {
            let _ = file.read_to_string(&mut log);
        }
        log
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // End of input: the shell stops the server and removes the directory.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The newest installed server's `bin` directory (`/usr/lib/postgresql/<major>/bin`).
fn server_bin() -> std::io::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("{}: {e} (apt-get install postgresql)", root.display()),
            )
        })?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        std::io::Error::other(
            "no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)",
        )
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// The `postgres` user's uid and gid, from `/etc/passwd`.
fn postgres_user() -> std::io::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields[..] {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .ok_or_else(|| {
            std::io::Error::other(
                "running as root, and no `postgres` user to run PostgreSQL as (apt-get install postgresql)",
            )
        })
}
