//! Commands on their way to devices: publish, resend on reconnect, time out.
//!
//! A command is stored (in progress) by the API before the bridge sees it. The bridge publishes
//! it on the device's `down/command/request`; a device that is offline gets it again when its
//! presence turns online; a command without an answer after the timeout fails with
//! "timed out". Delivery is at least once: devices deduplicate by command id.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::mqtt::Mqtt;
use fleetmq_protocol::{CommandRequest, DownChannel, Topic, UpChannel};
use fleetmq_store::{Command, CommandId, CommandStatus, DeviceId, Store, Timestamp};

use crate::metrics::Metrics;

/// Tracks in-progress commands' deadlines.
#[derive(Clone)]
pub struct CommandTracker {
    store: Store,
    broker: Mqtt,
    timeout: Duration,
    metrics: Metrics,
    deadlines: Arc<Mutex<BTreeSet<(Timestamp, CommandId)>>>,
}

impl CommandTracker {
    /// A tracker; call [`CommandTracker::resume`] once at start.
    pub fn new(store: Store, broker: Mqtt, timeout: Duration, metrics: Metrics) -> Self {
        Self {
            store,
            broker,
            timeout,
            metrics,
            deadlines: Arc::default(),
        }
    }

    fn deadline_of(&self, command: &Command) -> Timestamp {
        let timeout = i64::try_from(self.timeout.as_micros()).unwrap_or(i64::MAX);
        Timestamp::from_micros(command.created.as_micros().saturating_add(timeout))
    }

    /// Whether the command was new to the tracker.
    fn track(&self, command: &Command) -> bool {
        let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        deadlines.insert((self.deadline_of(command), command.id))
    }

    /// Picks up every command still in progress after a restart and sends them again.
    pub async fn resume(&self) -> Result<(), fleetmq_store::StoreError> {
        let pending = self.store.run(|db| db.pending_commands(None)).await?;
        for command in pending {
            self.track(&command);
            self.send(&command).await;
        }
        Ok(())
    }

    /// Another node's API stored commands: send those this node does not track yet (the
    /// others are on their way already).
    pub async fn pick_up(&self) -> Result<(), fleetmq_store::StoreError> {
        let pending = self.store.run(|db| db.pending_commands(None)).await?;
        for command in pending {
            if self.track(&command) {
                self.send(&command).await;
            }
        }
        Ok(())
    }

    /// A command the API just stored: track it and send it.
    pub async fn created(&self, command: Command) {
        self.track(&command);
        self.send(&command).await;
    }

    /// Devices came online: send each what it has not answered yet (one read for all).
    pub async fn devices_online(&self, devices: Vec<DeviceId>) {
        let devices: std::collections::HashSet<DeviceId> = devices.into_iter().collect();
        match self.store.run(|db| db.pending_commands(None)).await {
            Ok(pending) => {
                for command in pending.iter().filter(|c| devices.contains(&c.device)) {
                    self.send(command).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read pending commands"),
        }
    }

    async fn send(&self, command: &Command) {
        let device = command.device;
        let slug = self
            .store
            .run(move |db| {
                let Some(device) = db.device_brief(device)? else {
                    return Ok(None);
                };
                Ok(db.organization(device.organization)?.map(|o| o.fields.slug))
            })
            .await;
        let slug = match slug {
            Ok(Some(slug)) => slug,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot look the device up for a command");
                return;
            }
        };
        let request = CommandRequest {
            id: command.id.0,
            kind: command.kind,
            input: command.input.clone(),
        };
        let topic = Topic::down(slug.as_str(), device, DownChannel::CommandRequest);
        // An MQTT 5 device is told where to answer, with the command id to answer with.
        let reply_to = Topic::up(slug.as_str(), device, UpChannel::CommandResult);
        match self
            .broker
            .publish_request(
                &topic.to_string(),
                request.to_bytes(),
                &reply_to.to_string(),
                command.id.0.to_string(),
            )
            .await
        {
            Ok(()) => self.metrics.command_sent(),
            Err(e) => tracing::warn!(error = %e, command = %command.id, "command not published"),
        }
    }

    /// Fails the commands whose deadline passed; returns how many it failed.
    pub async fn expire(&self) -> usize {
        let now = Timestamp::now();
        let due: Vec<CommandId> = {
            let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
            let mut due = Vec::new();
            while let Some(first) = deadlines.first().copied() {
                if first.0 > now {
                    break;
                }
                deadlines.pop_first();
                due.push(first.1);
            }
            due
        };
        let mut failed = 0;
        for id in due {
            let result = self
                .store
                .run(move |db| db.finish_command(id, CommandStatus::Failed, "timed out".to_owned()))
                .await;
            match result {
                Ok(Some(_)) => {
                    failed += 1;
                    self.metrics.command_timed_out();
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, command = %id, "cannot time a command out"),
            }
        }
        failed
    }

    /// The next deadline, if any command is pending.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        deadlines.first().map(|(t, _)| *t)
    }
}
