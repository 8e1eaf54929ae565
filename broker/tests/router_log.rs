//! rumqttd's router logs at ERROR when it is asked about a link it already closed. An
//! ordinary disconnect must produce none of those lines (issue 9 item 12). Its own test
//! binary: it installs the process-wide tracing subscriber that counts them.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use fleetmq_broker::BrokerConfig;
use support::*;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// ERROR events seen in this process, from any thread (the router has its own).
static ERRORS: AtomicUsize = AtomicUsize::new(0);

/// Counts ERROR events; spans are accepted and ignored.
struct ErrorCounter;

impl Subscriber for ErrorCounter {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() == Level::ERROR
    }
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn event(&self, event: &Event<'_>) {
        eprintln!("ERROR event from {}", event.metadata().target());
        ERRORS.fetch_add(1, Ordering::Relaxed);
    }
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}
}

#[tokio::test]
async fn a_device_that_disconnects_after_a_burst_leaves_no_error_line() {
    tracing::subscriber::set_global_default(ErrorCounter).expect("the only subscriber");
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let topic = telemetry_topic(DEV_A1);
    for round in 0..3 {
        // Many packets for the router, then DISCONNECT, all in one write.
        let mut device = broker.device_a().await;
        let mut burst = Vec::new();
        // Fewer than the 1,000 packets a link buffer takes without events of their own.
        for i in 0..500 {
            burst.extend(publish(&topic, &format!("{round}-{i}"), 0, 0, false));
        }
        burst.extend([0xe0, 0x00]);
        device.send(&burst).await;
        device.until_closed().await;
    }
    // The router handles events in order: once a later client's QoS 1 PUBLISH is
    // acknowledged, whatever the closed links left queued has been handled.
    let mut device = broker.device_a().await;
    device.send(&publish(&topic, "barrier", 1, 1, false)).await;
    assert_eq!(device.packet().await, ack(0x40, 1));
    assert_eq!(broker.uplink.payloads().len(), 1501);
    assert_eq!(ERRORS.load(Ordering::Relaxed), 0);
    broker.stop().await;
}
