//! Getting device credentials: registration through fleetmq's (OpenWISP-compatible) REST API,
//! and the `id,key` CSV that lets later runs skip it.

use std::path::Path;

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::SimError;

/// The credentials a device connects with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Device id (client id and user name).
    pub id: Uuid,
    /// Device key (password).
    pub key: String,
}

/// A REST client with a bearer token, for the few calls registration needs.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Page<T> {
    next: Option<String>,
    results: Vec<T>,
}

#[derive(Deserialize)]
struct Organization {
    id: Uuid,
    slug: String,
}

#[derive(Deserialize)]
struct Device {
    id: Uuid,
    name: String,
    key: String,
}

impl ApiClient {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:8000`) using `token`.
    pub fn new(base: &str, token: &str) -> ApiClient {
        ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, SimError> {
        let response = self.http.get(url).bearer_auth(&self.token).send().await?;
        decode("GET", url, response).await
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`, decoding the JSON answer.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, SimError> {
        self.get(&self.url(path)).await
    }

    /// `POST path` with a JSON body, decoding the JSON answer.
    pub(crate) async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, SimError> {
        let url = self.url(path);
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        decode("POST", &url, response).await
    }

    /// `POST path` with a multipart form, decoding the JSON answer.
    pub(crate) async fn post_multipart<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> Result<T, SimError> {
        let url = self.url(path);
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await?;
        decode("POST", &url, response).await
    }

    /// Walks a paginated list, following `next` links.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        first: String,
    ) -> Result<Vec<T>, SimError> {
        let mut items = Vec::new();
        let mut url = Some(first);
        while let Some(current) = url {
            let page: Page<T> = self.get(&current).await?;
            items.extend(page.results);
            url = page.next;
        }
        Ok(items)
    }

    /// The id of the organization with `slug` (OpenWISP's list has no slug filter, so this
    /// pages through the organizations the token can see).
    pub async fn organization_id(&self, slug: &str) -> Result<Uuid, SimError> {
        let orgs: Vec<Organization> = self
            .list(format!(
                "{}/api/v1/users/organization/?page_size=100",
                self.base
            ))
            .await?;
        orgs.into_iter()
            .find(|o| o.slug == slug)
            .map(|o| o.id)
            .ok_or_else(|| SimError::OrganizationNotFound(slug.to_owned()))
    }

    /// Devices of the organization whose name starts with `prefix` (to reuse earlier runs'
    /// simulated devices).
    pub async fn devices_named(
        &self,
        org_slug: &str,
        prefix: &str,
    ) -> Result<Vec<Credentials>, SimError> {
        let devices: Vec<Device> = self
            .list(format!(
                "{}/api/v1/controller/device/?organization_slug={org_slug}&page_size=100",
                self.base
            ))
            .await?;
        Ok(devices
            .into_iter()
            .filter(|d| d.name.starts_with(prefix))
            .map(|d| Credentials {
                id: d.id,
                key: d.key,
            })
            .collect())
    }

    /// Registers one device and returns its generated credentials.
    pub async fn create_device(
        &self,
        organization: Uuid,
        name: &str,
        mac_address: &str,
        model: &str,
    ) -> Result<Credentials, SimError> {
        let url = format!("{}/api/v1/controller/device/", self.base);
        let body = json!({
            "name": name,
            "organization": organization,
            "mac_address": mac_address,
            "model": model,
            "os": "OpenWrt 23.05.3",
            "system": "fleetmq-sim",
        });
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let device: Device = decode("POST", &url, response).await?;
        Ok(Credentials {
            id: device.id,
            key: device.key,
        })
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    method: &'static str,
    url: &str,
    response: reqwest::Response,
) -> Result<T, SimError> {
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(SimError::Api {
            method,
            url: url.to_owned(),
            status: status.as_u16(),
            body,
        });
    }
    Ok(response.json().await?)
}

/// The name of the `index`-th device of run `run`: `sim-{run}-{index}`, a valid hostname.
pub fn device_name(run: &str, index: usize) -> String {
    format!("sim-{run}-{index}")
}

/// A locally administered unicast MAC (`02:…`) unique per `(run_tag, index)` for up to
/// 16 million devices per run.
pub fn device_mac(run_tag: u16, index: usize) -> String {
    let [r1, r0] = run_tag.to_be_bytes();
    let [_, i2, i1, i0] = u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes();
    format!("02:{r1:02X}:{r0:02X}:{i2:02X}:{i1:02X}:{i0:02X}")
}

/// Reads an `id,key` CSV (a header line `id,key` is allowed; blank lines are skipped).
pub fn read_csv(path: &Path) -> Result<Vec<Credentials>, SimError> {
    let text = std::fs::read_to_string(path)?;
    parse_csv(&text, &path.display().to_string())
}

fn parse_csv(text: &str, path: &str) -> Result<Vec<Credentials>, SimError> {
    let mut devices = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.eq_ignore_ascii_case("id,key")) {
            continue;
        }
        let error = |reason: String| SimError::Csv {
            path: path.to_owned(),
            line: i + 1,
            reason,
        };
        let (id, key) = line
            .split_once(',')
            .ok_or_else(|| error("expected `id,key`".to_owned()))?;
        let id = Uuid::parse_str(id.trim()).map_err(|e| error(format!("bad device id: {e}")))?;
        let key = key.trim();
        if key.is_empty() || key.contains(',') {
            return Err(error("the key must be one non-empty field".to_owned()));
        }
        devices.push(Credentials {
            id,
            key: key.to_owned(),
        });
    }
    Ok(devices)
}

/// Writes an `id,key` CSV with a header, readable by [`read_csv`].
pub fn write_csv(path: &Path, devices: &[Credentials]) -> Result<(), SimError> {
    let mut text = String::from("id,key\n");
    for d in devices {
        text.push_str(&format!("{},{}\n", d.id, d.key));
    }
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_and_tolerates_header_and_blank_lines() {
        let devices = vec![
            Credentials {
                id: Uuid::new_v4(),
                key: "abc123".into(),
            },
            Credentials {
                id: Uuid::new_v4(),
                key: "def456".into(),
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.csv");
        write_csv(&path, &devices).unwrap();
        assert_eq!(read_csv(&path).unwrap(), devices);
        let id = devices[0].id;
        let parsed = parse_csv(&format!("\n{id} , k1 \n\n"), "x").unwrap();
        assert_eq!(parsed[0].key, "k1");
    }

    #[test]
    fn bad_csv_lines_name_file_and_line() {
        let err = parse_csv("id,key\nnot-a-uuid,k\n", "devices.csv").unwrap_err();
        assert!(
            err.to_string().starts_with("devices.csv:2: bad device id"),
            "{err}"
        );
        let err = parse_csv(&format!("{}\n", Uuid::new_v4()), "d.csv").unwrap_err();
        assert!(err.to_string().contains("expected `id,key`"), "{err}");
        let err = parse_csv(&format!("{},\n", Uuid::new_v4()), "d.csv").unwrap_err();
        assert!(err.to_string().contains("non-empty"), "{err}");
    }

    #[test]
    fn names_and_macs_are_unique_per_run_and_index() {
        assert_eq!(device_name("ab12", 7), "sim-ab12-7");
        assert_eq!(device_mac(0xAB12, 0x010203), "02:AB:12:01:02:03");
        assert_ne!(device_mac(1, 1), device_mac(1, 2));
        assert_ne!(device_mac(1, 1), device_mac(2, 1));
    }
}
