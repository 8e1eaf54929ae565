//! The `fleetmq` binary as a newcomer uses it: first start prints a working token, SIGTERM
//! exits 0, and `admin create-token` refuses to share the data file with a running server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Running {
    child: Child,
    token: String,
    http: String,
}

/// Starts the binary on free ports and reads its first-start banner.
fn start(data_dir: &std::path::Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args(["--data-dir", &data_dir.display().to_string()])
        .args(["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"])
        .env("FLEETMQ_ADMIN_PASSWORD", "binary-test-password")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("fleetmq starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut token = String::new();
    let mut http = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("utf-8 output");
        if let Some(t) = line.trim().strip_prefix("token:") {
            token = t.trim().to_owned();
        }
        if let Some(rest) = line.strip_prefix("REST API on ") {
            http = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned();
            break;
        }
    }
    // Keep draining, so the server never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Running { child, token, http }
}

fn terminate(mut running: Running) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    running.child.wait().expect("fleetmq exits")
}

#[tokio::test]
async fn the_printed_token_works_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    assert_eq!(running.token.len(), 40, "the first start prints a token");

    let reply = reqwest::Client::new()
        .get(format!("{}/api/v1/controller/device/", running.http))
        .bearer_auth(&running.token)
        .send()
        .await
        .expect("request sent");
    assert_eq!(reply.status(), 200);
    let body: serde_json::Value = reply.json().await.expect("json");
    assert_eq!(body["count"], 0);

    let status = terminate(running);
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn create_token_refuses_a_held_data_file_and_works_once_the_server_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let create = || {
        Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .args(["admin", "create-token", "--username", "admin", "--data-dir"])
            .arg(dir.path())
            .output()
            .expect("fleetmq runs")
    };
    let held = create();
    assert!(!held.status.success());
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert!(
        stderr.contains("in use by another fleetmq process"),
        "{stderr}"
    );

    assert!(terminate(running).success());
    let free = create();
    assert!(
        free.status.success(),
        "{}",
        String::from_utf8_lossy(&free.stderr)
    );
    let token = String::from_utf8_lossy(&free.stdout).trim().to_owned();
    assert_eq!(token.len(), 40);

    // The new token works on the next start (which creates no second admin).
    let running = start(dir.path());
    assert!(
        running.token.is_empty(),
        "no first-start banner on a used store"
    );
    let reply = reqwest::Client::new()
        .get(format!("{}/api/v1/users/user/", running.http))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request sent");
    assert_eq!(reply.status(), 200);
    assert!(terminate(running).success());
}
