//! Live sessions by router client id: the basis of takeover ordering and of
//! [`BrokerHandle::disconnect_device`](crate::BrokerHandle::disconnect_device).
//!
//! rumqttd's router would itself drop an older connection with the same client id, but
//! silently and after the new one is registered, so the old session's last will (e.g. a
//! retained `offline` presence) could land *after* the new session announced `online`. We
//! instead stop the old session ourselves, wait until it has published its will and left the
//! router, and only then register the new one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fleetmq_protocol::{DeviceId, Principal};
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::Login;
use crate::revocation::Affected;

/// How long a new session waits for the one it replaces to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// How long a kick is remembered to refuse logins that were already in flight. Longer than
/// any connect (connect timeout + takeover wait).
const KICK_MEMORY: Duration = Duration::from_secs(120);

/// What a live session was accepted with: asked again when its login may have been revoked.
#[derive(Debug)]
pub(crate) struct Credentials {
    pub(crate) login: Login,
    pub(crate) principal: Principal,
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) generation: u64,
    pub(crate) credentials: Arc<Credentials>,
    /// How the session is told to end and how it ends, shared with its guard.
    end: Arc<End>,
}

/// How a session is told to end and how it ends: one small allocation per live session (a
/// cancellation token for "finished" and a shared flag for "taken over" were 144 bytes, and a
/// child token of shutdown for the kick 107 more, taken under the shutdown token's lock at
/// every connect).
#[derive(Default)]
struct End {
    /// Set before the kick when the kick is a takeover by a new connection.
    taken_over: AtomicBool,
    /// Set when the session must end: takeover, an admin kick, a revocation, shutdown.
    kicked: AtomicBool,
    /// The session's task, waiting for a kick among other things.
    kick_waker: AtomicWaker,
    /// Set once the session is gone from the registry (its guard dropped).
    finished: AtomicBool,
    notify: Notify,
}

/// Tells one session to end (see [`SessionGuard::kicked`]).
#[derive(Clone, Copy)]
pub(crate) struct Kick<'a>(&'a End);

impl<'a> Kick<'a> {
    /// Resolves once the session was told to end. One task waits on a session's kick (its
    /// own connection task): a second waiter would take the first's place.
    pub(crate) fn cancelled(self) -> Kicked<'a> {
        Kicked(self.0)
    }

    /// Whether the session was told to end.
    #[cfg(test)]
    pub(crate) fn is_cancelled(self) -> bool {
        self.0.kicked.load(Ordering::Acquire)
    }
}

/// The future of [`Kick::cancelled`].
pub(crate) struct Kicked<'a>(&'a End);

impl Future for Kicked<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.kicked.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.0.kick_waker.register(cx.waker());
        // A kick between the load and the registration woke nobody: look again.
        if self.0.kicked.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl End {
    fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        self.kick_waker.wake();
    }

    fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once [`finish`](Self::finish) was called, before or after this call.
    async fn finished(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a `finish` in between wakes this wait.
        notified.as_mut().enable();
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// Registry of live sessions.
#[derive(Default)]
pub(crate) struct Sessions {
    /// Keyed by the router client id, shared with the session's guard.
    live: Mutex<HashMap<Arc<str>, Entry>>,
    generations: AtomicU64,
    /// When each key was last kicked, so that a login authenticated *before* the kick (e.g.
    /// before the device was deactivated) but registered after it is refused.
    kicked_at: Mutex<HashMap<String, Instant>>,
    /// Recent revocations, so that a login authenticated before one but registered after the
    /// sessions were judged is judged too.
    revoked_at: Mutex<Vec<(Instant, Affected)>>,
}

/// The session was kicked while its login was being authenticated.
#[derive(Debug)]
pub(crate) struct KickedDuringLogin;

/// Held by a connection task for the lifetime of its session; dropping it unregisters the
/// session and wakes whoever waits for it to finish.
pub(crate) struct SessionGuard<'a> {
    sessions: &'a Sessions,
    key: Arc<str>,
    entry: Entry,
}

impl SessionGuard<'_> {
    /// Cancelled when the session must end (takeover, admin kick, revocation, shutdown).
    pub(crate) fn kicked(&self) -> Kick<'_> {
        Kick(&self.entry.end)
    }

    /// What the session was accepted with.
    pub(crate) fn credentials(&self) -> &Credentials {
        &self.entry.credentials
    }

    /// Whether the kick (if any) was a new connection taking the session over.
    /// The session's key (namespaced client id).
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn taken_over(&self) -> bool {
        self.entry.end.taken_over.load(Ordering::Relaxed)
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        let mut live = self.sessions.lock();
        if live
            .get(&*self.key)
            .is_some_and(|e| e.generation == self.entry.generation)
        {
            live.remove(&*self.key);
        }
        drop(live);
        self.entry.end.finish();
    }
}

