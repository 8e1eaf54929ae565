//! The first start: an empty store gets an `admin` superuser and a token, shown once.

use anyhow::Context;
use fleetmq_store::{Password, Store, Token, UserFields, Username};
use rand::Rng;

/// Credentials created on the first start; printed once by `main`.
#[derive(Debug, Clone)]
pub struct FirstStart {
    /// The admin's username (`admin`).
    pub username: String,
    /// The admin's password (from `FLEETMQ_ADMIN_PASSWORD` or random).
    pub password: String,
    /// A fresh API token of the admin.
    pub token: String,
}

/// Creates `admin` when no user exists yet; returns what was created.
pub async fn ensure_admin(
    store: &Store,
    password: Option<String>,
) -> anyhow::Result<Option<FirstStart>> {
    let password = password.unwrap_or_else(random_password);
    let checked =
        Password::parse(&password).map_err(|m| anyhow::anyhow!("FLEETMQ_ADMIN_PASSWORD: {m}"))?;
    let created = store
        .run(move |db| {
            if db.has_users()? {
                return Ok(None);
            }
            let fields = UserFields {
                username: Username::parse("admin").expect("\"admin\" is a valid username"),
                email: String::new(),
                first_name: String::new(),
                last_name: String::new(),
                is_superuser: true,
                is_active: true,
                groups: Vec::new(),
                memberships: Vec::new(),
            };
            let user = db.create_user(fields, checked)?;
            let token: Token = db.create_token(user.id)?;
            Ok(Some(token))
        })
        .await
        .context("creating the first admin")?;
    Ok(created.map(|token| FirstStart {
        username: "admin".to_owned(),
        password,
        token: token.as_str().to_owned(),
    }))
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
