//! The HTTP limits of issue 9 against a whole server over real sockets: bounded password
//! checks, connection caps and timeouts, and uploads that leave no stray file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fleetmq::http::HttpLimits;
use fleetmq_tests::{ADMIN_PASSWORD, TestApp};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

const TOKEN: &str = "/api/v1/users/token/";

/// Longest any single answer in these tests may take; a hang fails the test.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_beyond_the_bound_are_answered_at_once_and_logins_still_work() {
    let app = TestApp::spawn_with(|c| {
        c.api.password_checks = 1;
        c.api.token_attempts_per_minute = 1_000;
    })
    .await;
    let url = format!("{}{TOKEN}", app.base);
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..24 {
        let request = app
            .http
            .post(&url)
            .json(&json!({"username": "admin", "password": format!("wrong-guess-{i}")}));
        guesses.spawn(async move {
            let response = tokio::time::timeout(PATIENCE, request.send())
                .await
                .expect("a password check answers without hanging")
                .expect("request sent");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, retry_after, body)
        });
    }
    let answers = guesses.join_all().await;

    let mut busy = 0;
    for (status, retry_after, body) in &answers {
        match status {
            400 => assert_eq!(
                body["non_field_errors"],
                json!(["Unable to log in with provided credentials."])
            ),
            503 => {
                busy += 1;
                assert_eq!(retry_after.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
                assert!(
                    body["detail"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("The server is busy")),
                    "{body:?}"
                );
            }
            other => panic!("unexpected answer {other}: {body:?}"),
        }
    }
    assert!(
        busy > 0,
        "24 concurrent checks against a bound of 1 must turn some away"
    );

    let login = app
        .call(
            "POST",
            TOKEN,
            None,
            Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    assert_eq!(login.str("token").len(), 40);
    app.shutdown().await;
}

fn lowered_http(c: &mut fleetmq::Config, per_addr: usize) {
    c.http = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        max_connections: 200,
        max_connections_per_addr: per_addr,
        ..HttpLimits::default()
    };
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    tokio::time::timeout(PATIENCE, socket.connect(to))
        .await
        .expect("connects in time")
        .expect("connects")
}

