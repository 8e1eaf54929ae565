//! Application software (OTAO), device side: a simulated device against a real in-process
//! broker (fleetmq-broker on 127.0.0.1:0).
//!
//! The test plays the server: offers and deliveries are published on the device's
//! `down/software/offer` and `down/software/deliver` with `BrokerHandle::publish`, as the
//! bridge does; the device's answers and inventories are read from its `up/#` through an
//! in-process link subscribed before the device starts. Every wait is on a message or an
//! event, with a timeout only as a failure guard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetmq_broker::{
    AuthFuture, Authenticator, Broker, BrokerConfig, BrokerHandle, LocalLink, Login, Message,
    Refusal,
};
use fleetmq_protocol::Principal;
use fleetmq_protocol::software::{
    SoftwareDelivery, SoftwareInventory, SoftwareOffer, SoftwareOutcome, SoftwareStatus,
};
use fleetmq_protocol::topic::{DownChannel, Topic, UpChannel, device_up_filter};
use fleetmq_sim::software::{DECLINED, NOT_INSTALLED, SIMULATED_FAILURE};
use fleetmq_sim::{Consent, DeviceConfig, SimDevice, SimEvent, SimHandle, SoftwareConfig};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Failure guard for anything awaited; never a sleep.
const WAIT: Duration = Duration::from_secs(10);
const ORG: &str = "acme";
const APP: &str = "smart-kettle";

/// Accepts any UUID user name whose password is `key-{uuid}`, as a device of `acme`.
struct KeyAuth;

fn key_of(id: &str) -> String {
    format!("key-{id}")
}

impl Authenticator for KeyAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            let user = login.username.ok_or(Refusal::BadCredentials)?;
            let password = login.password.unwrap_or_default();
            if Uuid::parse_str(&user).is_err() || password != key_of(&user).as_bytes() {
                return Err(Refusal::BadCredentials);
            }
            Ok(Principal::Device {
                org_slug: ORG.into(),
                device_id: user.parse().map_err(|_| Refusal::BadCredentials)?,
            })
        })
    }
}

/// A broker and one device running `smart-kettle` 1.0.2, watched from before it connects.
struct Bench {
    broker: BrokerHandle,
    shutdown: CancellationToken,
    device: SimHandle,
    /// The device's `up/#`.
    link: LocalLink,
}

impl Bench {
    /// Starts everything; `adjust` tunes the device's software before it starts. Returns
    /// once the device is connected and subscribed.
    async fn start(adjust: impl FnOnce(&mut SoftwareConfig)) -> Bench {
        let shutdown = CancellationToken::new();
        let config = BrokerConfig {
            mqtt_addr: "127.0.0.1:0".parse().unwrap(),
            ..BrokerConfig::default()
        };
        let broker = Broker::bind(config, Arc::new(KeyAuth)).await.unwrap();
        let addr = broker.local_addr();
        let handle = broker.handle();
        tokio::spawn(broker.run(shutdown.clone()));

        let id = Uuid::new_v4().to_string();
        let mut config = DeviceConfig::new(addr, ORG, &id, key_of(&id));
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        config.software.applications = BTreeMap::from([(APP.to_owned(), "1.0.2".to_owned())]);
        config.software.install_time = Duration::from_millis(100);
        adjust(&mut config.software);
        let link = handle
            .link(
                &format!("watch-{}", Uuid::new_v4().simple()),
                &[&device_up_filter(ORG, &id)],
            )
            .await
            .unwrap();
        let mut device = SimDevice::spawn(config);
        timeout(WAIT, device.connected())
            .await
            .expect("connected in time")
            .expect("device running");
        Bench {
            broker: handle,
            shutdown,
            device,
            link,
        }
    }

    fn up(&self, channel: UpChannel) -> String {
        Topic::up(ORG, self.device.device_id(), channel).to_string()
    }

    async fn publish(&self, channel: DownChannel, payload: Vec<u8>) {
        let topic = Topic::down(ORG, self.device.device_id(), channel);
        self.broker
            .publish(&topic.to_string(), payload, false)
            .await
            .unwrap();
    }

    /// Offers `version` of `smart-kettle`; returns the operation id.
    async fn offer(&self, version: &str) -> Uuid {
        let offer = SoftwareOffer {
            id: Uuid::new_v4(),
            app_name: APP.into(),
            version: version.into(),
            from: "1.0.2".into(),
            metadata: serde_json::json!({"notes": "boils faster"}),
        };
        self.publish(DownChannel::SoftwareOffer, offer.to_bytes())
            .await;
        offer.id
    }