impl Sessions {
    /// A registry with room for `sessions` live sessions before its map grows (a growing
    /// map rehashes every key under its lock, stalling every connect meanwhile).
    pub(crate) fn with_capacity(sessions: usize) -> Self {
        Self {
            live: Mutex::new(HashMap::with_capacity(sessions)),
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session under `key`, stopping (and waiting for) any session it replaces.
    /// `authenticated_at` is when authentication started; a kick after it refuses the session.
    /// A session registered once `shutdown` is cancelled is kicked at once (those registered
    /// before are kicked by [`stop_all`](Self::stop_all)), so a connection waits on its kick
    /// alone.
    pub(crate) async fn register(
        &self,
        key: &str,
        authenticated_at: Instant,
        credentials: Credentials,
        shutdown: &CancellationToken,
    ) -> Result<SessionGuard<'_>, KickedDuringLogin> {
        let kicked_at = self
            .kicked_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied();
        if kicked_at.is_some_and(|kicked| kicked >= authenticated_at) {
            return Err(KickedDuringLogin);
        }
        let entry = Entry {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            credentials: Arc::new(credentials),
            end: Arc::default(),
        };
        let key: Arc<str> = Arc::from(key);
        let previous = self.lock().insert(Arc::clone(&key), entry.clone());
        // Shutdown is cancelled before `stop_all` takes the lock: an insert after that lock
        // sees the cancellation here.
        if shutdown.is_cancelled() {
            entry.end.kick();
        }
        if let Some(previous) = previous {
            tracing::debug!(client = &*key, "session taken over");
            previous.end.taken_over.store(true, Ordering::Relaxed);
            previous.end.kick();
            if tokio::time::timeout(TAKEOVER_WAIT, previous.end.finished())
                .await
                .is_err()
            {
                tracing::warn!(client = &*key, "previous session did not finish in time");
            }
        }
        Ok(SessionGuard {
            sessions: self,
            key,
            entry,
        })
    }

    /// Stops the session registered under `key`, waiting until it is gone. Returns whether
    /// there was one.
    pub(crate) async fn kick(&self, key: &str) -> bool {
        {
            let now = Instant::now();
            let mut kicked_at = self.kicked_at.lock().unwrap_or_else(|p| p.into_inner());
            kicked_at.retain(|_, at| now.duration_since(*at) < KICK_MEMORY);
            kicked_at.insert(key.to_owned(), now);
        }
        let Some(entry) = self.lock().get(key).cloned() else {
            return false;
        };
        entry.end.kick();
        let _ = tokio::time::timeout(TAKEOVER_WAIT, entry.end.finished()).await;
        true
    }

    /// Tells every live session to end (shutdown; see [`register`](Self::register)).
    pub(crate) fn stop_all(&self) {
        for entry in self.lock().values() {
            entry.end.kick();
        }
    }

    /// Records a revocation and returns the live sessions it may concern.
    pub(crate) fn revoke(&self, affected: Affected) -> Vec<(String, Entry)> {
        {
            let now = Instant::now();
            let mut revoked = self.revoked_at.lock().unwrap_or_else(|p| p.into_inner());
            revoked.retain(|(at, _)| now.duration_since(*at) < KICK_MEMORY);
            revoked.push((now, affected.clone()));
        }
        self.lock()
            .iter()
            .filter(|(_, entry)| affected.covers(&entry.credentials.principal))
            .map(|(key, entry)| (key.to_string(), entry.clone()))
            .collect()
    }

    /// Whether a revocation that concerns `principal` happened at or after `at`.
    pub(crate) fn revoked_since(&self, at: Instant, principal: &Principal) -> bool {
        self.revoked_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(when, affected)| *when >= at && affected.covers(principal))
    }

    /// Ends the session registered under `key` if it is still the one of `generation` (a
    /// newer session was authenticated after the change), waiting until it is gone.
    pub(crate) async fn end(&self, key: &str, generation: u64) {
        let Some(entry) = self
            .lock()
            .get(key)
            .filter(|e| e.generation == generation)
            .cloned()
        else {
            return;
        };
        entry.end.kick();
        let _ = tokio::time::timeout(TAKEOVER_WAIT, entry.end.finished()).await;
    }
}

/// The client id under which a session is known to the router.
///
/// Network clients choose their client ids, so ids are namespaced by identity: otherwise an
/// anonymous client using a device's id would take over the device's session, including a
/// persistent session's subscriptions. Devices: `d~{device_id}`; operators:
/// `o~{escaped username}~{client_id}`; anonymous: `a~{client_id}`; in-process links:
/// `i~{name}`. Client ids never contain `/ + # $` (refused at CONNECT), and the escaping
/// keeps the username part free of them and of `~`, so keys are unambiguous.
pub(crate) fn router_client_id(
    principal: &Principal,
    username: Option<&str>,
    client_id: &str,
) -> String {
    match principal {
        Principal::Device { device_id, .. } => device_client_id(*device_id),
        Principal::Operator { .. } => {
            format!("o~{}~{client_id}", escape(username.unwrap_or_default()))
        }
        Principal::Anonymous => format!("a~{client_id}"),
    }
}

