//! The MQTT plane the bridge publishes to: the embedded broker ([`BrokerHandle`]) or an
//! external broker over rumqttc ([`crate::external`]). Everything the bridge sends devices
//! and operators goes through [`Mqtt`]; what devices send comes in through
//! [`fleetmq_broker::Uplink`] (embedded) or the external broker's subscription.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use fleetmq_broker::{Affected, BrokerHandle};
use fleetmq_store::DeviceId;

/// Why a message could not be handed to the broker.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MqttError(pub String);

/// A boxed future of the plane.
pub type PlaneFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the bridge needs of a broker.
pub trait MqttPlane: Send + Sync + 'static {
    /// Publishes `payload` on `topic` (QoS 1 where the broker takes it; a device's `down/`
    /// messages at its subscription's QoS).
    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
    ) -> PlaneFuture<'_, Result<(), MqttError>>;

    /// Publishes a request to a device as [`publish`](Self::publish) does, telling an MQTT 5
    /// device to answer on `response_topic` with `correlation_data` (MQTT 5 request/response).
    /// A plane that cannot say so publishes the request alone: the device answers on its
    /// usual channel, which is `response_topic` too.
    fn publish_request(
        &self,
        topic: &str,
        payload: Bytes,
        response_topic: &str,
        correlation_data: Bytes,
    ) -> PlaneFuture<'_, Result<(), MqttError>> {
        let _ = (response_topic, correlation_data);
        self.publish(topic, payload, false)
    }

    /// Judges again the live sessions `affected` may concern; returns how many ended.
    fn reauthorize(&self, affected: Affected) -> PlaneFuture<'_, usize>;

    /// Ends the live session of `device`, if any; whether there was one.
    fn disconnect_device(&self, device: DeviceId) -> PlaneFuture<'_, bool>;

    /// Counters and gauges for `/metrics`: (name, help, value).
    fn metrics(&self) -> Vec<(&'static str, &'static str, u64)>;
}

/// The plane the bridge uses; cheap to clone.
#[derive(Clone)]
pub struct Mqtt(Arc<dyn MqttPlane>);

impl Mqtt {
    /// Wraps a plane.
    pub fn new(plane: Arc<dyn MqttPlane>) -> Self {
        Self(plane)
    }

    /// See [`MqttPlane::publish`].
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        retain: bool,
    ) -> Result<(), MqttError> {
        self.0.publish(topic, payload.into(), retain).await
    }

    /// See [`MqttPlane::publish_request`].
    pub async fn publish_request(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        response_topic: &str,
        correlation_data: impl Into<Bytes>,
    ) -> Result<(), MqttError> {
        self.0
            .publish_request(
                topic,
                payload.into(),
                response_topic,
                correlation_data.into(),
            )
            .await
    }

    /// See [`MqttPlane::reauthorize`].
    pub async fn reauthorize(&self, affected: Affected) -> usize {
        self.0.reauthorize(affected).await
    }

    /// See [`MqttPlane::disconnect_device`].
    pub async fn disconnect_device(&self, device: DeviceId) -> bool {
        self.0.disconnect_device(device).await
    }

    /// See [`MqttPlane::metrics`].
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.0.metrics()
    }
}

impl From<BrokerHandle> for Mqtt {
    fn from(broker: BrokerHandle) -> Self {
        Self::new(Arc::new(broker))
    }
}

impl MqttPlane for BrokerHandle {
    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
    ) -> PlaneFuture<'_, Result<(), MqttError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            BrokerHandle::publish(self, &topic, payload, retain)
                .await
                .map_err(|e| MqttError(e.to_string()))
        })
    }

    fn publish_request(
        &self,
        topic: &str,
        payload: Bytes,
        response_topic: &str,
        correlation_data: Bytes,
    ) -> PlaneFuture<'_, Result<(), MqttError>> {
        let (topic, response_topic) = (topic.to_owned(), response_topic.to_owned());
        Box::pin(async move {
            BrokerHandle::publish_request(self, &topic, payload, &response_topic, correlation_data)
                .await
                .map_err(|e| MqttError(e.to_string()))
        })
    }

    fn reauthorize(&self, affected: Affected) -> PlaneFuture<'_, usize> {
        Box::pin(BrokerHandle::reauthorize(self, affected))
    }

    fn disconnect_device(&self, device: DeviceId) -> PlaneFuture<'_, bool> {
        Box::pin(BrokerHandle::disconnect_device(self, device))
    }

    fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        BrokerHandle::metrics(self)
    }
}