/// Everything the server sends until it closes the connection (a reset counts as closed).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the server closes the connection in time")
        {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn healthz_from(from: IpAddr, to: SocketAddr) -> String {
    let mut stream = connect_from(from, to).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: fleetmq\r\nconnection: close\r\n\r\n")
        .await
        .expect("request sent");
    String::from_utf8_lossy(&read_until_closed(&mut stream).await).into_owned()
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER_LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_after_the_header_timeout_while_healthz_answers() {
    let app = TestApp::spawn_with(|c| lowered_http(c, 100)).await;
    let addr = app.http_addr();
    let started = Instant::now();
    let mut partial = Vec::new();
    for _ in 0..60 {
        let mut stream = connect_from(LOCAL, addr).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: fleetmq\r\n")
            .await
            .expect("half a request sent");
        partial.push(stream);
    }

    let health = healthz_from(LOCAL, addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    for stream in &mut partial {
        let answer = read_until_closed(stream).await;
        assert!(answer.is_empty(), "a half-sent request gets no answer");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed by the header timeout, not at once"
    );
    let health = healthz_from(LOCAL, addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    app.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| lowered_http(c, 100)).await;
    let mut stream = connect_from(LOCAL, app.http_addr()).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: fleetmq\r\n\r\n")
        .await
        .expect("request sent");
    let answer = String::from_utf8_lossy(&read_until_closed(&mut stream).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "answered, then closed once idle: {answer}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_cap_are_refused_while_another_address_is_served() {
    let app = TestApp::spawn_with(|c| {
        lowered_http(c, 4);
        c.http.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = app.http_addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(LOCAL, addr).await);
    }

    let mut refused = connect_from(LOCAL, addr).await;
    let answer = String::from_utf8_lossy(&read_until_closed(&mut refused).await).into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "refused at once: {answer}"
    );
    let health = healthz_from(OTHER_LOCAL, addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    drop(held);
    app.shutdown().await;
}

const CATEGORIES: &str = "/api/v1/firmware-upgrader/category/";
const BUILDS: &str = "/api/v1/firmware-upgrader/build/";
const BOARD: &str = "ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin";

/// A build in a new organization `slug`; returns (organization, build).
async fn build_of(app: &TestApp, slug: &str) -> (String, String) {
    let org = app.create_org(slug).await;
    let category = app
        .post(
            CATEGORIES,
            &app.admin_token,
            json!({"name": "Routers", "organization": org}),
        )
        .await
        .str("id");
    let build = app
        .post(
            BUILDS,
            &app.admin_token,
            json!({"category": category, "version": "2.0"}),
        )
        .await;
    assert_eq!(build.status, 201, "{:?}", build.body);
    (org, build.str("id"))
}

/// Uploads a form whose file part comes before its `type`.
async fn upload_file_first(app: &TestApp, build: &str, kind: &str) -> u16 {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![7u8; 4096]).file_name("image.bin"),
        )
        .text("type", kind.to_owned());
    app.http
        .post(format!("{}{BUILDS}{build}/image/", app.base))
        .bearer_auth(&app.admin_token)
        .multipart(form)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

fn firmware_files(app: &TestApp) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(app.data_dir().join("firmware"))
        .expect("firmware directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn failed_uploads_leave_no_file_and_a_restart_removes_orphans() {
    let mut app = TestApp::spawn().await;
    let (_, build) = build_of(&app, "acme").await;
    assert_eq!(upload_file_first(&app, &build, BOARD).await, 201);
    let recorded = firmware_files(&app);
    assert_eq!(recorded.len(), 1);

    // Refused after the file was stored: unknown type, and the same type twice.
    assert_eq!(upload_file_first(&app, &build, "no-such-board").await, 400);
    assert_eq!(upload_file_first(&app, &build, BOARD).await, 400);

    // A client that goes away in the middle of its file.
    let mut stream = connect_from(LOCAL, app.http_addr()).await;
    let head = format!(
        "POST {BUILDS}{build}/image/ HTTP/1.1\r\nhost: fleetmq\r\nauthorization: Bearer {}\r\n\
         content-type: multipart/form-data; boundary=XyZ\r\ncontent-length: 1000000\r\n\r\n\
         --XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"image.bin\"\r\n\r\n",
        app.admin_token
    );
    stream.write_all(head.as_bytes()).await.expect("head sent");
    stream
        .write_all(&[7u8; 64 * 1024])
        .await
        .expect("part of the file sent");
    // The upload is under way once its unfinished file exists.
    wait_for(|| firmware_files(&app).iter().any(|n| n.ends_with(".part"))).await;
    drop(stream);
    wait_for(|| firmware_files(&app) == recorded).await;

    // An organization deleted with its firmware's files still on disk, and a stray file.
    let (gone, gone_build) = build_of(&app, "gone").await;
    assert_eq!(upload_file_first(&app, &gone_build, BOARD).await, 201);
    let deleted = app
        .call(
            "DELETE",
            &format!("/api/v1/users/organization/{gone}/"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
    let stray = app
        .data_dir()
        .join("firmware")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::write(stray, b"never recorded").expect("stray file");
    assert_eq!(firmware_files(&app).len(), 3);

    app.restart().await;
    assert_eq!(firmware_files(&app), recorded);
    let images = app
        .get(&format!("{BUILDS}{build}/image/"), &app.admin_token)
        .await;
    assert_eq!(images.body["count"], 1, "the recorded image is untouched");
    app.shutdown().await;
}

/// Waits until `done` holds, for state only the file system shows; fails after [`PATIENCE`].
async fn wait_for(done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
