//! Device login with a client certificate on the TLS listener (and on the secure WebSocket
//! listener, which shares its certificate request): real rumqttc clients over TLS to a broker
//! on 127.0.0.1:0, certificates issued in the test by a test CA (rcgen).
//!
//! The test authenticator stands in for the store: it accepts a certificate it issued to a
//! device (common name = the device id) while that certificate is in its table, and refuses
//! any other with `NotAuthorized`, as the server's authenticator refuses a revoked, expired
//! or foreign certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetmq_broker::{
    Affected, AuthFuture, Authenticator, Broker, BrokerConfig, BrokerHandle, Login, Refusal,
    TlsIdentity, TlsListener,
};
use fleetmq_protocol::topic::{Topic, UpChannel};
use fleetmq_protocol::{OrgScope, Principal};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::time::timeout;
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion, version};
use tokio_util::sync::CancellationToken;

/// Failure guard for anything awaited; never a sleep.
const WAIT: Duration = Duration::from_secs(10);

const DEV_A1: &str = "00000000-0000-4000-8000-0000000000a1";
const DEV_A2: &str = "00000000-0000-4000-8000-0000000000a2";

/// Both TLS versions: each checks the client's handshake signature in its own way.
const VERSIONS: [&SupportedProtocolVersion; 2] = [&version::TLS13, &version::TLS12];

/// Accepts a certificate in its table (leaf DER → device id of `acme`) with no username,
/// device `…a2` by password, and operator `op-acme`. Keeps every login it was asked about.
#[derive(Default)]
struct CertificateAuth {
    certificates: Mutex<HashMap<Vec<u8>, &'static str>>,
    logins: Mutex<Vec<Login>>,
}

impl CertificateAuth {
    fn admit(&self, certificate: &CertificateDer<'_>, device_id: &'static str) {
        self.certificates
            .lock()
            .unwrap()
            .insert(certificate.to_vec(), device_id);
    }

    fn revoke(&self, certificate: &CertificateDer<'_>) {
        self.certificates
            .lock()
            .unwrap()
            .remove(certificate.as_ref());
    }

    fn logins(&self) -> Vec<Login> {
        self.logins.lock().unwrap().clone()
    }
}

fn device(id: &str) -> Principal {
    Principal::Device {
        org_slug: "acme".into(),
        device_id: id.parse().expect("a device id"),
    }
}

impl Authenticator for CertificateAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        self.logins.lock().unwrap().push(login.clone());
        let answer = match (
            login.username.as_deref(),
            login.password.as_deref(),
            login.client_certificates.first(),
        ) {
            (None, None, Some(leaf)) => {
                match self.certificates.lock().unwrap().get(leaf.as_ref()) {
                    Some(id) => Ok(device(id)),
                    None => Err(Refusal::NotAuthorized),
                }
            }
            (Some(DEV_A2), Some(b"pw-a2"), _) => Ok(device(DEV_A2)),
            (Some("op-acme"), Some(b"pw-op"), _) => Ok(Principal::Operator {
                orgs: OrgScope::Managed(vec!["acme".into()]),
            }),
            _ => Err(Refusal::BadCredentials),
        };
        Box::pin(async move { answer })
    }
}

/// A certificate authority of the test, issuing device certificates.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// A client certificate for `device_id` (its common name) and its key.
    fn issue(&self, device_id: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, device_id);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("device key");
        let certificate = params.signed_by(&key, &self.issuer).expect("signed");
        (
            certificate.der().clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    }
}

struct CertBroker {
    plain: SocketAddr,
    tls: SocketAddr,
    wss: SocketAddr,
    server_certificate: CertificateDer<'static>,
    auth: Arc<CertificateAuth>,
    handle: BrokerHandle,
    shutdown: CancellationToken,
}

impl CertBroker {
    async fn start() -> CertBroker {
        let server = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("server certificate");
        let identity = TlsIdentity::from_pem(
            server.cert.pem().as_bytes(),
            server.signing_key.serialize_pem().as_bytes(),
        )
        .expect("server identity");
        let config = BrokerConfig {
            mqtt_addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some(TlsListener {
                addr: "127.0.0.1:0".parse().unwrap(),
                identity,
            }),
            wss_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..BrokerConfig::default()
        };
        let auth = Arc::new(CertificateAuth::default());
        let broker = Broker::bind(config, Arc::clone(&auth) as Arc<dyn Authenticator>)
            .await
            .unwrap();
        let plain = broker.local_addr();
        let tls = broker.tls_addr().expect("TLS listener bound");
        let wss = broker.wss_addr().expect("secure WebSocket listener bound");
        let handle = broker.handle();
        let shutdown = CancellationToken::new();
        tokio::spawn(broker.run(shutdown.clone()));
        CertBroker {
            plain,
            tls,
            wss,
            server_certificate: server.cert.der().clone(),
            auth,
            handle,
            shutdown,
        }
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(aws_lc_rs::default_provider())
    }

