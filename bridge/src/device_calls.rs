//! Calls of a device's npm.system_update API on behalf of REST clients: publish a request with a
//! fresh correlation id on `down/update/request`, wait for the `up/update/response` carrying it.
//!
//! Answers nobody waits for (a caller gave up, or the rollout engine asked) are handed back to
//! the caller of [`DeviceCalls::answer`], so one response channel serves both.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::mqtt::Mqtt;
use fleetmq_protocol::{Call, DownChannel, Topic, UpChannel, UpdateRequest, UpdateResponse};
use fleetmq_store::DeviceId;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Why a device call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The device has no live MQTT session.
    #[error("the device is offline")]
    Offline,
    /// No answer within the timeout.
    #[error("the device did not answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be published.
    #[error("the request could not be sent: {0}")]
    NotSent(String),
}

/// Which devices are connected, as the broker's session events tell (in the broker's order).
#[derive(Clone, Default)]
pub struct OnlineDevices {
    inner: Arc<Mutex<HashMap<DeviceId, String>>>,
}

impl OnlineDevices {
    /// Records a session opening (with the device's org slug) or closing.
    pub fn set(&self, device: DeviceId, org_slug: Option<String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match org_slug {
            Some(slug) => inner.insert(device, slug),
            None => inner.remove(&device),
        };
    }

    /// Every connected device.
    pub fn devices(&self) -> Vec<DeviceId> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.keys().copied().collect()
    }

    /// The org slug of a connected device; `None` when it is offline.
    pub fn slug(&self, device: DeviceId) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.get(&device).cloned()
    }

    /// Which of `devices` are connected.
    pub fn filter(&self, devices: impl IntoIterator<Item = DeviceId>) -> HashSet<DeviceId> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        devices
            .into_iter()
            .filter(|d| inner.contains_key(d))
            .collect()
    }
}

/// Outstanding REST-initiated calls.
#[derive(Clone)]
pub struct DeviceCalls {
    broker: Mqtt,
    online: OnlineDevices,
    timeout: Duration,
    waiting: Arc<Mutex<HashMap<Uuid, oneshot::Sender<UpdateResponse>>>>,
}

impl DeviceCalls {
    /// Calls answered within `timeout`.
    pub fn new(broker: Mqtt, online: OnlineDevices, timeout: Duration) -> DeviceCalls {
        DeviceCalls {
            broker,
            online,
            timeout,
            waiting: Arc::default(),
        }
    }

    /// Sends `call` to the device and waits for its answer.
    pub async fn call(&self, device: DeviceId, call: Call) -> Result<UpdateResponse, CallError> {
        let Some(slug) = self.online.slug(device) else {
            return Err(CallError::Offline);
        };
        let request = UpdateRequest::new(call);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(request.id, tx);
        let _forget = Forget {
            calls: self,
            id: request.id,
        };
        let topic = Topic::down(&slug, device, DownChannel::UpdateRequest);
        let reply_to = Topic::up(&slug, device, UpChannel::UpdateResponse);
        self.broker
            .publish_request(
                &topic.to_string(),
                request.to_bytes(),
                &reply_to.to_string(),
                request.id.to_string(),
            )
            .await
            .map_err(|e| CallError::NotSent(e.to_string()))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(response)) => Ok(response),
            // The sender only goes away with the entry, i.e. never before the timeout.
            Ok(Err(_)) | Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// Delivers a device's answer to whoever waits for it; gives it back if nobody does.
    pub fn answer(&self, response: UpdateResponse) -> Option<UpdateResponse> {
        let waiter = self.lock().remove(&response.id);
        match waiter {
            Some(tx) => tx.send(response).err(),
            None => Some(response),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<UpdateResponse>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes a call's entry however the call ends (answer, timeout, caller dropped).
struct Forget<'a> {
    calls: &'a DeviceCalls,
    id: Uuid,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.calls.lock().remove(&self.id);
    }
}
