//! What each `up/` channel does to the store.
//!
//! | channel | effect |
//! |---|---|
//! | `presence` | the device's MQTT connection health; `online` also records model/os/system and resends pending commands |
//! | `telemetry` | appended through the group-commit writer; latest sample per device; refused when larger than the sample limit or stamped too far ahead of the server's clock; the device's history is bounded in bytes (oldest dropped) |
//! | `coordinates` | the device's (mobile, outdoor) location moves |
//! | `command/result` | ends the device's own in-progress command, once |
//! | `update`, `images` | the device's npm.system_update resources: stored, and they drive its upgrade operation (see [`crate::rollout`]) |
//! | `update/response` | the answer to a REST client's device call, or to the rollout engine's request |
//! | `config/status` | the device's configuration becomes `applied` or `error` (with the reason), when the report names the current checksum (see [`crate::configuration`]) |
//!
//! A payload that does not parse is answered on the device's `down/error` with the reason and
//! counted; nothing else happens (and the broker acknowledges it: sending it again would not
//! help).
//!
//! Session events (from the broker, not from payloads): `Connected` records the MQTT
//! connection as working with the device's address (`last_ip`), resends pending commands and
//! the config notice of a `modified` configuration;
//! `Disconnected` records it as not working with the broker's reason (`clean`,
//! `connection lost`, `keep-alive expired`, `kicked`, `taken over`, ...).

use std::future::Future;
use std::sync::Arc;

use fleetmq_broker::{
    BrokerError, Delivered, SessionEvent, Uplink, UplinkFuture, UplinkMessage, UplinkRefusal,
};
use fleetmq_protocol::topic::Channel;
use fleetmq_protocol::{
    DownChannel, ErrorNotice, PresenceStatus, ProtocolError, TelemetryLimits, Topic, UpChannel,
    Uplink as DeviceMessage,
};
use fleetmq_store::{
    CommandId, CommandStatus, DeviceId, MqttSession, Point, StoreError, Timestamp,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Bridge;
use crate::metrics::Metrics;
use crate::mqtt::Mqtt;
use crate::rollout::Report;
use crate::sessions::{Pending, SessionQueue};

/// Why a device message was not applied.
#[derive(Debug)]
pub enum UplinkError {
    /// The payload or topic is malformed; the device was told on `down/error`.
    Refused(ProtocolError),
    /// The store failed; the message may be retried.
    Store(StoreError),
}

impl From<StoreError> for UplinkError {
    fn from(e: StoreError) -> Self {
        UplinkError::Store(e)
    }
}

/// What an uplink's outcome tells the broker: a refused payload was answered on `down/error`
/// and a resend would be refused too, so only a store failure is "not taken". A refusal is
/// said as MQTT 5 says it (an MQTT 5 device gets it as its PUBACK's reason code): a payload
/// over a bound is a quota exceeded, anything else a payload format invalid.
pub(crate) fn broker_result(result: Result<(), UplinkError>) -> Result<Delivered, BrokerError> {
    match result {
        Ok(()) => Ok(Delivered::Taken),
        Err(UplinkError::Refused(error)) => Ok(Delivered::Refused {
            why: match error {
                ProtocolError::PayloadTooLarge { .. } => UplinkRefusal::QuotaExceeded,
                _ => UplinkRefusal::PayloadInvalid,
            },
            reason: error.to_string(),
        }),
        Err(UplinkError::Store(e)) => Err(BrokerError::Uplink(e.to_string())),
    }
}

/// The broker hands the bridge every device `up/` message before acknowledging it.
impl Uplink for Bridge {
    fn deliver(&self, message: UplinkMessage) -> UplinkFuture<'_> {
        Box::pin(async move { broker_result(self.uplink(&message).await) })
    }

    fn session(&self, event: SessionEvent) {
        // Called in the broker's order, so the online set and the engine see a takeover's
        // end before the new session.
        let (device, slug) = match &event {
            SessionEvent::Connected {
                device_id,
                org_slug,
                ..
            } => (*device_id, Some(org_slug.clone())),
            SessionEvent::Disconnected { device_id, .. } => (*device_id, None),
        };
        self.track_session(device, slug);
        let (online, failure_reason, peer_ip) = match event {
            SessionEvent::Connected { peer, .. } => (true, String::new(), Some(peer.ip())),
            SessionEvent::Disconnected { reason, .. } => (false, reason, None),
        };
        let session = MqttSession {
            online,
            failure_reason,
            peer_ip,
            model: None,
            os: None,
            system: None,
            at: Timestamp::now(),
        };
        self.inner.sessions.push(device, session, None);
    }
}

