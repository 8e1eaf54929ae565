//! REST API benchmark: loads a fleet straight into the store, starts the whole server, and
//! drives GET detail and GET list from a load generator on its own thread, printing req/s and
//! latency percentiles. Not a test: numbers go to docs/benchmarks.md.
//!
//! `cargo bench -p fleetmq-tests --bench api -- [--devices N] [--seconds S] [--connections C]
//! [--store redb|postgres] [--nodes N]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetmq::{Config, Server};
use fleetmq_bridge::external::ExternalBroker;
use fleetmq_store::{DeviceId, Membership, Password, Store, UserFields, Username};
use fleetmq_tests::fixtures::{bench_organization, register_devices};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use rand::Rng;

struct Options {
    devices: usize,
    seconds: u64,
    connections: usize,
    /// Run only scenarios whose name contains this text.
    only: Option<String>,
    /// `redb` or `postgres`.
    store: String,
    /// Nodes serving the REST API (more than 1 on PostgreSQL only); connections are spread
    /// over them.
    nodes: usize,
}

fn options() -> Options {
    let mut o = Options {
        devices: 100_000,
        seconds: 10,
        connections: 32,
        only: None,
        store: "redb".to_owned(),
        nodes: 1,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = pair[1].parse::<usize>().ok();
        match (pair[0].as_str(), value) {
            ("--devices", Some(v)) => o.devices = v,
            ("--seconds", Some(v)) => o.seconds = v as u64,
            ("--connections", Some(v)) => o.connections = v,
            ("--only", _) => o.only = Some(pair[1].clone()),
            ("--store", _) => o.store = pair[1].clone(),
            ("--nodes", Some(v)) => o.nodes = v.max(1),
            _ => {}
        }
    }
    o
}

