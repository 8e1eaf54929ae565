//! Cross-node notices on the PostgreSQL engine: every node sharing the database keeps caches
//! and in-process broadcasts of what it committed, so each also has to hear what the others
//! committed.
//!
//! A write transaction that changed a table, or carries announcements
//! ([`super::WriteTransaction::announce`]), sends `pg_notify('fleetmq', …)` just before its
//! COMMIT, in the same round trip. PostgreSQL delivers a notice only if, and when, its
//! transaction commits, so a notice is exactly as atomic as the writes it names: a rolled-back
//! write sends nothing, and nobody hears of a write before it is visible.
//!
//! A notice names the node that wrote (a random id chosen when the database is opened, so
//! the node can skip its own), the kv tables the commit changed and the announcements it
//! carried. PostgreSQL takes payloads under 8000 bytes, so a notice's body (JSON) is cut into
//! parts of at most [`PART_BYTES`], each prefixed with `node:commit:part:parts:`. The parts of
//! one commit are queued together (PostgreSQL serializes notifying commits) and put together
//! again by the listener ([`Reassembly`]).
//!
//! Each node's [`Listener`] holds one connection of its own (not from the pool: a LISTEN
//! belongs to a session) that runs `LISTEN fleetmq`, and hands the other nodes' commits to a
//! bounded broadcast ([`RemoteCommit`]). Notices sent while that connection is down are lost
//! for this node, so after every reconnection it says [`RemoteCommit::Everything`]: anything
//! may have changed, whoever caches must start over.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};
use tokio_postgres::{AsyncMessage, Config, NoTls};

/// The channel every node notifies and listens on.
pub(super) const CHANNEL: &str = "fleetmq";

/// Sends one commit's notice: each payload of the array is one `pg_notify`, in order.
pub(super) const NOTIFY_SQL: &str = "SELECT pg_notify('fleetmq', p) FROM unnest($1::text[]) AS p";

/// Body bytes per notify payload: PostgreSQL refuses payloads of 8000 bytes or more, and the
/// `node:commit:part:parts:` header takes a few dozen.
const PART_BYTES: usize = 7900;

/// A notice's body bytes at most (about 2,100 payloads). A commit carrying more (a
/// configuration change of several hundred thousand devices) sends its tables only, marked
/// `all`: its listeners treat it as [`RemoteCommit::Everything`]. It also bounds what a
/// listener puts together.
const MAX_NOTICE_BYTES: usize = 16 * 1024 * 1024;

/// Remote commits kept for a slow subscriber before it is told it lagged.
pub(super) const BACKLOG: usize = 1024;

/// The first wait before connecting the listener again; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often the listener checks that its connection still answers: a connection that died
/// without the server closing it (a lost network) would otherwise wait for notices forever.
const PING_EVERY: Duration = Duration::from_secs(15);

/// What another node committed, as this node's listener heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteCommit {
    /// A commit of another node: the kv tables it changed (redb's names) and the
    /// announcements it carried, in the order they were made.
    Commit {
        /// Tables with an entry written or removed.
        tables: Vec<String>,
        /// What [`super::WriteTransaction::announce`] was given, each whole.
        announcements: Vec<String>,
    },
    /// Notices may have been missed (the listener lost its connection and is back, or a
    /// notice was too large or arrived garbled): anything may have changed.
    Everything,
}

/// A notice's body, as JSON (short names: it travels in 8000-byte payloads).
#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(rename = "t", default)]
    tables: Vec<String>,
    #[serde(rename = "a", default)]
    announcements: Vec<String>,
    /// The announcements were too large to send: treat as [`RemoteCommit::Everything`].
    #[serde(rename = "all", default, skip_serializing_if = "std::ops::Not::not")]
    all: bool,
}

/// A random id naming this node in the notices it sends (16 hex digits).
pub(super) fn node_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The application name of a node's listener connection, as `pg_stat_activity` shows it.
pub(super) fn listener_name(node: &str) -> String {
    format!("fleetmq-listener-{node}")
}

/// The notify payloads of one commit (`commit` numbers the node's commits), each under
/// 8000 bytes; the parts of an announcement cut in two are joined again by [`Reassembly`].
pub(super) fn payloads(
    node: &str,
    commit: u64,
    tables: Vec<String>,
    announcements: Vec<String>,
) -> Vec<String> {
    let body = |announcements: Vec<String>, all: bool| Body {
        tables: tables.clone(),
        announcements,
        all,
    };
    let mut json = serde_json::to_string(&body(announcements, false)).unwrap_or_default();
    if json.is_empty() || json.len() > MAX_NOTICE_BYTES {
        json = serde_json::to_string(&body(Vec::new(), true)).unwrap_or_default();
    }
    let mut parts = Vec::new();
    let mut rest = json.as_str();
    while !rest.is_empty() {
        let mut end = rest.len().min(PART_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (part, after) = rest.split_at(end);
        parts.push(part);
        rest = after;
    }
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| format!("{node}:{commit}:{i}:{count}:{part}"))
        .collect()
}