impl Bridge {
    /// A device came online (with its org slug) or went offline: who is online, the rollout
    /// engine, and what may concern it now.
    fn track_session(&self, device: DeviceId, slug: Option<String>) {
        let online = slug.is_some();
        self.inner.online.set(device, slug);
        self.inner.rollouts.session(device, online);
        if online {
            // What changed while it was away may concern it.
            self.inner.triggers.device(device);
        }
    }
}

/// Records session events and presence, one merged entry per device (see
/// [`crate::sessions`]), until shutdown. Up to `MAX_BATCH` devices are written in one
/// transaction, so a connect storm (or a fleet rebooting after an upgrade) costs one commit
/// per batch, not one per device.
pub(crate) async fn record_sessions(
    bridge: Bridge,
    queue: Arc<SessionQueue>,
    shutdown: CancellationToken,
) {
    /// Session changes written in one transaction at most.
    const MAX_BATCH: usize = 4096;
    // Work started off the recorder's path; this task ends only after it has.
    let followers = TaskTracker::new();
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = queue.next_batch(MAX_BATCH) => batch,
        };
        let Some(batch) = batch else { break };
        bridge.record_session_batch(batch, &followers).await;
    }
    queue.close();
    followers.close();
    followers.wait().await;
}

impl Bridge {
    async fn report(&self, device: DeviceId, report: Report) -> Result<(), UplinkError> {
        self.inner
            .rollouts
            .report(device, report)
            .await
            .map_err(|e| UplinkError::Store(StoreError::Task(e)))
    }

    #[tracing::instrument(skip_all, fields(devices = batch.len()))]
    async fn record_session_batch(&self, batch: Vec<(DeviceId, Pending)>, followers: &TaskTracker) {
        let mut sessions = Vec::with_capacity(batch.len());
        let mut acks = Vec::new();
        // Each device once, in its latest state: those online are owed what waited for them.
        let mut came_online = Vec::new();
        for (device, pending) in batch {
            if pending.session.online {
                came_online.push(device);
            }
            sessions.push((device, pending.session));
            acks.extend(pending.waiting);
        }
        let written = self
            .inner
            .store
            .run(move |db| db.record_mqtt_sessions(sessions))
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &written {
            tracing::error!(error = %e, "cannot record MQTT sessions");
        }
        for done in acks {
            let _ = done.send(written.clone());
        }
        if !came_online.is_empty() {
            // Off the recorder's path: it reads the store and publishes.
            let commands = self.inner.commands.clone();
            let configs = self.inner.configs.clone();
            followers.spawn(async move {
                configs.devices_online(came_online.clone()).await;
                commands.devices_online(came_online).await;
            });
        }
    }

    /// Applies one message a device published under its own `up/` prefix. Resolves once its
    /// effect is durable.
    pub async fn uplink(&self, message: &UplinkMessage) -> Result<(), UplinkError> {
        let inner = &self.inner;
        parse_and_apply(
            message,
            inner.telemetry.limits(),
            &inner.metrics,
            &inner.broker,
            |parsed| self.apply(message, parsed),
        )
        .await
    }

