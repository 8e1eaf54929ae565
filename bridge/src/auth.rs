//! Who may connect to the broker: the broker's [`Authenticator`] over the store's one
//! decision (`fleetmq_store::mqtt_login`, which external brokers' auth service shares).
//!
//! What a device's login needs is cached by the store (`Backend::cached_device_login`) and
//! invalidated when the key, the deactivation or the organization changes, so a known device
//! is decided without a blocking hop and changes apply to the next connection. Every refusal
//! is a CONNACK return code; a refused client certificate is logged with its reason. The
//! broker keeps the chain with the session, so a revocation judged later ends a live session
//! too.

use fleetmq_broker::{AuthFuture, Authenticator, Login, Refusal};
use fleetmq_protocol::Principal;
use fleetmq_store::mqtt_login::{decide_login, device_decision};
use fleetmq_store::{Backend, DeviceId, LoginRefused, MqttLogin, Result, Store};

/// Answers the broker's login questions from the store.
#[derive(Clone)]
pub struct StoreAuthenticator {
    store: Store,
}

impl StoreAuthenticator {
    /// An authenticator over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl Authenticator for StoreAuthenticator {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            // A device seen before is decided from memory, without a blocking hop.
            if login.client_certificates.is_empty()
                && let Some(username) = login.username.as_deref()
                && let Ok(id) = username.parse::<DeviceId>()
                && let Some(device) = self.store.blocking().cached_device_login(id)
            {
                return device_decision(id, &device, login.password.as_deref().unwrap_or_default())
                    .map_err(|refused| refusal(refused, &login));
            }
            match self.store.run(move |db| decide(db, &login)).await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::error!(error = %e, "store unavailable during MQTT login");
                    Err(Refusal::ServerUnavailable)
                }
            }
        })
    }
}

fn decide(db: &dyn Backend, login: &Login) -> Result<Result<Principal, Refusal>> {
    let presented = MqttLogin {
        username: login.username.as_deref(),
        password: login.password.as_deref().unwrap_or_default(),
        client_certificate: login.client_certificates.first().map(|c| c.as_ref()),
    };
    Ok(decide_login(db, &presented)?.map_err(|refused| refusal(refused, login)))
}

/// The CONNACK answer to a refused login; a refused certificate is logged with its reason.
fn refusal(refused: LoginRefused, login: &Login) -> Refusal {
    match refused {
        LoginRefused::BadCredentials => Refusal::BadCredentials,
        LoginRefused::NotAuthorized => Refusal::NotAuthorized,
        LoginRefused::Certificate(reason) => {
            tracing::info!(peer = %login.peer, client_id = %login.client_id, %reason,
                "MQTT client certificate refused");
            Refusal::NotAuthorized
        }
    }
}
