//! Simulated devices over MQTT-over-TLS to a real in-process broker (127.0.0.1:0): a device
//! with a client certificate logs in without its key, one without logs in with it, and one
//! whose certificate the authenticator refuses is told so.
//!
//! Certificates are issued in the test by a test CA (rcgen) and written where the
//! `fleetmq-sim` flags would point (`--mqtt-ca`, `--client-cert-dir`). The test
//! authenticator stands in for the store: it accepts the certificates in its table (leaf →
//! device id) and device keys `key-<id>`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetmq_broker::{
    AuthFuture, Authenticator, Broker, BrokerConfig, BrokerHandle, Login, Refusal, TlsIdentity,
    TlsListener,
};
use fleetmq_protocol::Principal;
use fleetmq_protocol::topic::{Topic, UpChannel};
use fleetmq_sim::run::TlsOptions;
use fleetmq_sim::{DeviceConfig, SimDevice, SimEvent, SimHandle};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Failure guard for anything awaited; never a sleep.
const WAIT: Duration = Duration::from_secs(10);
const ORG: &str = "acme";

fn key_of(id: &str) -> String {
    format!("key-{id}")
}

/// Certificates in the table (leaf DER → device id), or a device id with its key.
#[derive(Default)]
struct CertificateAuth {
    certificates: Mutex<HashMap<Vec<u8>, String>>,
    logins: Mutex<Vec<Login>>,
}

impl Authenticator for CertificateAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        self.logins.lock().unwrap().push(login.clone());
        let device_id = match (&login.username, login.client_certificates.first()) {
            (None, Some(leaf)) => self
                .certificates
                .lock()
                .unwrap()
                .get(leaf.as_ref())
                .cloned(),
            (Some(user), _) if login.password.as_deref() == Some(key_of(user).as_bytes()) => {
                Some(user.clone())
            }
            _ => None,
        };
        let answer = match device_id {
            Some(id) => id
                .parse()
                .map(|device_id| Principal::Device {
                    org_slug: ORG.into(),
                    device_id,
                })
                .map_err(|_| Refusal::BadCredentials),
            None if login.username.is_none() => Err(Refusal::NotAuthorized),
            None => Err(Refusal::BadCredentials),
        };
        Box::pin(async move { answer })
    }
}

struct TlsBroker {
    tls: SocketAddr,
    handle: BrokerHandle,
    auth: Arc<CertificateAuth>,
    server_pem: String,
    shutdown: CancellationToken,
}

impl TlsBroker {
    async fn start() -> TlsBroker {
        let server = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("server certificate");
        let server_pem = server.cert.pem();
        let identity = TlsIdentity::from_pem(
            server_pem.as_bytes(),
            server.signing_key.serialize_pem().as_bytes(),
        )
        .expect("server identity");
        let config = BrokerConfig {
            mqtt_addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some(TlsListener {
                addr: "127.0.0.1:0".parse().unwrap(),
                identity,
            }),
            ..BrokerConfig::default()
        };
        let auth = Arc::new(CertificateAuth::default());
        let broker = Broker::bind(config, Arc::clone(&auth) as Arc<dyn Authenticator>)
            .await
            .unwrap();
        let tls = broker.tls_addr().expect("TLS listener bound");
        let handle = broker.handle();
        let shutdown = CancellationToken::new();
        tokio::spawn(broker.run(shutdown.clone()));
        TlsBroker {
            tls,
            handle,
            auth,
            server_pem,
            shutdown,
        }
    }

