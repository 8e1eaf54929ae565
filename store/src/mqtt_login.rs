//! Who an MQTT client is, decided from the store: the one implementation behind the embedded
//! broker's authenticator (bridge) and the auth service external brokers ask (api
//! `broker_auth`). What a [`Principal`] may then publish, subscribe and read is `protocol`'s
//! ACL.
//!
//! - Devices: username = client id = device id, password = device key. Unknown device or
//!   wrong key → bad credentials; deactivated device or inactive organization → not
//!   authorized.
//! - Operators: username = API username, password = an API token of that user. They may
//!   watch (read only) the organizations they manage; superusers watch everything. An
//!   operator who manages none is not authorized.
//! - Devices with a client certificate (MQTT over TLS): the certificate must chain to a CA of
//!   an organization, be inside its validity, not be revoked, and name a device of that
//!   organization as its common name; no key is needed. A username, if sent, must be that
//!   device's id.

use fleetmq_protocol::{OrgScope, Principal};

use crate::{Backend, DeviceId, DeviceLogin, Result, User};

/// What a client presented when it connected.
#[derive(Debug, Clone, Copy)]
pub struct MqttLogin<'a> {
    /// Username, `None` if absent or empty.
    pub username: Option<&'a str>,
    /// Password bytes (empty if absent).
    pub password: &'a [u8],
    /// The leaf of the client certificate chain (DER), if the client presented one.
    pub client_certificate: Option<&'a [u8]>,
}

/// Why a login is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    /// Unknown user or wrong password.
    BadCredentials,
    /// Known but not allowed to connect (a deactivated device, an inactive organization or
    /// user, an operator without organizations).
    NotAuthorized,
    /// The client certificate does not name an active device; the reason is for the log.
    Certificate(String),
}

/// Decides `login`. The outer `Result` is the store's; the inner one the decision.
pub fn decide_login(
    db: &dyn Backend,
    login: &MqttLogin<'_>,
) -> Result<std::result::Result<Principal, LoginRefused>> {
    if let Some(leaf) = login.client_certificate {
        return certificate_decision(db, leaf, login.username);
    }
    let Some(username) = login.username else {
        return Ok(Err(LoginRefused::NotAuthorized));
    };
    if let Ok(id) = username.parse::<DeviceId>()
        && let Some(device) = db.device_login(id)?
    {
        return Ok(device_decision(id, &device, login.password));
    }
    let Ok(token) = std::str::from_utf8(login.password) else {
        return Ok(Err(LoginRefused::BadCredentials));
    };
    let Some(user) = db.user_for_token(token)? else {
        return Ok(Err(LoginRefused::BadCredentials));
    };
    if user.fields.username.as_str() != username {
        return Ok(Err(LoginRefused::BadCredentials));
    }
    Ok(operator(db, &user)?.ok_or(LoginRefused::NotAuthorized))
}

/// A device's login: its key must match, it must be active and so must its organization.
pub fn device_decision(
    id: DeviceId,
    device: &DeviceLogin,
    password: &[u8],
) -> std::result::Result<Principal, LoginRefused> {
    if !device.key.matches(password) {
        return Err(LoginRefused::BadCredentials);
    }
    device_principal(id, device).ok_or(LoginRefused::NotAuthorized)
}

/// Who `username` is *now*, without a password: for a broker that authenticated the client
/// earlier and asks again before each publish or subscription. `None` when the username names
/// nobody who may connect any more (deleted, deactivated, organization inactive, token-less
/// changes such as losing every organization), so a revoked right stops working on live
/// sessions at their next action.
pub fn current_principal(db: &dyn Backend, username: &str) -> Result<Option<Principal>> {
    if let Ok(id) = username.parse::<DeviceId>()
        && let Some(device) = db.device_login(id)?
    {
        return Ok(device_principal(id, &device));
    }
    match db.user_by_username(username)? {
        Some(user) => operator(db, &user),
        None => Ok(None),
    }
}

fn device_principal(id: DeviceId, device: &DeviceLogin) -> Option<Principal> {
    (!device.deactivated && device.org_active).then(|| Principal::Device {
        org_slug: device.org_slug.clone(),
        device_id: id,
    })
}

/// An active user as an operator: every organization for a superuser, else the ones they
/// manage (none: `None`).
fn operator(db: &dyn Backend, user: &User) -> Result<Option<Principal>> {
    if !user.fields.is_active {
        return Ok(None);
    }
    if user.fields.is_superuser {
        return Ok(Some(Principal::Operator {
            orgs: OrgScope::All,
        }));
    }
    let mut slugs = Vec::new();
    for org in user.managed_orgs() {
        if let Some(org) = db.organization(org)?
            && org.fields.is_active
        {
            slugs.push(org.fields.slug.as_str().to_owned());
        }
    }
    Ok((!slugs.is_empty()).then_some(Principal::Operator {
        orgs: OrgScope::Managed(slugs),
    }))
}

/// A login by client certificate (`leaf` is the device's).
fn certificate_decision(
    db: &dyn Backend,
    leaf: &[u8],
    username: Option<&str>,
) -> Result<std::result::Result<Principal, LoginRefused>> {
    let found = match db.certificate_login(leaf, time::OffsetDateTime::now_utc())? {
        Ok(found) => found,
        Err(reason) => return Ok(Err(LoginRefused::Certificate(reason.to_string()))),
    };
    if username.is_some_and(|u| u != found.device.to_string()) {
        return Ok(Err(LoginRefused::NotAuthorized));
    }
    let Some(device) = db.device_login(found.device)? else {
        return Ok(Err(LoginRefused::NotAuthorized));
    };
    Ok(device_principal(found.device, &device).ok_or(LoginRefused::NotAuthorized))
}
