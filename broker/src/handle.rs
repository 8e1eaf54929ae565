//! In-process access to the broker: server-to-device publishes, in-process subscribers (the
//! bridge), and kicking devices.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fleetmq_protocol::topic::{is_valid_filter, is_valid_topic_name};
use fleetmq_protocol::{DeviceId, OrgScope, Principal};
use tokio_util::sync::CancellationToken;

use crate::BrokerError;
use crate::auth::Authenticator;
use crate::downlink::{Downlink, Downlinks, Sent, down_topic_device};
use crate::router::{Expiry, Mailbox, Message as Routed, MessageProperties, Router, Subscription};
use crate::session::{Sessions, device_client_id, internal_client_id};

/// State shared by the accept loop, every connection task and every handle.
pub(crate) struct Core {
    /// Subscriptions, sessions' queues, retained messages.
    pub(crate) router: Router,
    pub(crate) sessions: Sessions,
    /// Live device connections, for `down/` messages (served by the front end).
    pub(crate) downlinks: Downlinks,
    /// Who may connect; asked again for live sessions when a login may have been revoked.
    pub(crate) auth: Arc<dyn Authenticator>,
    /// What the front end refused, for `/metrics`.
    pub(crate) metrics: crate::metrics::Metrics,
    /// MQTT 5 wills waiting for their delay, by session key: a new connection of the session
    /// cancels its will.
    pub(crate) delayed_wills: Mutex<HashMap<String, CancellationToken>>,
}

impl Core {
    /// Routes a message the server publishes (QoS 1: subscribers receive it at their
    /// subscription's QoS, at most 1), waiting until what a persistent session queued of it
    /// is durable.
    pub(crate) async fn publish(
        &self,
        topic: Bytes,
        payload: Bytes,
        retain: bool,
        properties: Option<Arc<MessageProperties>>,
    ) -> Result<(), BrokerError> {
        let message = Routed {
            topic,
            payload,
            qos: 1,
            retain,
            properties,
        };
        match self.router.publish(message, None) {
            Some(ticket) => self.router.journal.durable(ticket).await,
            None => Ok(()),
        }
    }
}

impl Core {
    fn delayed_wills(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.delayed_wills.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a will once `after` (its MQTT 5 will delay) has passed, unless the session
    /// `key` connects again first ([`cancel_will`](Self::cancel_will)). `will` makes the
    /// message then (its expiry counts from its publication).
    pub(crate) fn publish_will_later(
        self: &Arc<Self>,
        key: String,
        will: Box<dyn FnOnce() -> Routed + Send>,
        after: Duration,
    ) {
        let token = CancellationToken::new();
        if let Some(previous) = self.delayed_wills().insert(key.clone(), token.clone()) {
            previous.cancel();
        }
        // Weak: a broker that stops (and its store, which the authenticator holds) is not
        // kept alive by a will waiting for its delay.
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = tokio::time::sleep(after) => {
                    let Some(core) = core.upgrade() else {
                        return;
                    };
                    let mut wills = core.delayed_wills();
                    // Not cancelled: the entry is still this one (a newer one cancels it).
                    if token.is_cancelled() {
                        return;
                    }
                    wills.remove(&key);
                    drop(wills);
                    core.router.publish(will(), None);
                }
            }
        });
    }

    /// The session `key` connected again: a will its previous connection left waiting is
    /// not published.
    pub(crate) fn cancel_will(&self, key: &str) {
        if let Some(token) = self.delayed_wills().remove(key) {
            token.cancel();
        }
    }

    /// Ends `mailbox`'s session once `after` has passed (its MQTT 5 session expiry
    /// interval), unless a connection took it again meanwhile (`attachments` is its count
    /// now).
    pub(crate) fn expire_later(
        self: &Arc<Self>,
        mailbox: Arc<Mailbox>,
        after: Duration,
        attachments: u64,
    ) {
        // Weak, like a delayed will's: the timer does not keep a stopped broker alive.
        let core = Arc::downgrade(self);
        let mailbox = Arc::downgrade(&mailbox);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let (Some(core), Some(mailbox)) = (core.upgrade(), mailbox.upgrade()) {
                core.router.expire(&mailbox, attachments);
            }
        });
    }
}

/// A cheap-to-clone handle on a running broker for the rest of the server.
#[derive(Clone)]
pub struct BrokerHandle {
    pub(crate) core: Arc<Core>,
}

