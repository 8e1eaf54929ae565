//! What each `up/` channel does to the store.
//!
//! | channel | effect |
//! |---|---|
//! | `presence` | the device's MQTT connection health; `online` also records model/os/system and resends pending commands |
//! | `telemetry` | appended through the group-commit writer; latest sample per device |
//! | `coordinates` | the device's (mobile, outdoor) location moves |
//! | `command/result` | ends the device's own in-progress command, once |
//! | `update`, `images`, `config/status` | accepted; stored by the firmware and configuration work |
//!
//! A payload that does not parse is answered on the device's `down/error` with the reason and
//! counted; nothing else happens.

use std::sync::Arc;

use fleetmq_broker::LocalLink;
use fleetmq_protocol::topic::{Channel, Direction};
use fleetmq_protocol::{
    CommandResult, Coordinates, DownChannel, ErrorNotice, Presence, PresenceStatus, ProtocolError,
    Telemetry, Topic, UpChannel,
};
use fleetmq_store::{
    CommandId, CommandStatus, DeviceId, MqttSession, Point, StoreError, TelemetrySample, Timestamp,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Bridge;

/// Telemetry messages being written at once at most (each waits for its batch's commit).
const IN_FLIGHT: usize = 32 * 1024;

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

/// Reads the bridge's in-process subscription until shutdown.
pub(crate) async fn consume(bridge: Bridge, mut link: LocalLink, shutdown: CancellationToken) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            message = link.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(error = %e, "the bridge lost its subscription");
                return;
            }
        };
        // Retained messages replayed on subscribe describe the past; live ones follow.
        if message.retain {
            continue;
        }
        if message.topic.ends_with("/up/telemetry") {
            // Telemetry runs concurrently so the writer can batch it.
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                return;
            };
            let bridge = bridge.clone();
            tokio::spawn(async move {
                let _ = bridge.uplink(&message.topic, &message.payload).await;
                drop(permit);
            });
        } else {
            // Presence, results and coordinates stay in order per device.
            let _ = bridge.uplink(&message.topic, &message.payload).await;
        }
    }
}

impl Bridge {
    /// Applies one message a device published under its own `up/` prefix. Resolves once its
    /// effect is durable.
    pub async fn uplink(&self, topic: &str, payload: &[u8]) -> Result<(), UplinkError> {
        self.inner.metrics.uplink();
        let parsed = match Topic::parse(topic) {
            Ok(parsed) if parsed.direction() == Direction::Up => parsed,
            Ok(_) => return Ok(()),
            Err(error) => {
                // The broker only lets devices publish under their own up/ prefix, so this is
                // a channel this build does not know; there is no device to tell.
                self.inner.metrics.refused();
                return Err(UplinkError::Refused(error));
            }
        };
        let result = self.apply(&parsed, payload).await;
        match &result {
            Err(UplinkError::Refused(error)) => {
                self.inner.metrics.refused();
                tracing::info!(%topic, %error, "device payload refused");
                let notice = ErrorNotice::new(topic, error);
                let down = Topic::down(parsed.org_slug(), parsed.device_id(), DownChannel::Error);
                if let Err(e) = self
                    .inner
                    .broker
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

    async fn apply(&self, topic: &Topic, payload: &[u8]) -> Result<(), UplinkError> {
        let Ok(device) = topic.device_id().parse::<DeviceId>() else {
            return Ok(());
        };
        let Channel::Up(channel) = topic.channel() else {
            return Ok(());
        };
        let store = &self.inner.store;
        match channel {
            UpChannel::Presence => {
                let presence = Presence::parse(payload).map_err(UplinkError::Refused)?;
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
                match store
                    .run(move |db| db.record_mqtt_session(device, session))
                    .await
                {
                    Ok(()) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                if online {
                    self.inner.commands.device_online(device).await;
                }
            }
            UpChannel::Telemetry => {
                let telemetry = Telemetry::parse(payload).map_err(UplinkError::Refused)?;
                let measured = telemetry.timestamp.to_datetime();
                let sample = TelemetrySample {
                    device,
                    timestamp: Timestamp::from_micros(
                        (measured.unix_timestamp_nanos() / 1_000) as i64,
                    ),
                    received: Timestamp::now(),
                    metrics: telemetry.metrics,
                };
                self.inner
                    .telemetry
                    .write(sample)
                    .await
                    .map_err(|e| UplinkError::Store(StoreError::Task(e)))?;
            }
            UpChannel::Coordinates => {
                let coordinates = Coordinates::parse(payload).map_err(UplinkError::Refused)?;
                let point = Point {
                    lng: coordinates.lng(),
                    lat: coordinates.lat(),
                };
                match store
                    .run(move |db| db.set_device_coordinates(device, point))
                    .await
                {
                    Ok(_) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            UpChannel::CommandResult => {
                let result = CommandResult::parse(payload).map_err(UplinkError::Refused)?;
                let id = CommandId(result.id);
                let status = match result.status {
                    fleetmq_protocol::CommandStatus::Success => CommandStatus::Success,
                    fleetmq_protocol::CommandStatus::Failed => CommandStatus::Failed,
                };
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
            UpChannel::Update | UpChannel::Images | UpChannel::ConfigStatus => {}
        }
        Ok(())
    }
}
