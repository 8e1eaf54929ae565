//! Mosquitto's plugin-free auth, kept from the store: fleetmq writes a password file and an
//! ACL file (`--mosquitto-files DIR`: `DIR/passwd`, `DIR/acl`) and asks Mosquitto to reread
//! them (SIGHUP to the process in `--mosquitto-pid-file`) at start and after login changes
//! the store commits, at most once per [`RELOAD_SPACING`]. Mosquitto 2 then checks passwords
//! and ACLs of connected clients again and disconnects those that no longer pass, so a
//! deactivated device, a changed key or an organization turned inactive stops working at
//! once.
//!
//! What the files hold, the rules of fleetmq's ACL as Mosquitto can say them:
//!
//! ```text
//! user {device id}                              # password: its key (PBKDF2-SHA512, $7$)
//! topic write fleetmq/v1/{org}/{device}/up/#
//! topic read fleetmq/v1/{org}/{device}/down/#
//! user {bridge}                                 # --mqtt-broker-username / -password
//! topic readwrite fleetmq/#
//! ```
//!
//! Only devices that may connect (active, in an active organization) are listed. Operators
//! are not: the store keeps only their tokens' hashes, and Mosquitto needs a hash of its own
//! making. Mosquitto checks read access per delivered message, like fleetmq.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use fleetmq_store::{DeviceId, Store};
use rand::RngCore;
use sha2::Sha512;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Where the files go and whom to tell.
#[derive(Debug, Clone)]
pub struct MosquittoFiles {
    /// Directory of `passwd` and `acl` (Mosquitto's `password_file` and `acl_file`).
    pub dir: PathBuf,
    /// Mosquitto's `pid_file`: the process to send SIGHUP after each write.
    pub pid_file: Option<PathBuf>,
    /// The bridge's own username and password on Mosquitto.
    pub bridge: Option<(String, String)>,
}

/// Mosquitto 2's PBKDF2 iterations (`mosquitto_passwd`'s default).
const ITERATIONS: u32 = 101;

/// A password hash in Mosquitto 2's `$7$` format: PBKDF2-HMAC-SHA512, 12-byte salt.
pub fn password_hash(password: &str, salt: &[u8; 12]) -> String {
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, ITERATIONS, &mut hash);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("$7${ITERATIONS}${}${}", b64.encode(salt), b64.encode(hash))
}

/// Hashes already computed, by user: a key that did not change is not hashed again.
#[derive(Default)]
struct Hashes(HashMap<String, (String, String)>);

impl Hashes {
    fn get(&mut self, user: &str, password: &str) -> String {
        if let Some((known, hash)) = self.0.get(user)
            && known == password
        {
            return hash.clone();
        }
        let mut salt = [0u8; 12];
        rand::rng().fill_bytes(&mut salt);
        let hash = password_hash(password, &salt);
        self.0
            .insert(user.to_owned(), (password.to_owned(), hash.clone()));
        hash
    }
}

/// The two files' text for these device logins (`(id, key, org slug)`).
fn render(
    devices: &[(DeviceId, String, String)],
    bridge: Option<&(String, String)>,
    hashes: &mut Hashes,
) -> (String, String) {
    let mut passwd = String::new();
    let mut acl = String::new();
    let mut seen = HashMap::new();
    if let Some((user, password)) = bridge {
        passwd.push_str(&format!("{user}:{}\n", hashes.get(user, password)));
        acl.push_str(&format!("user {user}\ntopic readwrite fleetmq/#\n\n"));
    }
    for (id, key, org) in devices {
        let user = id.to_string();
        passwd.push_str(&format!("{user}:{}\n", hashes.get(&user, key)));
        acl.push_str(&format!(
            "user {user}\ntopic write fleetmq/v1/{org}/{user}/up/#\ntopic read fleetmq/v1/{org}/{user}/down/#\n\n"
        ));
        seen.insert(user, ());
    }
    // Forget the hashes of devices that left.
    hashes
        .0
        .retain(|user, _| seen.contains_key(user) || bridge.is_some_and(|(b, _)| b == user));
    (passwd, acl)
}

