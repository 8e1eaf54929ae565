//! [`OAuthStore`] on the kv tables: OAuth clients and their access tokens, both kept only hashed.

use crate::kv::{ReadableTable, WriteTransaction};
use uuid::Uuid;

use super::KvBackend;
use super::paging::{created_key, ids_under, paged};
use super::record::{cat, decode, encode, get_record};
use crate::oauth::{generate_secret, secret_hash};
use crate::tables::*;
use crate::{
    AccessGrant, OAuthClient, OAuthScope, OAuthStore, OrgId, Page, PageRequest, Result, Scope,
    StoreError, Timestamp,
};

/// The hashes of a client's tokens.
fn client_token_hashes(txn: &WriteTransaction, client: Uuid) -> Result<Vec<Vec<u8>>> {
    let owner = client.as_bytes();
    let lo = cat(&[owner, &[0u8; 32]]);
    let hi = cat(&[owner, &[0xffu8; 32]]);
    let table = txn.open_table(OAUTH_CLIENT_TOKENS)?;
    let mut hashes = Vec::new();
    for entry in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (key, _) = entry?;
        hashes.push(key.value()[16..].to_vec());
    }
    Ok(hashes)
}

/// Forgets a client's tokens: every one, or only those expired at `expired_at`.
fn forget_tokens(
    txn: &WriteTransaction,
    client: Uuid,
    expired_at: Option<Timestamp>,
) -> Result<()> {
    let hashes = client_token_hashes(txn, client)?;
    let mut tokens = txn.open_table(OAUTH_TOKENS)?;
    let mut links = txn.open_table(OAUTH_CLIENT_TOKENS)?;
    for hash in hashes {
        if let Some(now) = expired_at {
            let grant: Option<AccessGrant> = match tokens.get(hash.as_slice())? {
                Some(bytes) => Some(decode("oauth_tokens", bytes.value())?),
                None => None,
            };
            if grant.is_some_and(|g| g.expires > now) {
                continue;
            }
        }
        tokens.remove(hash.as_slice())?;
        links.remove(cat(&[client.as_bytes(), &hash]).as_slice())?;
    }
    Ok(())
}

impl OAuthStore for KvBackend {
    fn create_oauth_client(
        &self,
        name: String,
        organization: OrgId,
        scopes: Vec<OAuthScope>,
    ) -> Result<(OAuthClient, String)> {
        let secret = generate_secret();
        let client = OAuthClient {
            client_id: Uuid::new_v4(),
            name,
            organization,
            scopes,
            secret_hash: secret_hash(&secret),
            created: Timestamp::now(),
        };
        let txn = self.db.begin_write()?;
        {
            if txn
                .open_table(ORGANIZATIONS)?
                .get(organization.key())?
                .is_none()
            {
                return Err(StoreError::NotFound);
            }
            txn.open_table(OAUTH_CLIENTS)?.insert(
                client.client_id.as_u128(),
                encode("oauth_clients", &client)?.as_slice(),
            )?;
            let index = cat(&[
                &organization.bytes(),
                &created_key(client.created, *client.client_id.as_bytes()),
            ]);
            txn.open_table(OAUTH_CLIENTS_BY_ORG)?
                .insert(index.as_slice(), ())?;
        }
        txn.commit()?;
        Ok((client, secret))
    }

    fn oauth_client(&self, client_id: Uuid) -> Result<Option<OAuthClient>> {
        let txn = self.db.begin_read()?;
        get_record(
            &txn.open_table(OAUTH_CLIENTS)?,
            "oauth_clients",
            client_id.as_u128(),
        )
    }

    fn list_oauth_clients(&self, scope: &Scope, page: PageRequest) -> Result<Page<OAuthClient>> {
        let txn = self.db.begin_read()?;
        let clients = txn.open_table(OAUTH_CLIENTS)?;
        let mut all: Vec<OAuthClient> = Vec::new();
        match scope {
            Scope::All => {
                for entry in clients.iter()? {
                    let (_, bytes) = entry?;
                    all.push(decode("oauth_clients", bytes.value())?);
                }
            }
            Scope::Orgs(orgs) => {
                let index = txn.open_table(OAUTH_CLIENTS_BY_ORG)?;
                for org in orgs {
                    for id in ids_under(&index, &org.bytes())? {
                        if let Some(client) = get_record(&clients, "oauth_clients", id)? {
                            all.push(client);
                        }
                    }
                }
            }
        }
        // Clients of deleted organizations linger unseen until deleted themselves.
        let orgs = txn.open_table(ORGANIZATIONS)?;
        let mut visible = Vec::with_capacity(all.len());
        for client in all {
            if orgs.get(client.organization.key())?.is_some() {
                visible.push(client);
            }
        }
        visible.sort_by_key(|c| std::cmp::Reverse((c.created, c.client_id)));
        Ok(paged(visible, page))
    }