    /// A device on the TLS listener with no timers (the test publishes on demand).
    fn device(&self, id: &str, key: &str) -> DeviceConfig {
        let mut config = DeviceConfig::new(self.tls, ORG, id, key);
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        config
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Issues a client certificate for `device_id` (its common name) from `ca` into `dir` as
/// `<device_id>.pem` / `<device_id>.key`; returns the certificate's DER.
fn issue_into(dir: &Path, ca: &CertifiedIssuer<'static, KeyPair>, device_id: &str) -> Vec<u8> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, device_id);
    let key = KeyPair::generate().expect("device key");
    let certificate = params.signed_by(&key, ca).expect("signed");
    std::fs::write(dir.join(format!("{device_id}.pem")), certificate.pem()).unwrap();
    std::fs::write(dir.join(format!("{device_id}.key")), key.serialize_pem()).unwrap();
    certificate.der().to_vec()
}

fn test_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

async fn connected(mut device: SimHandle) -> SimHandle {
    let event = timeout(WAIT, device.wait_for(|_| true))
        .await
        .expect("an event in time");
    assert_eq!(event, Some(SimEvent::Connected));
    device
}

#[tokio::test]
async fn a_device_with_a_client_certificate_connects_over_tls_without_its_key() {
    let broker = TlsBroker::start().await;
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("mqtt-cert.pem");
    std::fs::write(&ca_file, &broker.server_pem).unwrap();
    let certs = files.path().join("certs");
    std::fs::create_dir(&certs).unwrap();

    let acme = test_ca("acme devices");
    let with_cert = Uuid::new_v4().to_string();
    let leaf = issue_into(&certs, &acme, &with_cert);
    broker
        .auth
        .certificates
        .lock()
        .unwrap()
        .insert(leaf.clone(), with_cert.clone());
    let with_key = Uuid::new_v4().to_string();
    // Issued by another organization's CA: the authenticator does not know it.
    let foreign = Uuid::new_v4().to_string();
    issue_into(&certs, &test_ca("beta devices"), &foreign);

    // What `--mqtt-ca FILE --client-cert-dir DIR` gives a fleet of three.
    let options = TlsOptions {
        ca: ca_file,
        server_name: None,
        client_cert: None,
        client_cert_dir: Some(certs),
    };
    let ids = [with_cert.clone(), with_key.clone(), foreign.clone()];
    let mut tls = options.for_devices(broker.tls, &ids).unwrap().into_iter();
    let mut watch = broker
        .handle
        .link("watch", &["fleetmq/v1/acme/+/up/telemetry"])
        .await
        .unwrap();

    // A wrong key proves the certificate, not the key, logged the device in.
    let mut config = broker.device(&with_cert, "not-the-key");
    config.tls = tls.next();
    let device = connected(SimDevice::spawn(config)).await;
    device.publish_telemetry_now().await.unwrap();
    let telemetry = Topic::up(ORG, &with_cert, UpChannel::Telemetry).to_string();
    let seen = timeout(WAIT, watch.recv())
        .await
        .expect("telemetry in time")
        .unwrap();
    assert_eq!(seen.topic, telemetry);
    let login = broker.auth.logins.lock().unwrap().pop().expect("a login");
    assert_eq!((login.username, login.password), (None, None));
    assert_eq!(login.client_certificates[0].as_ref(), leaf.as_slice());

    // No certificate in the directory: the device logs in with its key, over TLS.
    let mut config = broker.device(&with_key, &key_of(&with_key));
    config.tls = tls.next();
    let keyed = connected(SimDevice::spawn(config)).await;
    let login = broker.auth.logins.lock().unwrap().pop().expect("a login");
    assert_eq!(login.username.as_deref(), Some(with_key.as_str()));
    assert!(login.client_certificates.is_empty());

    // A certificate the authenticator refuses: CONNACK 0x05, and the device says so.
    let mut config = broker.device(&foreign, &key_of(&foreign));
    config.tls = tls.next();
    let mut refused = SimDevice::spawn(config);
    let failed = timeout(WAIT, refused.wait_for(|_| true))
        .await
        .expect("an event in time");
    let Some(SimEvent::ConnectFailed { reason }) = failed else {
        panic!("expected a refusal, got {failed:?}");
    };
    assert!(reason.contains("CONNACK 0x05"), "{reason}");

    refused.stop().await;
    keyed.stop().await;
    device.stop().await;
}

#[test]
fn a_single_client_certificate_is_for_one_device_only() {
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("ca.pem");
    let server = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(&ca_file, server.cert.pem()).unwrap();
    let broker: SocketAddr = "127.0.0.1:8883".parse().unwrap();
    let id = Uuid::new_v4().to_string();
    issue_into(files.path(), &test_ca("acme devices"), &id);
    let options = TlsOptions {
        ca: ca_file,
        server_name: None,
        client_cert: Some((
            files.path().join(format!("{id}.pem")),
            files.path().join(format!("{id}.key")),
        )),
        client_cert_dir: None,
    };
    let one = options.for_devices(broker, std::slice::from_ref(&id));
    assert!(one.is_ok_and(|tls| tls.len() == 1 && tls[0].with_certificate_login()));
    let two = options.for_devices(broker, &[id.clone(), Uuid::new_v4().to_string()]);
    let error = two.expect_err("one certificate cannot log in two devices");
    assert!(error.to_string().contains("--client-cert-dir"), "{error}");
}
