//! Nodes sharing one PostgreSQL database: what a commit of another node means for this one.
//!
//! Each node caches (token → user, device logins, page anchors) and announces what it
//! commits on in-process broadcasts ([`crate::LoginChanges`], [`crate::ConfigChanges`]). A
//! write hands each change it announces to its transaction as well ([`carry_login`],
//! [`carry_config`]), so the commit's notice carries it to every other node
//! ([`crate::kv::RemoteCommit`]). There the [`Follower`], a thread of its own driven by the
//! listener, forgets what depends on the tables the commit changed and then announces the
//! changes it carried, as if they had been committed here: a token revoked on one node stops
//! working on all of them as soon as the notice arrives, with no request needed.
//!
//! When notices may have been missed (the listener reconnected, or this node fell behind
//! them), every cache is emptied and the login broadcast is told of every user, every
//! organization and new devices, so its subscribers judge every session and credential again.
//! Configuration has no such "all" change: see [`crate::configuration`].

use std::collections::HashSet;
use std::sync::Arc;

use redb::TableHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::paging::PageAnchors;
use crate::kv::{ReadableTable, RemoteCommit, WeakDatabase, WriteTransaction};
use crate::tables::*;
use crate::{
    ConfigChange, ConfigChanges, DeviceId, DeviceLogin, LoginChange, LoginChanges, RemoteChange,
    RemoteChanges, Result, TokenCache,
};

/// A change a transaction carries to the other nodes, as JSON.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Announcement {
    Login(LoginChange),
    Config(ConfigChange),
    Live(crate::LiveEvent),
}

/// Hands `change` to `txn`, for every other node to announce once it commits. Call it before
/// the commit, besides announcing the change here after it.
pub(super) fn carry_login(txn: &WriteTransaction, change: &LoginChange) {
    carry(txn, &Announcement::Login(change.clone()));
}

/// [`carry_login`] for a live event.
pub(super) fn carry_live(txn: &WriteTransaction, event: &crate::LiveEvent) {
    carry(txn, &Announcement::Live(event.clone()));
}

/// [`carry_login`] for a configuration change; an empty one is not carried.
pub(super) fn carry_config(txn: &WriteTransaction, change: &ConfigChange) {
    if !change.is_empty() {
        carry(txn, &Announcement::Config(change.clone()));
    }
}

fn carry(txn: &WriteTransaction, announcement: &Announcement) {
    match serde_json::to_string(announcement) {
        Ok(text) => txn.announce(text),
        // Not with these types; were it ever, the other nodes would miss one change.
        Err(e) => tracing::error!(error = %e, "an announcement could not be encoded"),
    }
}

/// What a remote commit must reach on this node.
pub(super) struct Follower {
    pub(super) db: WeakDatabase,
    pub(super) tokens: Arc<TokenCache>,
    pub(super) anchors: Arc<PageAnchors>,
    pub(super) logins: Arc<crate::memo::Memo<DeviceId, DeviceLogin>>,
    pub(super) changes: LoginChanges,
    pub(super) config_changes: ConfigChanges,
    pub(super) live: crate::LiveEvents,
    pub(super) remote: RemoteChanges,
}

/// The names of `definitions`.
fn names(definitions: &[&dyn TableHandle]) -> HashSet<String> {
    definitions.iter().map(|d| d.name().to_owned()).collect()
}

impl Follower {
    /// Follows the other nodes' commits on a thread of its own until the database is dropped
    /// (its listener stops, and `commits` closes).
    pub(super) fn spawn(
        self,
        commits: tokio::sync::broadcast::Receiver<RemoteCommit>,
    ) -> Result<()> {
        std::thread::Builder::new()
            .name("fleetmq-notices".into())
            .spawn(move || self.run(commits))
            .map_err(|e| crate::StoreError::Task(format!("the notice follower: {e}")))?;
        Ok(())
    }

    fn run(self, mut commits: tokio::sync::broadcast::Receiver<RemoteCommit>) {
        // What each cache is read from (see where each is filled and emptied).
        let token_tables = names(&[
            &TOKENS,
            &USER_TOKENS,
            &USERS,
            &ORGANIZATION_MEMBERS,
            &ORGANIZATIONS,
        ]);
        // Logins are read from devices' briefs, which change with the devices' records except
        // for the last address (a session's write, which no login depends on).
        let login_tables = names(&[&DEVICES, &ORGANIZATIONS]);
        let anchor_tables = names(&[&DEVICES_BY_CREATED, &DEVICES_BY_ORG]);
        loop {
            match commits.blocking_recv() {
                Ok(RemoteCommit::Commit {
                    tables,
                    announcements,
                }) => {
                    let touches =
                        |names: &HashSet<String>| tables.iter().any(|t| names.contains(t));
                    if touches(&token_tables) {
                        self.tokens.clear();
                    }
                    if touches(&login_tables) {
                        self.logins.clear();
                    }
                    if touches(&anchor_tables) {
                        self.anchors.invalidate();
                    }
                    self.announce(&announcements);
                    self.remote.announce(RemoteChange::Tables(tables));
                }
                Ok(RemoteCommit::Everything) => self.everything(),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "other nodes' commits missed; assuming anything changed"
                    );
                    self.everything();
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Announces what a remote commit carried, once the caches it concerns were emptied.
    fn announce(&self, announcements: &[String]) {
        for text in announcements {
            match serde_json::from_str(text) {
                Ok(Announcement::Login(change)) => self.changes.announce(change),
                Ok(Announcement::Config(change)) => self.config_changes.announce(&change),
                Ok(Announcement::Live(event)) => self.live.announce(event),
                // A node of another version, say: what it meant is unknown.
                Err(e) => {
                    tracing::warn!(error = %e, "an announcement not understood; judging every login");
                    self.every_login();
                }
            }
        }
    }

    /// Anything may have changed: every cache starts over, every login is judged again.
    fn everything(&self) {
        self.tokens.clear();
        self.logins.clear();
        self.anchors.invalidate();
        self.every_login();
        self.remote.announce(RemoteChange::Everything);
    }

    /// Tells the login broadcast's subscribers to judge every operator, every organization's
    /// devices, and the credential files, again.
    fn every_login(&self) {
        self.changes.announce(LoginChange::Users);
        self.changes.announce(LoginChange::DevicesAdded);
        match self.slugs() {
            Ok(slugs) => {
                for slug in slugs {
                    self.changes.announce(LoginChange::Organization { slug });
                }
            }
            Err(e) => tracing::warn!(
                error = %e,
                "organizations unread; devices' sessions are judged again on their next change"
            ),
        }
    }

    /// Every organization's slug (the database may be gone: then none).
    fn slugs(&self) -> Result<Vec<String>> {
        let Some(db) = self.db.upgrade() else {
            return Ok(Vec::new());
        };
        let txn = db.begin_read()?;
        let mut slugs = Vec::new();
        for entry in txn.open_table(ORGANIZATION_SLUGS)?.iter()? {
            let (slug, _) = entry?;
            slugs.push(slug.value().to_owned());
        }
        Ok(slugs)
    }
}