    fn delete_oauth_client(&self, client_id: Uuid) -> Result<()> {
        let txn = self.db.begin_write()?;
        delete_client_in(&txn, client_id)?;
        txn.commit()?;
        Ok(())
    }

    fn issue_access_token(
        &self,
        client_id: Uuid,
        scopes: Vec<OAuthScope>,
        lifetime_secs: u64,
    ) -> Result<(String, AccessGrant)> {
        let token = generate_secret();
        let hash = secret_hash(&token);
        let now = Timestamp::now();
        let lifetime = i64::try_from(lifetime_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let txn = self.db.begin_write()?;
        let grant = {
            let client: OAuthClient = get_record(
                &txn.open_table(OAUTH_CLIENTS)?,
                "oauth_clients",
                client_id.as_u128(),
            )?
            .ok_or(StoreError::NotFound)?;
            forget_tokens(&txn, client_id, Some(now))?;
            let grant = AccessGrant {
                client_id,
                organization: client.organization,
                scopes,
                expires: Timestamp::from_micros(now.as_micros().saturating_add(lifetime)),
            };
            txn.open_table(OAUTH_TOKENS)?
                .insert(hash.as_slice(), encode("oauth_tokens", &grant)?.as_slice())?;
            txn.open_table(OAUTH_CLIENT_TOKENS)?
                .insert(cat(&[client_id.as_bytes(), &hash]).as_slice(), ())?;
            grant
        };
        txn.commit()?;
        Ok((token, grant))
    }

    fn access_grant(&self, token: &str) -> Result<Option<AccessGrant>> {
        let hash = secret_hash(token);
        let txn = self.db.begin_read()?;
        let grant: AccessGrant = match txn.open_table(OAUTH_TOKENS)?.get(hash.as_slice())? {
            Some(bytes) => decode("oauth_tokens", bytes.value())?,
            None => return Ok(None),
        };
        if grant.expires <= Timestamp::now() {
            return Ok(None);
        }
        let client_exists = txn
            .open_table(OAUTH_CLIENTS)?
            .get(grant.client_id.as_u128())?
            .is_some();
        let org_exists = txn
            .open_table(ORGANIZATIONS)?
            .get(grant.organization.key())?
            .is_some();
        Ok((client_exists && org_exists).then_some(grant))
    }
}

/// Deletes a client with its tokens inside `txn`; `NotFound` if there is none.
fn delete_client_in(txn: &WriteTransaction, client_id: Uuid) -> Result<()> {
    let client: OAuthClient = get_record(
        &txn.open_table(OAUTH_CLIENTS)?,
        "oauth_clients",
        client_id.as_u128(),
    )?
    .ok_or(StoreError::NotFound)?;
    forget_tokens(txn, client_id, None)?;
    txn.open_table(OAUTH_CLIENTS)?.remove(client_id.as_u128())?;
    let index = cat(&[
        &client.organization.bytes(),
        &created_key(client.created, *client_id.as_bytes()),
    ]);
    txn.open_table(OAUTH_CLIENTS_BY_ORG)?
        .remove(index.as_slice())?;
    Ok(())
}

/// Deletes an organization's clients and their tokens inside `txn` (the organization is being
/// deleted).
pub(super) fn delete_org_clients_in(txn: &WriteTransaction, org: OrgId) -> Result<()> {
    let keys: Vec<Vec<u8>> = {
        let index = txn.open_table(OAUTH_CLIENTS_BY_ORG)?;
        let mut end = org.bytes().to_vec();
        end.extend([0xff; 24]);
        let start = org.bytes().to_vec();
        let mut keys = Vec::new();
        for entry in index.range(start.as_slice()..=end.as_slice())? {
            keys.push(entry?.0.value().to_vec());
        }
        keys
    };
    for key in keys {
        if let Some(tail) = key.len().checked_sub(16).map(|at| &key[at..]) {
            let mut id = [0u8; 16];
            id.copy_from_slice(tail);
            delete_client_in(txn, Uuid::from_bytes(id))?;
        }
    }
    Ok(())
}
