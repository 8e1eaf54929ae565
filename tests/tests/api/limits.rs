//! The HTTP limits of issue 9 against a whole server over real sockets.

use std::time::Duration;

use fleetmq_tests::{ADMIN_PASSWORD, TestApp};
use serde_json::json;

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