/// One commit's parts heard so far.
struct Partial {
    node: String,
    commit: u64,
    parts: Vec<Option<String>>,
    bytes: usize,
}

/// Puts the parts of each commit's notice together again. A commit's parts arrive together,
/// so a part of another commit while one is incomplete means parts were lost.
#[derive(Default)]
pub(super) struct Reassembly {
    partial: Option<Partial>,
}

impl Reassembly {
    /// What a payload completes, if anything (`own`: this node's id, whose notices are
    /// skipped). A garbled payload, or one that shows parts were lost, gives
    /// [`RemoteCommit::Everything`]: whatever it was about is unknown.
    pub(super) fn take(&mut self, own: &str, payload: &str) -> Vec<RemoteCommit> {
        let mut out = Vec::new();
        let Some((node, commit, part, count, text)) = parse(payload) else {
            tracing::warn!("a garbled notice on the fleetmq channel; assuming anything changed");
            self.partial = None;
            out.push(RemoteCommit::Everything);
            return out;
        };
        if node == own {
            return out;
        }
        let same = self
            .partial
            .as_ref()
            .is_some_and(|p| p.node == node && p.commit == commit && p.parts.len() == count);
        if !same {
            if self.partial.take().is_some() {
                tracing::warn!("parts of a notice were lost; assuming anything changed");
                out.push(RemoteCommit::Everything);
            }
            self.partial = Some(Partial {
                node: node.to_owned(),
                commit,
                parts: vec![None; count],
                bytes: 0,
            });
        }
        let Some(partial) = self.partial.as_mut() else {
            return out;
        };
        partial.bytes += text.len();
        if partial.bytes > MAX_NOTICE_BYTES + PART_BYTES {
            self.partial = None;
            out.push(RemoteCommit::Everything);
            return out;
        }
        partial.parts[part] = Some(text.to_owned());
        if partial.parts.iter().any(Option::is_none) {
            return out;
        }
        let json: String = partial.parts.iter().flatten().map(String::as_str).collect();
        self.partial = None;
        out.push(match serde_json::from_str::<Body>(&json) {
            Ok(body) if !body.all => RemoteCommit::Commit {
                tables: body.tables,
                announcements: body.announcements,
            },
            Ok(_) => RemoteCommit::Everything,
            Err(e) => {
                tracing::warn!(error = %e, "an unreadable notice; assuming anything changed");
                RemoteCommit::Everything
            }
        });
        out
    }
}

/// `node:commit:part:parts:text`, with `part < parts`.
fn parse(payload: &str) -> Option<(&str, u64, usize, usize, &str)> {
    let mut fields = payload.splitn(5, ':');
    let node = fields.next()?;
    let commit = fields.next()?.parse().ok()?;
    let part: usize = fields.next()?.parse().ok()?;
    let count: usize = fields.next()?.parse().ok()?;
    let text = fields.next()?;
    // More parts than the largest notice has would only be someone else's noise.
    let most = MAX_NOTICE_BYTES / PART_BYTES + 2;
    (part < count && count <= most).then_some((node, commit, part, count, text))
}

/// A node's listener: its connection, LISTEN, and what it hands on.
pub(super) struct Listener {
    pub(super) config: Config,
    pub(super) connect_timeout: Duration,
    pub(super) node: String,
    pub(super) commits: broadcast::Sender<RemoteCommit>,
    /// Told when the first LISTEN is in place (the database waits for it when opened).
    pub(super) listening: Option<oneshot::Sender<()>>,
}