fn main() -> anyhow::Result<()> {
    let o = options();
    let dir = tempfile::tempdir()?;
    let store = fleetmq_tests::BenchStore::start(&o.store)?;
    let (ids, token) = load_fleet(dir.path(), &store.options, o.devices)?;
    let ids = Arc::new(ids);

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = server_rt.block_on(Server::start(Config {
        data_dir: dir.path().to_path_buf(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        store: store.options.clone(),
        ..Config::default()
    }))?;
    let broker = ExternalBroker::new(format!("mqtt://{}", server.mqtt_addr()));
    let standbys = server_rt.block_on(store.standbys(o.nodes - 1, dir.path(), broker))?;
    let addrs: Vec<SocketAddr> = std::iter::once(server.http_addr())
        .chain(standbys.iter().map(Server::http_addr))
        .collect();
    println!(
        "fleet: {} devices; load: {} connections for {} s per scenario over {} node(s), generator on its own thread; store: {}",
        o.devices,
        o.connections,
        o.seconds,
        addrs.len(),
        store.label
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "scenario", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    );

    let pages = (o.devices as u64).div_ceil(100).max(1);
    let devices = o.devices.max(1);
    let scenarios: Vec<(&str, PathFn)> = vec![
        ("GET detail (random device)", {
            let ids = Arc::clone(&ids);
            Box::new(move |rng| {
                format!(
                    "/api/v1/controller/device/{}/",
                    ids[rng.random_range(0..ids.len())]
                )
            })
        }),
        (
            "GET list page_size=100, page 1",
            Box::new(|_| "/api/v1/controller/device/?page_size=100".to_owned()),
        ),
        (
            "GET list page_size=100, pages 1-10",
            Box::new(|rng| {
                format!(
                    "/api/v1/controller/device/?page_size=100&page={}",
                    rng.random_range(1..=10)
                )
            }),
        ),
        (
            "GET list page_size=100, any page",
            Box::new(move |rng| {
                format!(
                    "/api/v1/controller/device/?page_size=100&page={}",
                    rng.random_range(1..=pages)
                )
            }),
        ),
        // What the console's fleet view asks for besides the first page above.
        (
            "console: GET / (fleet page HTML)",
            Box::new(|_| "/".to_owned()),
        ),
        (
            "console: search one name",
            Box::new(move |rng| {
                format!(
                    "/api/v1/controller/device/?page_size=100&search=bench-{}",
                    rng.random_range(0..devices)
                )
            }),
        ),
        (
            "console: is_online=false",
            Box::new(|_| "/api/v1/controller/device/?page_size=100&is_online=false".to_owned()),
        ),
        (
            "console: ordering=name",
            Box::new(|_| "/api/v1/controller/device/?page_size=100&ordering=name".to_owned()),
        ),
    ];
    for (name, path) in scenarios {
        if o.only
            .as_ref()
            .is_some_and(|only| !name.contains(only.as_str()))
        {
            continue;
        }
        let result = drive(
            addrs.clone(),
            &token,
            o.connections,
            Duration::from_secs(o.seconds),
            path,
        )?;
        println!(
            "{:<34} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            name,
            result.requests as f64 / result.elapsed.as_secs_f64(),
            result.hist.value_at_quantile(0.50) as f64 / 1000.0,
            result.hist.value_at_quantile(0.99) as f64 / 1000.0,
            result.hist.max() as f64 / 1000.0,
            result.errors
        );
    }
    if o.only
        .as_ref()
        .is_none_or(|only| "console: page load".contains(only.as_str()))
    {
        page_loads(addrs[0], &token, 200)?;
    }
    for standby in standbys {
        server_rt.block_on(standby.shutdown());
    }
    server_rt.block_on(server.shutdown());
    Ok(())
}

/// Writes an organization, its manager and `n` devices straight into the store (one
/// transaction per 5,000 devices); returns the device ids and the manager's token.
fn load_fleet(
    dir: &std::path::Path,
    options: &fleetmq_store::StoreOptions,
    n: usize,
) -> anyhow::Result<(Vec<DeviceId>, String)> {
    let started = Instant::now();
    let store = Store::open_with(dir, options)?;
    let db = store.blocking();
    let org = bench_organization(db)?;
    let user = db.create_user(
        UserFields {
            username: Username::parse("bench-manager").map_err(anyhow::Error::msg)?,
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            is_superuser: false,
            is_active: true,
            groups: vec![fleetmq_store::Group::Operator],
            memberships: vec![Membership {
                organization: org.id,
                is_admin: true,
            }],
        },
        Password::parse("bench-password").map_err(anyhow::Error::msg)?,
    )?;
    let token = db.create_token(user.id)?;
    let ids: Vec<_> = register_devices(db, org.id, "bench", 0, n)?
        .into_iter()
        .map(|d| d.id)
        .collect();
    println!(
        "loaded {n} devices in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((ids, token.as_str().to_owned()))
}

struct Outcome {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

type PathFn = Box<dyn Fn(&mut rand::rngs::StdRng) -> String + Send + Sync>;

/// Runs `connections` keep-alive HTTP/1.1 connections (spread over `addrs` in turn) on a
/// single-threaded runtime in its own OS thread for `duration` (after one warm-up second).
fn drive(
    addrs: Vec<SocketAddr>,
    token: &str,
    connections: usize,
    duration: Duration,
    path: PathFn,
) -> anyhow::Result<Outcome> {
    let token = token.to_owned();
    let path = Arc::new(path);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let warmup = Instant::now() + Duration::from_secs(1);
            let deadline = warmup + duration;
            let mut tasks = Vec::new();
            for connection in 0..connections {
                let addr = addrs[connection % addrs.len()];
                let token = token.clone();
                let path = Arc::clone(&path);
                tasks.push(tokio::spawn(async move {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                    let (mut requests, mut errors) = (0u64, 0u64);
                    let stream = tokio::net::TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await?;
                    tokio::spawn(conn);
                    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
                    loop {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        let request = Request::get(path(&mut rng))
                            .header("host", addr.to_string())
                            .header("authorization", format!("Bearer {token}"))
                            .body(Empty::<Bytes>::new())?;
                        sender.ready().await?;
                        let response = sender.send_request(request).await?;
                        let ok = response.status().is_success();
                        response.into_body().collect().await?;
                        if now >= warmup {
                            hist.record(now.elapsed().as_micros().max(1) as u64)?;
                            requests += 1;
                            errors += u64::from(!ok);
                        }
                    }
                    anyhow::Ok((requests, errors, hist))
                }));
            }
            let mut out = Outcome {
                requests: 0,
                errors: 0,
                elapsed: duration,
                hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            };
            for task in tasks {
                let (requests, errors, hist) = task.await??;
                out.requests += requests;
                out.errors += errors;
                out.hist.add(hist)?;
            }
            anyhow::Ok(out)
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load generator panicked"))?
}

/// What the browser asks for when an operator opens the fleet view, in the order it asks:
/// the page, its stylesheet and modules, then the API calls its script makes.
const FLEET_PAGE_LOAD: &[&str] = &[
    "/",
    "/console/css/console.css",
    "/console/js/fleet.js",
    "/console/js/api.js",
    "/console/js/live.js",
    "/console/js/layout.js",
    "/console/js/dom.js",
    "/api/v1/users/session/",
    "/api/v1/users/organization/?page=1&page_size=100",
    "/api/v1/controller/group/?page=1&page_size=100",
    "/api/v1/controller/device/?page=1&page_size=100",
];

/// Opens the fleet view `n` times, one request after another on one connection (a browser
/// overlaps them, so this is the slow bound), on an otherwise idle server; prints the first
/// byte of the page and the whole load's percentiles.
fn page_loads(addr: SocketAddr, token: &str, n: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut first_byte = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut whole = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for round in 0..n + 5 {
            let started = Instant::now();
            for (i, path) in FLEET_PAGE_LOAD.iter().enumerate() {
                // As the browser does: the session cookie (an API token) on every request.
                let request = Request::get(*path)
                    .header("host", addr.to_string())
                    .header("cookie", format!("fleetmq_session={token}"))
                    .body(Empty::<Bytes>::new())?;
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "{path}: {}",
                    response.status()
                );
                if i == 0 && round >= 5 {
                    first_byte.record(started.elapsed().as_micros().max(1) as u64)?;
                }
                response.into_body().collect().await?;
            }
            if round >= 5 {
                whole.record(started.elapsed().as_micros().max(1) as u64)?;
            }
        }
        for (name, hist) in [
            ("console: page load, first byte of /", &first_byte),
            ("console: page load, all 11 requests", &whole),
        ] {
            println!(
                "{:<34} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                name,
                format!("{n} loads"),
                hist.value_at_quantile(0.50) as f64 / 1000.0,
                hist.value_at_quantile(0.99) as f64 / 1000.0,
                hist.max() as f64 / 1000.0,
                0
            );
        }
        anyhow::Ok(())
    })
}
