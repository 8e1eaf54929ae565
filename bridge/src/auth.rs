//! Who may connect to the broker, decided from the store.
//!
//! - Devices: username = client id = device id, password = device key. Unknown device or
//!   wrong key → bad credentials; deactivated device or inactive organization → not authorized.
//!   What a device's login needs is cached by the store (`Backend::cached_device_login`) and
//!   invalidated when the key, the deactivation or the organization changes, so a known
//!   device is decided without a blocking hop and changes apply to the next connection.
//! - Operators: username = API username, password = an API token of that user. They may watch
//!   (read only) the organizations they manage; superusers watch everything.
//! - Devices with a client certificate (MQTT over TLS): the certificate must chain to a CA of
//!   an organization, be inside its validity, not be revoked, and name a device of that
//!   organization as its common name (`PkiStore::certificate_login`); no key is needed. A
//!   username, if sent, must be that device's id. Every refusal is CONNACK 0x05, logged with
//!   its reason. The broker keeps the chain with the session, so a revocation judged later
//!   ends a live session too.

use fleetmq_broker::{AuthFuture, Authenticator, Login, Refusal};
use fleetmq_protocol::{OrgScope, Principal};
use fleetmq_store::{Backend, DeviceId, DeviceLogin, Result, Store};

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
                return device_decision(id, &device, login.password.as_deref().unwrap_or_default());
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

/// A device's login: its key must match, it must be active and so must its organization.
fn device_decision(
    id: DeviceId,
    device: &DeviceLogin,
    password: &[u8],
) -> Result<Principal, Refusal> {
    if !device.key.matches(password) {
        return Err(Refusal::BadCredentials);
    }
    if device.deactivated || !device.org_active {
        return Err(Refusal::NotAuthorized);
    }
    Ok(Principal::Device {
        org_slug: device.org_slug.clone(),
        device_id: id,
    })
}

/// A login by client certificate (the first of the presented chain is the device's).
fn certificate_decision(
    db: &dyn Backend,
    leaf: &[u8],
    login: &Login,
) -> Result<Result<Principal, Refusal>> {
    let found = match db.certificate_login(leaf, time::OffsetDateTime::now_utc())? {
        Ok(found) => found,
        Err(reason) => {
            tracing::info!(peer = %login.peer, client_id = %login.client_id, %reason,
                "MQTT client certificate refused");
            return Ok(Err(Refusal::NotAuthorized));
        }
    };
    if login
        .username
        .as_deref()
        .is_some_and(|u| u != found.device.to_string())
    {
        return Ok(Err(Refusal::NotAuthorized));
    }
    let Some(device) = db.device_login(found.device)? else {
        return Ok(Err(Refusal::NotAuthorized));
    };
    if device.deactivated || !device.org_active {
        return Ok(Err(Refusal::NotAuthorized));
    }
    Ok(Ok(Principal::Device {
        org_slug: device.org_slug,
        device_id: found.device,
    }))
}

fn decide(db: &dyn Backend, login: &Login) -> Result<Result<Principal, Refusal>> {
    if let Some(leaf) = login.client_certificates.first() {
        return certificate_decision(db, leaf.as_ref(), login);
    }
    let Some(username) = login.username.as_deref() else {
        return Ok(Err(Refusal::NotAuthorized));
    };
    let password = login.password.as_deref().unwrap_or_default();
    if let Ok(id) = username.parse::<DeviceId>()
        && let Some(device) = db.device_login(id)?
    {
        return Ok(device_decision(id, &device, password));
    }
    let Ok(token) = std::str::from_utf8(password) else {
        return Ok(Err(Refusal::BadCredentials));
    };
    let Some(user) = db.user_for_token(token)? else {
        return Ok(Err(Refusal::BadCredentials));
    };
    if user.fields.username.as_str() != username {
        return Ok(Err(Refusal::BadCredentials));
    }
    if !user.fields.is_active {
        return Ok(Err(Refusal::NotAuthorized));
    }
    if user.fields.is_superuser {
        return Ok(Ok(Principal::Operator {
            orgs: OrgScope::All,
        }));
    }
    let mut slugs = Vec::new();
    for org in user.managed_orgs() {
        if let Some(org) = db.organization(org)? {
            slugs.push(org.fields.slug.as_str().to_owned());
        }
    }
    if slugs.is_empty() {
        return Ok(Err(Refusal::NotAuthorized));
    }
    Ok(Ok(Principal::Operator {
        orgs: OrgScope::Managed(slugs),
    }))
}