impl Listener {
    /// Listens until the runtime shuts down (the database is dropped), connecting again with
    /// backoff whenever the connection is lost; never gives up.
    pub(super) async fn run(mut self) {
        self.config.application_name(listener_name(&self.node));
        let mut missed = false;
        let mut backoff = MIN_BACKOFF;
        loop {
            let (listened, ended) = self.session(missed).await;
            if listened {
                backoff = MIN_BACKOFF;
            }
            // Whatever is committed from now until the next LISTEN is not heard.
            missed = true;
            tracing::warn!(
                error = %ended,
                retry_in = ?backoff,
                "the PostgreSQL notice listener lost its connection"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life: whether its LISTEN was in place, and why it ended. `missed`:
    /// notices may have been lost before it, announced once the LISTEN is in place.
    async fn session(&mut self, missed: bool) -> (bool, String) {
        let connected =
            tokio::time::timeout(self.connect_timeout, self.config.connect(NoTls)).await;
        let (client, mut connection) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => return (false, e.to_string()),
            Err(_) => return (false, "connecting timed out".to_owned()),
        };
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        {
            let sql = format!("LISTEN {CHANNEL}");
            let mut listen = std::pin::pin!(client.batch_execute(&sql));
            loop {
                tokio::select! {
                    done = &mut listen => match done {
                        Ok(()) => break,
                        Err(e) => return (false, e.to_string()),
                    },
                    message = messages.next() => match message {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return (false, e.to_string()),
                        None => return (false, "closed by the server".to_owned()),
                    },
                }
            }
        }
        if let Some(listening) = self.listening.take() {
            let _ = listening.send(());
        }
        if missed {
            let _ = self.commits.send(RemoteCommit::Everything);
        }
        tracing::debug!(node = %self.node, "listening for other nodes' commits");

        enum Event {
            Tick,
            Answered(Result<(), tokio_postgres::Error>),
            Message(Box<Option<Result<AsyncMessage, tokio_postgres::Error>>>),
        }
        let mut reassembly = Reassembly::default();
        let mut ticks = tokio::time::interval(PING_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        type Ping<'c> =
            std::pin::Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'c>>;
        let mut ping: Option<Ping<'_>> = None;
        loop {
            let event = tokio::select! {
                _ = ticks.tick() => Event::Tick,
                answered = async {
                    match ping.as_mut() {
                        Some(ping) => ping.await,
                        None => std::future::pending().await,
                    }
                } => Event::Answered(answered),
                message = messages.next() => Event::Message(Box::new(message)),
            };
            match event {
                Event::Message(message) => match *message {
                    Some(Ok(AsyncMessage::Notification(notice))) => {
                        if notice.channel() != CHANNEL {
                            continue;
                        }
                        for commit in reassembly.take(&self.node, notice.payload()) {
                            // Nobody subscribed (yet) is fine.
                            let _ = self.commits.send(commit);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return (true, e.to_string()),
                    None => return (true, "closed by the server".to_owned()),
                },
                Event::Tick if ping.is_some() => {
                    return (true, "the server did not answer a ping".to_owned());
                }
                Event::Tick => ping = Some(Box::pin(client.batch_execute("SELECT 1"))),
                Event::Answered(Ok(())) => ping = None,
                Event::Answered(Err(e)) => return (true, e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(tables: &[&str], announcements: &[String]) -> RemoteCommit {
        RemoteCommit::Commit {
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            announcements: announcements.to_vec(),
        }
    }

    #[test]
    fn a_small_notice_is_one_payload_and_reads_back() {
        let sent = payloads("aa", 1, vec!["devices".into()], vec!["x".into()]);
        assert_eq!(sent.len(), 1);
        let mut heard = Reassembly::default();
        assert_eq!(
            heard.take("bb", &sent[0]),
            vec![commit(&["devices"], &["x".to_owned()])]
        );
    }

    #[test]
    fn a_large_notice_is_cut_under_8000_bytes_and_put_together_whole() {
        // Multi-byte characters across the cuts too.
        let big = "é".repeat(20_000);
        let sent = payloads("aa", 7, vec!["t".into()], vec![big.clone(), "y".into()]);
        assert!(sent.len() > 4);
        assert!(sent.iter().all(|p| p.len() < 8000), "every payload fits");
        let mut heard = Reassembly::default();
        let mut out = Vec::new();
        for payload in &sent {
            out.extend(heard.take("bb", payload));
        }
        assert_eq!(out, vec![commit(&["t"], &[big, "y".to_owned()])]);
    }

    #[test]
    fn own_notices_are_skipped() {
        let sent = payloads("aa", 1, vec!["devices".into()], Vec::new());
        assert!(Reassembly::default().take("aa", &sent[0]).is_empty());
    }

    #[test]
    fn lost_parts_and_garbage_mean_anything_changed() {
        let big = "x".repeat(20_000);
        let first = payloads("aa", 1, vec!["t".into()], vec![big]);
        let second = payloads("aa", 2, vec!["u".into()], Vec::new());
        let mut heard = Reassembly::default();
        assert!(heard.take("bb", &first[0]).is_empty());
        assert_eq!(
            heard.take("bb", &second[0]),
            vec![RemoteCommit::Everything, commit(&["u"], &[])]
        );
        assert_eq!(heard.take("bb", "nonsense"), vec![RemoteCommit::Everything]);
        assert_eq!(
            heard.take("bb", "aa:1:0:1:{not json"),
            vec![RemoteCommit::Everything]
        );
    }

    #[test]
    fn a_notice_too_large_to_send_says_anything_changed() {
        let huge = "x".repeat(MAX_NOTICE_BYTES + 1);
        let sent = payloads("aa", 1, vec!["t".into()], vec![huge]);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            Reassembly::default().take("bb", &sent[0]),
            vec![RemoteCommit::Everything]
        );
    }
}
