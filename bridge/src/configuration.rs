//! Configuration pushed to devices over MQTT.
//!
//! The store renders a device's configuration in the write that changes it and announces the
//! devices whose checksum changed ([`fleetmq_store::Backend::config_changes`]). For each of
//! them the bridge publishes a retained [`ConfigNotice`] on the device's `down/config/notice`:
//! the new checksum and a signed link ([`ConfigGrant`]) to download the archive with, no token
//! needed. The device applies it and answers on `up/config/status`
//! ([`ConfigPush::report`]): `applied` or `error` for that checksum.
//!
//! The stored `modified` status is the durable record that a notice is owed: a device that
//! comes online with a `modified` configuration gets its notice again (it missed it while
//! offline, or the server restarted), and a bridge that fell behind the announcements sends one
//! to every connected device whose configuration is `modified`.

use std::collections::HashMap;
use std::time::Duration;

use crate::mqtt::Mqtt;
use fleetmq_protocol::{ConfigNotice, ConfigReport, DownChannel, Topic};
use fleetmq_store::{
    ConfigChange, ConfigGrant, ConfigOutcome, ConfigStatus, DOWNLOAD_SECRET, DeviceId, OrgId,
    Store, StoreError, Timestamp,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::OnlineDevices;
use crate::metrics::Metrics;

/// Where config notices point and how long their links last.
#[derive(Debug, Clone)]
pub struct ConfigLinks {
    /// This server's API as devices reach it (`http://host:port`).
    pub public_url: String,
    /// How long a notice's download link stays valid.
    pub lifetime: Duration,
}

impl Default for ConfigLinks {
    fn default() -> Self {
        Self {
            public_url: String::new(),
            lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// Sends config notices and records devices' reports.
#[derive(Clone)]
pub struct ConfigPush {
    store: Store,
    broker: Mqtt,
    online: OnlineDevices,
    links: ConfigLinks,
    secret: [u8; 32],
    metrics: Metrics,
}

/// A notice to publish: the device, its organization's topic segment, its checksum.
struct Owed {
    device: DeviceId,
    org_slug: String,
    checksum: String,
}

impl ConfigPush {
    /// Reads the link-signing secret from the store.
    pub(crate) async fn new(
        store: Store,
        broker: Mqtt,
        online: OnlineDevices,
        links: ConfigLinks,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let secret = store.run(|db| db.secret(DOWNLOAD_SECRET)).await?;
        Ok(Self {
            store,
            broker,
            online,
            links,
            secret,
            metrics,
        })
    }

    /// Notifies the devices of every announced change until shutdown.
    pub(crate) async fn follow(
        self,
        mut changes: broadcast::Receiver<ConfigChange>,
        shutdown: CancellationToken,
    ) {
        loop {
            let change = tokio::select! {
                () = shutdown.cancelled() => return,
                change = changes.recv() => change,
            };
            match change {
                Ok(change) => self.notify(change.devices).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "config announcements missed; notifying every connected device with a modified configuration"
                    );
                    self.notify(self.online.devices()).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Devices that just connected: those whose configuration is `modified` get their notice.
    pub(crate) async fn devices_online(&self, devices: Vec<DeviceId>) {
        self.notify(devices).await;
    }

    /// Publishes a notice to each of `devices` whose configuration is `modified`, reading
    /// them all in one store call.
    async fn notify(&self, devices: Vec<DeviceId>) {
        if devices.is_empty() {
            return;
        }
        let owed = self
            .store
            .run(move |db| {
                let mut slugs: HashMap<OrgId, Option<String>> = HashMap::new();
                let mut owed = Vec::new();
                for id in devices {
                    let Some(device) = db.device_brief(id)? else {
                        continue;
                    };
                    let Some(checksum) = device.config_owed else {
                        continue;
                    };
                    let org = device.organization;
                    let slug = match slugs.get(&org) {
                        Some(slug) => slug.clone(),
                        None => {
                            let slug = db
                                .organization(org)?
                                .map(|o| o.fields.slug.as_str().to_owned());
                            slugs.insert(org, slug.clone());
                            slug
                        }
                    };
                    if let Some(org_slug) = slug {
                        owed.push(Owed {
                            device: id,
                            org_slug,
                            checksum,
                        });
                    }
                }
                Ok(owed)
            })
            .await;
        let owed = match owed {
            Ok(owed) => owed,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the devices owed a config notice");
                return;
            }
        };
        let now = Timestamp::now();
        for Owed {
            device,
            org_slug,
            checksum,
        } in owed
        {
            let url = ConfigGrant::expiring(device, now, self.links.lifetime)
                .link(&self.links.public_url, &self.secret);
            let notice = ConfigNotice { checksum, url };
            let topic = Topic::down(&org_slug, device, DownChannel::ConfigNotice);
            match self
                .broker
                .publish(&topic.to_string(), notice.to_bytes(), true)
                .await
            {
                Ok(()) => self.metrics.config_notice(),
                Err(e) => tracing::warn!(error = %e, %device, "cannot publish a config notice"),
            }
        }
    }

    /// Records a device's report about applying its configuration. A report about a
    /// checksum that is no longer current is ignored (its newer notice is on the way).
    pub(crate) async fn report(
        &self,
        device: DeviceId,
        report: ConfigReport,
    ) -> Result<(), StoreError> {
        let outcome = ConfigOutcome {
            status: match report.status {
                fleetmq_protocol::ConfigOutcome::Applied => ConfigStatus::Applied,
                fleetmq_protocol::ConfigOutcome::Error => ConfigStatus::Error,
            },
            checksum: Some(report.checksum),
            error_reason: report.reason,
        };
        let taken = self
            .store
            .run(move |db| db.record_config_outcome(device, outcome))
            .await?;
        if !taken {
            tracing::debug!(%device, "stale config report ignored");
        }
        Ok(())
    }
}