    async fn apply(
        &self,
        uplink: &UplinkMessage,
        message: DeviceMessage,
    ) -> Result<(), UplinkError> {
        let device = uplink.device_id;
        let store = &self.inner.store;
        match message {
            DeviceMessage::Presence(presence) => {
                let online = presence.status == PresenceStatus::Online;
                let session = MqttSession {
                    online,
                    failure_reason: if online {
                        String::new()
                    } else {
                        "device went offline".to_owned()
                    },
                    peer_ip: None,
                    model: presence.model,
                    os: presence.os,
                    system: presence.system,
                    at: Timestamp::now(),
                };
                if self.inner.presence_from_messages {
                    // No session events on an external broker: presence is who is online,
                    // known before the recorder resends what is pending.
                    self.track_session(device, online.then(|| uplink.org_slug.clone()));
                }
                // Merged with session events; pending commands are resent by the recorder.
                let (done, written) = oneshot::channel();
                self.inner.sessions.push(device, session, Some(done));
                written
                    .await
                    .map_err(|_| StoreError::Task("shutting down".into()))?
                    .map_err(StoreError::Task)?;
                if !self.inner.presence_from_messages && online {
                    // Its model or OS may have changed: filters may match it now.
                    self.inner.triggers.device(device);
                }
            }
            DeviceMessage::Telemetry(telemetry) => {
                self.inner.telemetry.sample(device, telemetry).await?;
            }
            DeviceMessage::Coordinates(coordinates) => {
                let point = Point::from(coordinates);
                match store
                    .run(move |db| db.set_device_coordinates(device, point))
                    .await
                {
                    Ok(_) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            DeviceMessage::CommandResult(result) => {
                let id = CommandId(result.id);
                let status = CommandStatus::from(result.status);
                let finished = store
                    .run(move |db| {
                        // Only the command's own device may answer it.
                        match db.command(id)? {
                            Some(command) if command.device == device => {
                                db.finish_command(id, status, result.output)
                            }
                            _ => Ok(None),
                        }
                    })
                    .await?;
                if finished.is_some() {
                    self.inner.metrics.command_answered();
                }
            }
            DeviceMessage::Update(update) => {
                self.report(device, Report::Update(update)).await?;
            }
            DeviceMessage::Images(images) => {
                self.report(device, Report::Images(images)).await?;
            }
            DeviceMessage::UpdateResponse(response) => {
                // A REST client waiting for it takes it; otherwise it answers the engine.
                if let Some(response) = self.inner.calls.answer(response) {
                    self.report(device, Report::Response(response)).await?;
                }
            }
            DeviceMessage::ConfigStatus(report) => {
                self.inner.configs.report(device, report).await?;
            }
            DeviceMessage::Software(inventory) => {
                self.inner
                    .inventories
                    .write(device, inventory.applications)
                    .await
                    .map_err(|e| UplinkError::Store(StoreError::Task(e)))?;
            }
            DeviceMessage::SoftwareStatus(status) => {
                self.inner
                    .rollouts
                    .software_status(device, status)
                    .await
                    .map_err(|e| UplinkError::Store(StoreError::Task(e)))?;
            }
        }
        Ok(())
    }
}

/// Parses a device message by its topic's channel (a telemetry sample's size checked first)
/// and applies it with `apply`. A payload that does not parse, or that `apply` refuses, is
/// answered on the device's `down/error` with the reason and counted.
pub(crate) async fn parse_and_apply<F, Fut>(
    message: &UplinkMessage,
    limits: &TelemetryLimits,
    metrics: &Metrics,
    broker: &Mqtt,
    apply: F,
) -> Result<(), UplinkError>
where
    F: FnOnce(DeviceMessage) -> Fut,
    Fut: Future<Output = Result<(), UplinkError>>,
{
    metrics.uplink();
    let topic = message.topic.as_str();
    let channel = match Topic::parse(topic).map(|parsed| parsed.channel()) {
        Ok(Channel::Up(channel)) => channel,
        Ok(Channel::Down(_)) => return Ok(()),
        Err(error) => {
            // The broker only lets devices publish under their own up/ prefix, so this is
            // a channel this build does not know; there is no device to tell.
            metrics.refused();
            return Err(UplinkError::Refused(error));
        }
    };
    // The wire contract's one dispatch: the channel chooses the payload type.
    let size = match channel {
        UpChannel::Telemetry => limits.check_size(&message.payload),
        _ => Ok(()),
    };
    let parse = |()| match &message.correlation_data {
        Some(correlation) => {
            DeviceMessage::parse_correlated(channel, &message.payload, correlation)
        }
        None => DeviceMessage::parse(channel, &message.payload),
    };
    let result = match size.and_then(parse) {
        Ok(parsed) => apply(parsed).await,
        Err(error) => Err(UplinkError::Refused(error)),
    };
    match &result {
        Err(UplinkError::Refused(error)) => {
            metrics.refused();
            tracing::info!(%topic, %error, "device payload refused");
            let notice = ErrorNotice::new(topic, error);
            let down = Topic::down(&message.org_slug, message.device_id, DownChannel::Error);
            if let Err(e) = broker
                .publish(&down.to_string(), notice.to_bytes(), false)
                .await
            {
                tracing::warn!(error = %e, "cannot tell the device why its payload was refused");
            }
        }
        Err(UplinkError::Store(e)) => {
            tracing::error!(error = %e, %topic, "device message not stored")
        }
        Ok(()) => {}
    }
    result
}
