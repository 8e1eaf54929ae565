//! Short-lived download links for devices: the bridge puts a signed grant into the fetch URL
//! it sends a device, and the API lets the holder download that one image until the grant
//! expires, without an API token.
//!
//! The signature is HMAC-SHA256 over `image ‖ device ‖ expires` with a secret the store keeps
//! ([`DOWNLOAD_SECRET`]), so links survive restarts and cannot be forged or re-targeted.
//! Image download paths and signed links are built here only ([`image_path`],
//! [`DownloadGrant::link`]), so what the bridge sends and what the API serves cannot drift.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{BuildId, DeviceId, ImageId, Timestamp};

/// Name of the store secret signing download links.
pub const DOWNLOAD_SECRET: &str = "download-links";

/// The API path an image is downloaded from (with a token, or with a grant in the query).
pub fn image_path(build: BuildId, image: ImageId) -> String {
    format!("/api/v1/firmware-upgrader/build/{build}/image/{image}/download/")
}

/// Permission for one device to download one image until `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadGrant {
    /// The image.
    pub image: ImageId,
    /// The device allowed.
    pub device: DeviceId,
    /// Unix seconds after which the link is refused.
    pub expires: i64,
}

impl DownloadGrant {
    /// A grant for `device` to download `image` until `lifetime` after `from` (whole seconds).
    /// The same `from` gives the same grant, so a link sent again is the same link.
    pub fn expiring(image: ImageId, device: DeviceId, from: Timestamp, lifetime: Duration) -> Self {
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        Self {
            image,
            device,
            expires: (from.as_micros() / 1_000_000).saturating_add(lifetime),
        }
    }

    fn mac(&self, secret: &[u8; 32]) -> Hmac<Sha256> {
        // Any key length is accepted by HMAC.
        let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(&self.image.bytes());
        mac.update(&self.device.bytes());
        mac.update(&self.expires.to_be_bytes());
        mac
    }

    /// The hex signature of this grant.
    pub fn sign(&self, secret: &[u8; 32]) -> String {
        hex::encode(self.mac(secret).finalize().into_bytes())
    }

    /// Whether `signature` signs this grant (constant time) and it has not expired.
    pub fn verify(&self, secret: &[u8; 32], signature: &str, now: Timestamp) -> bool {
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        self.expires >= now.as_micros() / 1_000_000
            && self.mac(secret).verify_slice(&signature).is_ok()
    }

    /// The query string carrying this grant: `device=..&expires=..&signature=..`.
    pub fn query(&self, secret: &[u8; 32]) -> String {
        format!(
            "device={}&expires={}&signature={}",
            self.device,
            self.expires,
            self.sign(secret)
        )
    }

    /// The signed link a device downloads the image of `build` with: `base_url` (this
    /// server's API, e.g. `http://192.0.2.10:8000`), the image's path and the grant.
    pub fn link(&self, base_url: &str, build: BuildId, secret: &[u8; 32]) -> String {
        format!(
            "{}{}?{}",
            base_url.trim_end_matches('/'),
            image_path(build, self.image),
            self.query(secret)
        )
    }
}

/// The API path a device's configuration archive is downloaded from (with a token, or with a
/// [`ConfigGrant`] in the query).
pub fn config_path(device: DeviceId) -> String {
    format!("/api/v1/controller/device/{device}/configuration/")
}

/// Permission for one device to download its own configuration archive until `expires`.
/// Signed apart from image grants (`"config"` leads the signed bytes), so neither kind of link
/// can be turned into the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigGrant {
    /// The device allowed, whose configuration it is.
    pub device: DeviceId,
    /// Unix seconds after which the link is refused.
    pub expires: i64,
}

impl ConfigGrant {
    /// A grant for `device` until `lifetime` after `from` (whole seconds).
    pub fn expiring(device: DeviceId, from: Timestamp, lifetime: Duration) -> Self {
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        Self {
            device,
            expires: (from.as_micros() / 1_000_000).saturating_add(lifetime),
        }
    }

