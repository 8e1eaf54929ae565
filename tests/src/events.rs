//! The live event stream (`GET /api/v1/events/`) read the way a browser's `EventSource` reads
//! it: one event (its name and JSON data) at a time.

use std::time::Duration;

use serde_json::Value;

use crate::TestApp;

/// Events of one open stream, read as they come.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// Opens a stream as the holder of `token`; it must be answered 200 with
    /// `text/event-stream`.
    pub async fn open(app: &TestApp, token: &str) -> EventStream {
        let response = app
            .http
            .get(format!("{}/api/v1/events/", app.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        let kind = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        EventStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (name and JSON data), or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut name = String::new();
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(value) = line.strip_prefix("event:") {
                            name = value.trim().to_owned();
                        } else if let Some(value) = line.strip_prefix("data:") {
                            data.push_str(value.trim());
                        }
                    }
                    // Keep-alive comments have neither.
                    if name.is_empty() && data.is_empty() {
                        continue;
                    }
                    return Some((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
                }
                match self.response.chunk().await {
                    Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await
        .expect("an event, or the end, in time")
    }

    /// The data of the next event named `name` (events of other names are skipped).
    pub async fn next_named(&mut self, name: &str) -> Value {
        loop {
            let (event, data) = self.next().await.expect("the stream goes on");
            if event == name {
                return data;
            }
        }
    }

    /// The next `presence` event: (device, online).
    pub async fn presence(&mut self) -> (String, bool) {
        loop {
            let (name, data) = self.next().await.expect("the stream goes on");
            if name == "presence" {
                let device = data["device"].as_str().unwrap_or_default().to_owned();
                return (device, data["online"] == true);
            }
        }
    }
}