/// Router client id of a device's session.
pub(crate) fn device_client_id(device_id: DeviceId) -> String {
    format!("d~{device_id}")
}

/// Router client id of an in-process link.
pub(crate) fn internal_client_id(name: &str) -> String {
    format!("i~{}", escape(name))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '/' | '+' | '#' | '$' | '~' | '%' | '\0' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_protocol::OrgScope;

    #[test]
    fn router_ids_are_namespaced_and_free_of_router_forbidden_characters() {
        let d1 = "00000000-0000-4000-8000-0000000000d1";
        let dev = Principal::Device {
            org_slug: "acme".into(),
            device_id: d1.parse().unwrap(),
        };
        let op = Principal::Operator {
            orgs: OrgScope::All,
        };
        assert_eq!(router_client_id(&dev, Some("u"), d1), format!("d~{d1}"));
        assert_eq!(router_client_id(&Principal::Anonymous, None, "d1"), "a~d1");
        let key = router_client_id(&op, Some("a/b~c$"), "cli");
        assert_eq!(key, "o~a%2Fb%7Ec%24~cli");
        assert!(!key.contains(['/', '+', '#', '$']));
        assert_ne!(
            router_client_id(&op, Some("x~y"), "z"),
            router_client_id(&op, Some("x"), "y~z")
        );
        assert_eq!(internal_client_id("bridge"), "i~bridge");
    }

    fn anonymous() -> Credentials {
        Credentials {
            login: Login {
                client_id: "c".into(),
                username: None,
                password: None,
                peer: ([127, 0, 0, 1], 1).into(),
                client_certificates: Vec::new(),
            },
            principal: Principal::Anonymous,
        }
    }

    #[tokio::test]
    async fn registering_the_same_key_kicks_and_waits_for_the_previous_session() {
        let sessions = Sessions::default();
        let first = sessions
            .register("k", Instant::now(), anonymous(), &CancellationToken::new())
            .await
            .unwrap();
        let end = Arc::clone(&first.entry.end);
        let ender = async move {
            first.kicked().cancelled().await;
            drop(first);
        };
        let shutdown = CancellationToken::new();
        let second = sessions.register("k", Instant::now(), anonymous(), &shutdown);
        let (second, ()) = tokio::join!(second, ender);
        let second = second.unwrap();
        assert!(end.finished.load(Ordering::Relaxed));
        assert!(end.taken_over.load(Ordering::Relaxed));
        assert!(!second.taken_over());
        assert!(!second.kicked().is_cancelled());
        assert!(sessions.lock().contains_key("k"));
        drop(second);
        assert!(!sessions.lock().contains_key("k"));
        assert!(!sessions.kick("k").await);
    }

    #[tokio::test]
    async fn shutdown_kicks_live_sessions_and_any_registered_after_it() {
        let sessions = Sessions::default();
        let shutdown = CancellationToken::new();
        let live = sessions
            .register("a~live", Instant::now(), anonymous(), &shutdown)
            .await
            .unwrap();
        assert!(!live.kicked().is_cancelled());
        let waiting = live.kicked().cancelled();
        shutdown.cancel();
        sessions.stop_all();
        waiting.await;
        let late = sessions
            .register("a~late", Instant::now(), anonymous(), &shutdown)
            .await
            .unwrap();
        assert!(late.kicked().is_cancelled());
        late.kicked().cancelled().await;
    }

    #[tokio::test]
    async fn a_wait_for_a_session_to_end_sees_an_end_before_or_after_it() {
        let before = End::default();
        before.finish();
        before.finished().await;
        let after = Arc::new(End::default());
        let ender = Arc::clone(&after);
        let (_, ()) = tokio::join!(after.finished(), async move { ender.finish() });
        assert!(after.finished.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_login_authenticated_before_a_kick_is_refused_and_a_later_one_accepted() {
        let sessions = Sessions::default();
        let before = Instant::now();
        assert!(!sessions.kick("d~dev").await);
        assert!(
            sessions
                .register("d~dev", before, anonymous(), &CancellationToken::new())
                .await
                .is_err()
        );
        assert!(
            sessions
                .register(
                    "d~dev",
                    Instant::now(),
                    anonymous(),
                    &CancellationToken::new()
                )
                .await
                .is_ok()
        );
        assert!(
            sessions
                .register("d~other", before, anonymous(), &CancellationToken::new())
                .await
                .is_ok()
        );
    }
}