    fn mac(&self, secret: &[u8; 32]) -> Hmac<Sha256> {
        let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(b"config");
        mac.update(&self.device.bytes());
        mac.update(&self.expires.to_be_bytes());
        mac
    }

    /// Whether `signature` signs this grant (constant time) and it has not expired.
    pub fn verify(&self, secret: &[u8; 32], signature: &str, now: Timestamp) -> bool {
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        self.expires >= now.as_micros() / 1_000_000
            && self.mac(secret).verify_slice(&signature).is_ok()
    }

    /// The signed link: `base_url`, the device's configuration path, and
    /// `device=..&expires=..&signature=..`.
    pub fn link(&self, base_url: &str, secret: &[u8; 32]) -> String {
        format!(
            "{}{}?device={}&expires={}&signature={}",
            base_url.trim_end_matches('/'),
            config_path(self.device),
            self.device,
            self.expires,
            hex::encode(self.mac(secret).finalize().into_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_verifies_only_for_its_image_device_and_time() {
        let secret = [7u8; 32];
        let now = Timestamp::now();
        let grant = DownloadGrant {
            image: ImageId::new(),
            device: DeviceId::new(),
            expires: now.as_micros() / 1_000_000 + 60,
        };
        let signature = grant.sign(&secret);
        assert!(grant.verify(&secret, &signature, now));
        assert!(!grant.verify(&[8u8; 32], &signature, now));
        let other_device = DownloadGrant {
            device: DeviceId::new(),
            ..grant
        };
        assert!(!other_device.verify(&secret, &signature, now));
        let later = Timestamp::from_micros(now.as_micros() + 61_000_000);
        assert!(!grant.verify(&secret, &signature, later));
        assert!(!grant.verify(&secret, "zz", now));
    }

    #[test]
    fn a_config_link_verifies_only_for_its_device_and_time_and_is_no_image_grant() {
        let secret = [7u8; 32];
        let now = Timestamp::now();
        let device = DeviceId::new();
        let grant = ConfigGrant::expiring(device, now, Duration::from_secs(60));
        let link = grant.link("http://192.0.2.10:8000", &secret);
        let (path, query) = link.split_once('?').unwrap();
        assert_eq!(
            path,
            format!("http://192.0.2.10:8000{}", config_path(device))
        );
        let signature = query.rsplit_once("signature=").unwrap().1;
        assert!(grant.verify(&secret, signature, now));
        let other = ConfigGrant {
            device: DeviceId::new(),
            ..grant
        };
        assert!(!other.verify(&secret, signature, now));
        let later = Timestamp::from_micros(now.as_micros() + 61_000_000);
        assert!(!grant.verify(&secret, signature, later));
        let image = DownloadGrant {
            image: ImageId(device.0),
            device,
            expires: grant.expires,
        };
        assert!(!image.verify(&secret, signature, now));
    }

    #[test]
    fn a_link_names_the_image_path_and_carries_a_grant_that_verifies() {
        let secret = [7u8; 32];
        let now = Timestamp::now();
        let (build, image, device) = (BuildId::new(), ImageId::new(), DeviceId::new());
        let grant = DownloadGrant::expiring(image, device, now, Duration::from_secs(60));
        assert_eq!(
            grant,
            DownloadGrant::expiring(image, device, now, Duration::from_secs(60)),
            "the same phase gives the same link"
        );
        let link = grant.link("http://192.0.2.10:8000/", build, &secret);
        let (path, query) = link.split_once('?').unwrap();
        assert_eq!(
            path,
            format!("http://192.0.2.10:8000{}", image_path(build, image))
        );
        let signature = query.rsplit_once("signature=").unwrap().1;
        assert!(query.starts_with(&format!("device={device}&expires={}", grant.expires)));
        assert!(grant.verify(&secret, signature, now));
        let later = Timestamp::from_micros(now.as_micros() + 61_000_000);
        assert!(!grant.verify(&secret, signature, later));
    }
}