impl BrokerHandle {
    /// Publishes a server-to-device message (e.g. `down/command/request`).
    ///
    /// A `fleetmq/v1/{org}/{device}/down/…` message goes straight to that device's live
    /// connection, if any, at the QoS of its matching subscription (at most 1); an offline
    /// device misses it (the bridge resends pending commands when it connects), and `retain`
    /// is not replayed to devices. Every message is also routed at QoS 1, for operators
    /// watching the org (and kept for them if `retain`).
    /// See docs/mqtt.md.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        retain: bool,
    ) -> Result<(), BrokerError> {
        self.publish_with(topic, payload.into(), retain, None).await
    }

    /// Publishes a request to a device (e.g. `down/command/request`) as
    /// [`publish`](Self::publish) does, telling an MQTT 5 device where to answer and with
    /// which correlation data (MQTT 5 request/response, §4.10): `response_topic` must be one
    /// of the device's own `up/` topics, or the device may not publish its answer there. An
    /// MQTT 3.1.1 device gets the message alone and answers on its usual channel.
    pub async fn publish_request(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        response_topic: &str,
        correlation_data: impl Into<Bytes>,
    ) -> Result<(), BrokerError> {
        if !is_valid_topic_name(response_topic) {
            return Err(BrokerError::InvalidTopic(response_topic.to_owned()));
        }
        let properties = MessageProperties {
            response_topic: Some(response_topic.to_owned()),
            correlation_data: Some(correlation_data.into()),
            ..MessageProperties::default()
        };
        self.publish_with(topic, payload.into(), false, Some(Arc::new(properties)))
            .await
    }

    async fn publish_with(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
        properties: Option<Arc<MessageProperties>>,
    ) -> Result<(), BrokerError> {
        if !is_valid_topic_name(topic) || topic.starts_with('$') {
            return Err(BrokerError::InvalidTopic(topic.to_owned()));
        }
        if let Some(device_id) = down_topic_device(topic)? {
            let message = Downlink {
                topic: Bytes::copy_from_slice(topic.as_bytes()),
                payload: payload.clone(),
                properties: properties.clone(),
            };
            match self.core.downlinks.send(device_id, message) {
                Sent::Queued => {}
                Sent::Offline => tracing::debug!(topic, "device offline, downlink not delivered"),
                Sent::Full => tracing::warn!(topic, "device downlink queue full, message dropped"),
            }
        }
        self.core
            .publish(
                Bytes::copy_from_slice(topic.as_bytes()),
                payload,
                retain,
                properties,
            )
            .await
    }

    /// Opens an in-process subscriber (tests, tools). Returns once its filters are in the
    /// router, so nothing published afterwards is missed; retained messages they match come
    /// first. Delivery is at QoS 0 through a queue bounded like a client session's: a
    /// subscriber that falls that far behind loses the newest messages (counted).
    ///
    /// `name` identifies the link (a second link with the same name replaces the first).
    pub async fn link(&self, name: &str, filters: &[&str]) -> Result<LocalLink, BrokerError> {
        for filter in filters {
            if !is_valid_filter(filter) {
                return Err(BrokerError::InvalidFilter((*filter).to_owned()));
            }
        }
        let everything = Principal::Operator {
            orgs: OrgScope::All,
        };
        let (mailbox, _, _) = self
            .core
            .router
            .open(
                &internal_client_id(name),
                everything,
                true,
                Expiry::WithConnection,
                usize::MAX,
            )
            .map_err(|_| BrokerError::Config("a clean session is never refused"))?;
        let granted: Vec<Subscription> =
            filters.iter().map(|f| Subscription::plain(f, 0)).collect();
        self.core.router.subscribe(&mailbox, &granted);
        Ok(LocalLink {
            core: Arc::clone(&self.core),
            mailbox,
        })
    }

    /// The broker's counters (sockets and logins refused, messages routed and dropped) with their Prometheus names and
    /// help texts, for the server's `/metrics`.
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut metrics = self.core.metrics.snapshot();
        metrics.extend(self.core.router.snapshot());
        metrics
    }

    /// Disconnects the device's live MQTT session, if any, publishing its last will (so its
    /// presence turns `offline`). Call it after deactivating a device so that it cannot keep
    /// using a session authenticated before. Returns whether a session was found; returns
    /// once it is closed.
    pub async fn disconnect_device(&self, device_id: DeviceId) -> bool {
        let key = device_client_id(device_id);
        self.core.sessions.kick(&key).await
    }
}

/// A message delivered to an in-process subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published on.
    pub topic: String,
    /// The payload, shared with the router's log (no copy).
    pub payload: Bytes,
    /// A retained message replayed because the link subscribed after it was published
    /// (e.g. every device's last presence when the bridge starts), not a live one.
    pub retain: bool,
}

/// An in-process subscriber created by [`BrokerHandle::link`]. Dropping it ends its session.
pub struct LocalLink {
    core: Arc<Core>,
    mailbox: Arc<Mailbox>,
}

impl LocalLink {
    /// The next message. Cancel-safe. Fails only if the link was replaced by another of the
    /// same name.
    pub async fn recv(&mut self) -> Result<Message, BrokerError> {
        let router = &self.core.router;
        loop {
            if let Some(message) = self.mailbox.pop(&router.journal, &router.metrics) {
                return Ok(Message {
                    topic: message.topic_str().to_owned(),
                    payload: message.payload,
                    retain: message.retain,
                });
            }
            if !self.mailbox.is_attached() {
                return Err(BrokerError::LinkClosed);
            }
            self.mailbox.ready().await;
        }
    }
}

impl Drop for LocalLink {
    fn drop(&mut self) {
        self.core.router.close(&self.mailbox);
    }
}