    fn trusting_server(
        &self,
        tls_version: &'static SupportedProtocolVersion,
    ) -> tokio_rustls::rustls::ConfigBuilder<
        ClientConfig,
        tokio_rustls::rustls::client::WantsClientCert,
    > {
        let mut roots = RootCertStore::empty();
        roots.add(self.server_certificate.clone()).unwrap();
        ClientConfig::builder_with_provider(CertBroker::provider())
            .with_protocol_versions(&[tls_version])
            .unwrap()
            .with_root_certificates(roots)
    }

    /// MQTT over TLS presenting `certificate`, no username or password.
    fn with_certificate(
        &self,
        client_id: &str,
        certificate: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        tls_version: &'static SupportedProtocolVersion,
    ) -> MqttOptions {
        let config = self
            .trusting_server(tls_version)
            .with_client_auth_cert(vec![certificate], key)
            .expect("certificate and key match");
        self.tls_options(client_id, config)
    }

    fn tls_options(&self, client_id: &str, config: ClientConfig) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", self.tls.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
        options
    }

    /// MQTT over secure WebSocket (`wss://127.0.0.1:PORT/mqtt`) with the TLS `config`.
    fn wss_options(&self, client_id: &str, config: ClientConfig) -> MqttOptions {
        let url = format!("wss://127.0.0.1:{}/mqtt", self.wss.port());
        let mut options = MqttOptions::new(client_id, url, self.wss.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(Transport::wss_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
        options
    }

    /// An operator on plain TCP watching everything of `acme`.
    async fn operator(&self) -> (AsyncClient, EventLoop) {
        let mut options = MqttOptions::new("console", "127.0.0.1", self.plain.port());
        options.set_credentials("op-acme", "pw-op");
        let (operator, mut events) = connect(options).await.expect("operator connects");
        operator
            .subscribe("fleetmq/v1/acme/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        assert!(matches!(
            next_incoming(&mut events).await,
            Packet::SubAck(_)
        ));
        (operator, events)
    }

    fn stop(self) {
        self.shutdown.cancel();
    }
}

/// Connects and waits for CONNACK (or the refusal, or a failed handshake).
async fn connect(options: MqttOptions) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    loop {
        let event = timeout(WAIT, eventloop.poll())
            .await
            .expect("CONNACK or an error in time")?;
        if let Event::Incoming(Packet::ConnAck(_)) = event {
            return Ok((client, eventloop));
        }
    }
}

async fn next_incoming(eventloop: &mut EventLoop) -> Packet {
    loop {
        let event = timeout(WAIT, eventloop.poll())
            .await
            .expect("event in time")
            .expect("connection alive");
        if let Event::Incoming(packet) = event {
            return packet;
        }
    }
}

fn telemetry(device_id: &str) -> String {
    Topic::up("acme", device_id, UpChannel::Telemetry).to_string()
}

#[tokio::test]
async fn a_device_certificate_logs_the_device_in_without_a_username_and_it_publishes() {
    let broker = CertBroker::start().await;
    let ca = TestCa::new("acme devices");
    let (_operator, mut watching) = broker.operator().await;
    for tls_version in VERSIONS {
        let (certificate, key) = ca.issue(DEV_A1);
        broker.auth.admit(&certificate, DEV_A1);

        let options = broker.with_certificate(DEV_A1, certificate.clone(), key, tls_version);
        let (device, mut device_loop) = connect(options).await.expect("certificate login");
        let payload = format!("{{\"over\":\"{tls_version:?}\"}}");
        device
            .publish(telemetry(DEV_A1), QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        assert!(matches!(
            next_incoming(&mut device_loop).await,
            Packet::PubAck(_)
        ));
        let Packet::Publish(seen) = next_incoming(&mut watching).await else {
            panic!("the operator sees the device's telemetry");
        };
        assert_eq!(seen.topic, telemetry(DEV_A1));
        assert_eq!(seen.payload, payload.as_bytes());

        // The authenticator saw the chain, and no username or password.
        let login = broker.auth.logins().pop().expect("a login");
        assert_eq!(login.username, None);
        assert_eq!(login.password, None);
        assert_eq!(login.client_certificates, vec![certificate]);
        device.disconnect().await.unwrap();
    }
    broker.stop();
}

#[tokio::test]
async fn a_certificate_the_authenticator_refuses_gets_connack_not_authorized() {
    let broker = CertBroker::start().await;
    let acme = TestCa::new("acme devices");
    let beta = TestCa::new("beta devices");
    let (known, _) = acme.issue(DEV_A1);
    broker.auth.admit(&known, DEV_A1);

    // Another organization's CA issued this one; the authenticator does not know it.
    let (foreign, key) = beta.issue(DEV_A1);
    let refused = connect(broker.with_certificate(DEV_A1, foreign, key, &version::TLS13))
        .await
        .map(|_| "connected");
    assert!(
        matches!(
            refused,
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized
            ))
        ),
        "{refused:?}"
    );
    broker.stop();
}