    /// Delivers `version` of `app` as operation `id`.
    async fn deliver(&self, id: Uuid, app: &str, version: &str) {
        let delivery = SoftwareDelivery {
            id,
            app_name: app.into(),
            version: version.into(),
            from: "1.0.2".into(),
            specification: serde_json::json!({"link": "ftp://software-repository"}),
        };
        self.publish(DownChannel::SoftwareDeliver, delivery.to_bytes())
            .await;
    }

    /// The next message on `topic`, skipping others.
    async fn next_on(&mut self, topic: &str) -> Message {
        timeout(WAIT, async {
            loop {
                let message = self.link.recv().await.unwrap();
                if message.topic == topic {
                    return message;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("a message on {topic} in time"))
    }

    async fn next_status(&mut self) -> SoftwareStatus {
        let topic = self.up(UpChannel::SoftwareStatus);
        SoftwareStatus::parse(&self.next_on(&topic).await.payload).unwrap()
    }

    async fn next_inventory(&mut self) -> SoftwareInventory {
        let topic = self.up(UpChannel::Software);
        SoftwareInventory::parse(&self.next_on(&topic).await.payload).unwrap()
    }

    /// Delivers `version` of `smart-kettle` and waits until it is installed and reported.
    async fn install(&mut self, version: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.deliver(id, APP, version).await;
        assert_eq!(self.next_status().await.status, SoftwareOutcome::Installing);
        assert_eq!(self.next_status().await.status, SoftwareOutcome::Installed);
        assert_eq!(self.next_inventory().await.applications[APP], version);
        id
    }

    async fn stop(self) {
        self.device.stop().await;
        self.shutdown.cancel();
    }
}

fn kettle(version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(APP.to_owned(), version.to_owned())])
}

#[tokio::test]
async fn a_device_reports_its_applications_when_it_connects() {
    let mut bench = Bench::start(|software| {
        software.applications.insert("ui".into(), "2.0.0".into());
    })
    .await;

    let inventory = bench.next_inventory().await;

    assert_eq!(
        inventory.applications,
        BTreeMap::from([
            (APP.to_owned(), "1.0.2".to_owned()),
            ("ui".to_owned(), "2.0.0".to_owned()),
        ])
    );
    bench.stop().await;
}

#[tokio::test]
async fn offers_are_accepted_or_rejected_with_a_reason_by_the_consent_policy() {
    let mut accepting = Bench::start(|_| {}).await;
    let id = accepting.offer("1.0.3").await;
    let status = accepting.next_status().await;
    assert_eq!(
        (status.id, status.status, status.reason.as_str()),
        (id, SoftwareOutcome::Accepted, "")
    );
    let answered = timeout(
        WAIT,
        accepting
            .device
            .wait_for(|e| matches!(e, SimEvent::SoftwareOfferAnswered { .. })),
    )
    .await
    .unwrap();
    let Some(SimEvent::SoftwareOfferAnswered { offer, status }) = answered else {
        panic!("an answered offer, got {answered:?}");
    };
    assert_eq!((offer.id, status), (id, SoftwareOutcome::Accepted));
    accepting.stop().await;

    let mut rejecting = Bench::start(|software| software.consent = Consent::Reject).await;
    let id = rejecting.offer("1.0.3").await;
    let status = rejecting.next_status().await;
    assert_eq!(
        (status.id, status.status, status.reason.as_str()),
        (id, SoftwareOutcome::Rejected, DECLINED)
    );
    // The same offer again gets the same answer.
    let offer = SoftwareOffer {
        id,
        app_name: APP.into(),
        version: "1.0.3".into(),
        from: "1.0.2".into(),
        metadata: serde_json::Value::Null,
    };
    rejecting
        .publish(DownChannel::SoftwareOffer, offer.to_bytes())
        .await;
    assert_eq!(rejecting.next_status().await, status);
    rejecting.stop().await;
}

#[tokio::test]
async fn a_delivery_is_installing_then_installed_and_the_new_inventory_follows() {
    let mut bench = Bench::start(|_| {}).await;
    assert_eq!(bench.next_inventory().await.applications, kettle("1.0.2"));
    let id = bench.offer("1.0.3").await;
    assert_eq!(bench.next_status().await.status, SoftwareOutcome::Accepted);

    bench.deliver(id, APP, "1.0.3").await;

    let installing = bench.next_status().await;
    assert_eq!(
        (installing.id, installing.status),
        (id, SoftwareOutcome::Installing)
    );
    let installed = bench.next_status().await;
    assert_eq!(
        (installed.id, installed.status),
        (id, SoftwareOutcome::Installed)
    );
    assert_eq!(bench.next_inventory().await.applications, kettle("1.0.3"));
    let event = timeout(
        WAIT,
        bench
            .device
            .wait_for(|e| matches!(e, SimEvent::SoftwareInstalled { .. })),
    )
    .await
    .unwrap();
    assert_eq!(
        event,
        Some(SimEvent::SoftwareInstalled {
            app: APP.into(),
            version: "1.0.3".into()
        })
    );
    let stats = bench.device.stats();
    assert_eq!((stats.software_installs, stats.software_failures), (1, 0));
    bench.stop().await;
}

#[tokio::test]
async fn with_a_failure_fraction_of_one_every_installation_fails_with_a_reason() {
    let mut bench = Bench::start(|software| software.fail_fraction = 1.0).await;
    assert_eq!(bench.next_inventory().await.applications, kettle("1.0.2"));
    let id = Uuid::new_v4();

    bench.deliver(id, APP, "1.0.3").await;

    assert_eq!(
        bench.next_status().await.status,
        SoftwareOutcome::Installing
    );
    let failed = bench.next_status().await;
    assert_eq!(
        (failed.id, failed.status, failed.reason.as_str()),
        (id, SoftwareOutcome::Failed, SIMULATED_FAILURE)
    );
    let event = timeout(
        WAIT,
        bench
            .device
            .wait_for(|e| matches!(e, SimEvent::SoftwareFailed { .. })),
    )
    .await
    .unwrap();
    assert_eq!(
        event,
        Some(SimEvent::SoftwareFailed {
            app: APP.into(),
            version: "1.0.3".into(),
            reason: SIMULATED_FAILURE.into(),
        })
    );
    let stats = bench.device.stats();
    assert_eq!((stats.software_installs, stats.software_failures), (0, 1));
    // The device still runs the old version: a reconnection reports it.
    assert!(
        bench
            .broker
            .disconnect_device(bench.device.device_id().parse().unwrap())
            .await
    );
    timeout(WAIT, bench.device.connected()).await.unwrap();
    assert_eq!(bench.next_inventory().await.applications, kettle("1.0.2"));
    bench.stop().await;
}

#[tokio::test]
async fn a_repeated_delivery_is_answered_with_its_current_status_without_installing_again() {
    let mut bench = Bench::start(|software| {
        software.install_time = Duration::from_millis(300);
    })
    .await;
    let id = Uuid::new_v4();
    bench.deliver(id, APP, "1.0.3").await;
    assert_eq!(
        bench.next_status().await.status,
        SoftwareOutcome::Installing
    );

    // Repeated while installing: still installing, and only one installation runs.
    bench.deliver(id, APP, "1.0.3").await;
    assert_eq!(
        bench.next_status().await.status,
        SoftwareOutcome::Installing
    );
    assert_eq!(bench.next_status().await.status, SoftwareOutcome::Installed);
    assert_eq!(bench.next_inventory().await.applications, kettle("1.0.3"));

    // Repeated once installed: `installed` at once, no `installing` first.
    bench.deliver(id, APP, "1.0.3").await;
    let again = bench.next_status().await;
    assert_eq!((again.id, again.status), (id, SoftwareOutcome::Installed));

    // A new operation for the version it already runs: `installed` at once as well.
    let other = Uuid::new_v4();
    bench.deliver(other, APP, "1.0.3").await;
    let at_once = bench.next_status().await;
    assert_eq!(
        (at_once.id, at_once.status),
        (other, SoftwareOutcome::Installed)
    );
    assert_eq!(bench.device.stats().software_installs, 1);
    bench.stop().await;
}

#[tokio::test]
async fn a_delivery_for_an_application_the_device_does_not_run_fails() {
    let mut bench = Bench::start(|_| {}).await;
    let id = Uuid::new_v4();

    bench.deliver(id, "toaster", "3.0.0").await;

    let status = bench.next_status().await;
    assert_eq!(
        (status.id, status.status, status.reason.as_str()),
        (id, SoftwareOutcome::Failed, NOT_INSTALLED)
    );
    assert_eq!(bench.device.stats().software_failures, 1);
    bench.stop().await;
}

#[tokio::test]
async fn after_a_reconnection_the_inventory_shows_the_installed_version() {
    let mut bench = Bench::start(|_| {}).await;
    assert_eq!(bench.next_inventory().await.applications, kettle("1.0.2"));
    bench.install("2.0.0").await;

    assert!(
        bench
            .broker
            .disconnect_device(bench.device.device_id().parse().unwrap())
            .await
    );
    timeout(WAIT, bench.device.connected()).await.unwrap();

    assert_eq!(bench.next_inventory().await.applications, kettle("2.0.0"));
    assert_eq!(bench.device.stats().connects, 2);
    bench.stop().await;
}
