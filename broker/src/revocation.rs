//! Taking back what a live session was allowed. A login is judged at CONNECT; when something
//! it depended on changes (a user deactivated, a membership removed, an organization
//! deactivated, a device key changed), [`BrokerHandle::reauthorize`] asks the
//! [`Authenticator`](crate::Authenticator) again for every live session the change may
//! concern, on every listener, and ends those whose answer is now a refusal or a different
//! identity (narrower organizations, another slug). Their clients reconnect and are judged
//! as new logins; a login in flight while the change happened is judged once more before it
//! is admitted.

use fleetmq_protocol::{DeviceId, OrgScope, Principal};
use futures_util::StreamExt;

use crate::auth::Refusal;
use crate::handle::BrokerHandle;
use crate::session::Entry;

/// Live sessions judged at once.
const CONCURRENT_CHECKS: usize = 64;

/// Which live sessions a change may concern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affected {
    /// One device's session.
    Device(DeviceId),
    /// Devices of the organization with this slug, and operators who may watch it.
    Organization(String),
    /// Every operator's session.
    Operators,
    /// Every authenticated session (when what changed is unknown).
    Everyone,
}

impl Affected {
    /// Whether a session of `principal` may be concerned.
    pub(crate) fn covers(&self, principal: &Principal) -> bool {
        match (self, principal) {
            (_, Principal::Anonymous) => false,
            (Affected::Everyone, _) => true,
            (Affected::Device(id), Principal::Device { device_id, .. }) => id == device_id,
            (Affected::Organization(slug), Principal::Device { org_slug, .. }) => slug == org_slug,
            (Affected::Organization(slug), Principal::Operator { orgs }) => match orgs {
                OrgScope::All => false,
                OrgScope::Managed(slugs) => slugs.contains(slug),
            },
            (Affected::Operators, Principal::Operator { .. }) => true,
            _ => false,
        }
    }
}

impl BrokerHandle {
    /// Judges again every live session `affected` covers and ends those no longer allowed as
    /// they are (their last wills are published). Returns how many were ended, once they
    /// are gone. A session is kept when the authenticator cannot decide (store unavailable).
    pub async fn reauthorize(&self, affected: Affected) -> usize {
        let sessions = self.core.sessions.revoke(affected);
        futures_util::stream::iter(sessions)
            .map(|(key, entry)| self.judge(key, entry))
            .buffer_unordered(CONCURRENT_CHECKS)
            .filter(|ended| std::future::ready(*ended))
            .count()
            .await
    }

    async fn judge(&self, key: String, entry: Entry) -> bool {
        let credentials = &entry.credentials;
        match self.core.auth.authenticate(credentials.login.clone()).await {
            Ok(principal) if principal == credentials.principal => false,
            Err(Refusal::ServerUnavailable) => {
                tracing::warn!(client = key, "cannot judge a live session again; kept");
                false
            }
            answer => {
                tracing::info!(client = key, ?answer, "live session revoked");
                self.core.sessions.end(&key, entry.generation).await;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_concerns_the_sessions_it_could_refuse_and_no_others() {
        let device = |slug: &str, id: &str| Principal::Device {
            org_slug: slug.into(),
            device_id: id.parse().expect("a device id"),
        };
        let d1 = "00000000-0000-4000-8000-0000000000d1";
        let d2 = "00000000-0000-4000-8000-0000000000d2";
        let acme_device = device("acme", d1);
        let beta_device = device("beta", d2);
        let acme_operator = Principal::Operator {
            orgs: OrgScope::Managed(vec!["acme".into()]),
        };
        let superuser = Principal::Operator {
            orgs: OrgScope::All,
        };
        let acme = Affected::Organization("acme".into());
        assert!(acme.covers(&acme_device));
        assert!(!acme.covers(&beta_device));
        assert!(acme.covers(&acme_operator));
        // A superuser's scope does not depend on any one organization.
        assert!(!acme.covers(&superuser));
        let one = Affected::Device(d1.parse().expect("a device id"));
        assert!(one.covers(&acme_device));
        assert!(!one.covers(&beta_device));
        assert!(!one.covers(&acme_operator));
        assert!(Affected::Operators.covers(&superuser));
        assert!(!Affected::Operators.covers(&acme_device));
        assert!(Affected::Everyone.covers(&beta_device));
        for affected in [acme, one, Affected::Operators, Affected::Everyone] {
            assert!(!affected.covers(&Principal::Anonymous));
        }
    }
}