/// Writes `text` to `path` through a temporary file and a rename, so Mosquitto never reads
/// half a file; readable by the owner only (the password file holds hashes of device keys).
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Sends SIGHUP to the process whose id `pid_file` holds.
fn signal_reload(pid_file: &Path) -> std::io::Result<()> {
    let text = std::fs::read_to_string(pid_file)?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("{}: not a process id", pid_file.display())))?;
    let pid = rustix::process::Pid::from_raw(pid)
        .filter(|pid| pid.as_raw_nonzero().get() > 0)
        .ok_or_else(|| std::io::Error::other("refusing to signal a process group"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)?;
    Ok(())
}

/// Writes the files from the store, then tells Mosquitto.
async fn refresh(store: &Store, config: &MosquittoFiles, hashes: &mut Hashes) {
    let logins = match store.run(|db| db.active_device_logins()).await {
        Ok(logins) => logins,
        Err(e) => {
            tracing::error!(error = %e, "mosquitto files: cannot read device logins");
            return;
        }
    };
    let devices: Vec<(DeviceId, String, String)> = logins
        .into_iter()
        .map(|(id, login)| (id, login.key.as_str().to_owned(), login.org_slug))
        .collect();
    let count = devices.len();
    let config_copy = config.clone();
    let mut taken = std::mem::take(hashes);
    // Hashing and writing are blocking work.
    let done = tokio::task::spawn_blocking(move || {
        let (passwd, acl) = render(&devices, config_copy.bridge.as_ref(), &mut taken);
        // The ACL first: a reload that reads one new file and one old one then admits a
        // device only once its rules are in place, and a removed device loses its rules
        // before its password.
        let written = write_atomically(&config_copy.dir.join("acl"), &acl)
            .and_then(|()| write_atomically(&config_copy.dir.join("passwd"), &passwd));
        (written, taken)
    })
    .await;
    let written = match done {
        Ok((written, kept)) => {
            *hashes = kept;
            written
        }
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    if let Err(e) = written {
        tracing::error!(error = %e, dir = %config.dir.display(), "mosquitto files not written");
        return;
    }
    if let Some(pid_file) = &config.pid_file
        && let Err(e) = signal_reload(pid_file)
    {
        tracing::warn!(error = %e, pid_file = %pid_file.display(), "cannot ask mosquitto to reload");
        return;
    }
    tracing::debug!(devices = count, "mosquitto files written");
}

/// The least time between two reloads asked of Mosquitto. Mosquitto clears its reload flag
/// when a reload ends, so a SIGHUP that arrives during a reload is lost: spaced, the last
/// change is always reloaded.
pub const RELOAD_SPACING: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the files current until `shutdown`: once at start, then after login changes (the
/// changes of one [`RELOAD_SPACING`] are one rewrite and one reload). Subscribes before
/// returning, so no change committed after this call is missed.
pub fn follow(
    store: &Store,
    config: MosquittoFiles,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let mut changes = store.blocking().login_changes();
    let store = store.clone();
    async move {
        let mut hashes = Hashes::default();
        loop {
            refresh(&store, &config, &mut hashes).await;
            // Changes meanwhile wait in the channel for the next rewrite; the first one too,
            // so that no reload is asked while Mosquitto may still be in the last one.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RELOAD_SPACING) => {}
            }
            let change = tokio::select! {
                () = shutdown.cancelled() => return,
                change = changes.recv() => change,
            };
            match change {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
            // Everything already announced is covered by the next rewrite.
            while changes.try_recv().is_ok() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_have_mosquittos_format_and_depend_on_the_salt() {
        let a = password_hash("secret-key-0123456789", &[1; 12]);
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"]);
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(parts[3]).map(|s| s.len()).ok(), Some(12));
        assert_eq!(b64.decode(parts[4]).map(|h| h.len()).ok(), Some(64));
        assert_ne!(a, password_hash("secret-key-0123456789", &[2; 12]));
        assert_eq!(a, password_hash("secret-key-0123456789", &[1; 12]));
    }

    #[test]
    fn a_key_is_hashed_again_only_when_it_changes() {
        let mut hashes = Hashes::default();
        let first = hashes.get("d", "key-one-0123456789");
        assert_eq!(hashes.get("d", "key-one-0123456789"), first);
        assert_ne!(hashes.get("d", "key-two-0123456789"), first);
    }
}