#[tokio::test]
async fn a_device_certificate_logs_the_device_in_over_secure_websocket_as_over_tls() {
    let broker = CertBroker::start().await;
    let ca = TestCa::new("acme devices");
    let (_operator, mut watching) = broker.operator().await;
    let (certificate, key) = ca.issue(DEV_A1);
    broker.auth.admit(&certificate, DEV_A1);

    let config = broker
        .trusting_server(&version::TLS13)
        .with_client_auth_cert(vec![certificate.clone()], key)
        .expect("certificate and key match");
    let (device, mut device_loop) = connect(broker.wss_options(DEV_A1, config))
        .await
        .expect("certificate login over wss");
    device
        .publish(
            telemetry(DEV_A1),
            QoS::AtLeastOnce,
            false,
            "{\"over\":\"wss\"}",
        )
        .await
        .unwrap();
    assert!(matches!(
        next_incoming(&mut device_loop).await,
        Packet::PubAck(_)
    ));
    let Packet::Publish(seen) = next_incoming(&mut watching).await else {
        panic!("the operator sees the device's telemetry");
    };
    assert_eq!(seen.topic, telemetry(DEV_A1));
    assert_eq!(seen.payload, b"{\"over\":\"wss\"}".as_slice());

    // The authenticator saw the chain, and no username or password.
    let login = broker.auth.logins().pop().expect("a login");
    assert_eq!(login.username, None);
    assert_eq!(login.password, None);
    assert_eq!(login.client_certificates, vec![certificate]);
    broker.stop();
}

#[tokio::test]
async fn a_client_without_a_certificate_still_logs_in_with_its_password_over_tls() {
    let broker = CertBroker::start().await;
    let config = broker
        .trusting_server(&version::TLS13)
        .with_no_client_auth();
    let mut options = broker.tls_options(DEV_A2, config);
    options.set_credentials(DEV_A2, "pw-a2");
    let (device, mut device_loop) = connect(options).await.expect("password login over TLS");
    device
        .publish(telemetry(DEV_A2), QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    assert!(matches!(
        next_incoming(&mut device_loop).await,
        Packet::PubAck(_)
    ));
    let login = broker.auth.logins().pop().expect("a login");
    assert!(login.client_certificates.is_empty());

    let mut wrong = broker.tls_options(
        DEV_A2,
        broker
            .trusting_server(&version::TLS13)
            .with_no_client_auth(),
    );
    wrong.set_credentials(DEV_A2, "wrong");
    assert!(matches!(
        connect(wrong).await,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
        ))
    ));
    broker.stop();
}

#[tokio::test]
async fn revoking_a_certificate_disconnects_the_live_session_it_logged_in() {
    let broker = CertBroker::start().await;
    let ca = TestCa::new("acme devices");
    let (certificate, key) = ca.issue(DEV_A1);
    broker.auth.admit(&certificate, DEV_A1);
    let options = broker.with_certificate(DEV_A1, certificate.clone(), key, &version::TLS13);
    let (_device, mut device_loop) = connect(options).await.expect("certificate login");
    let affected = || Affected::Device(DEV_A1.parse().expect("a device id"));

    // Judged again with the chain it logged in with: still valid, so kept.
    assert_eq!(broker.handle.reauthorize(affected()).await, 0);

    broker.auth.revoke(&certificate);
    assert_eq!(broker.handle.reauthorize(affected()).await, 1);
    let ended = timeout(WAIT, async {
        loop {
            if let Err(e) = device_loop.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("the broker ends the session in time");
    assert!(
        !matches!(ended, ConnectionError::ConnectionRefused(_)),
        "{ended:?}"
    );
    let last = broker.auth.logins().pop().expect("the re-judgement");
    assert_eq!(last.client_certificates, vec![certificate]);
    broker.stop();
}

#[tokio::test]
async fn a_certificate_presented_without_its_key_fails_the_handshake() {
    let broker = CertBroker::start().await;
    let ca = TestCa::new("acme devices");
    let (certificate, _) = ca.issue(DEV_A1);
    broker.auth.admit(&certificate, DEV_A1);
    // Someone who copied the certificate (it is public) but signs with a key of their own.
    let (_, other_key) = ca.issue(DEV_A2);
    let provider = CertBroker::provider();
    let signing_key = provider
        .key_provider
        .load_private_key(other_key)
        .expect("a usable key");
    for tls_version in VERSIONS {
        let mismatched = CertifiedKey::new(vec![certificate.clone()], Arc::clone(&signing_key));
        let config = broker
            .trusting_server(tls_version)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(mismatched)));
        let result = connect(broker.tls_options(DEV_A1, config))
            .await
            .map(|_| "connected");
        // No CONNACK at all: the TLS 1.2 handshake fails, and a TLS 1.3 client learns of
        // the server's alert only once it has sent CONNECT.
        assert!(
            matches!(&result, Err(e) if !matches!(e, ConnectionError::ConnectionRefused(_))),
            "{tls_version:?}: {result:?}"
        );
    }
    assert!(
        broker.auth.logins().is_empty(),
        "the authenticator never hears of a certificate whose key was not proven"
    );
    broker.stop();
}
