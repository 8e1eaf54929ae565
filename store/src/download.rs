//! Short-lived download links for devices: the bridge puts a signed grant into the fetch URL
//! it sends a device, and the API lets the holder download that one image until the grant
//! expires, without an API token.
//!
//! The signature is HMAC-SHA256 over `image ‖ device ‖ expires` with a secret the store keeps
//! ([`DOWNLOAD_SECRET`]), so links survive restarts and cannot be forged or re-targeted.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{DeviceId, ImageId, Timestamp};

/// Name of the store secret signing download links.
pub const DOWNLOAD_SECRET: &str = "download-links";

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
}
