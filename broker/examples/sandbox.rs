//! A standalone broker with the anonymous sandbox on and one fixed device, for poking at the
//! front end with other MQTT clients (mosquitto_pub/sub, MQTT Explorer):
//!
//! ```text
//! cargo run -p fleetmq-broker --example sandbox -- 127.0.0.1:1883
//! mosquitto_sub -h 127.0.0.1 -t 'test/#' -v
//! mosquitto_pub -h 127.0.0.1 -t test/x -m hi
//! mosquitto_pub -h 127.0.0.1 -i 00000000-0000-4000-8000-000000000001 -u 00000000-0000-4000-8000-000000000001 -P secret -t fleetmq/v1/demo/00000000-0000-4000-8000-000000000001/up/telemetry -m '{}'
//! ```
//!
//! Stops on Ctrl-C.

use std::sync::Arc;

use fleetmq_broker::{AuthFuture, Authenticator, Broker, BrokerConfig, Login, Refusal};
use fleetmq_protocol::{OrgScope, Principal};
use tokio_util::sync::CancellationToken;

/// `00000000-0000-4000-8000-000000000001`/`secret` is a device of org `demo`; `admin`/`admin` a superuser.
struct DemoAuth;

impl Authenticator for DemoAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            match (login.username.as_deref(), login.password.as_deref()) {
                (Some("00000000-0000-4000-8000-000000000001"), Some(b"secret")) => {
                    Ok(Principal::Device {
                        org_slug: "demo".into(),
                        device_id: "00000000-0000-4000-8000-000000000001"
                            .parse()
                            .map_err(|_| Refusal::IdentifierRejected)?,
                    })
                }
                (Some("admin"), Some(b"admin")) => Ok(Principal::Operator {
                    orgs: OrgScope::All,
                }),
                _ => Err(Refusal::BadCredentials),
            }
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1883".into())
        .parse()?;
    let config = BrokerConfig {
        mqtt_addr: addr,
        anonymous_sandbox: true,
        ..BrokerConfig::default()
    };
    let broker = Broker::bind(config, Arc::new(DemoAuth)).await?;
    println!("listening on {}", broker.local_addr());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    broker.run(shutdown).await;
    Ok(())
}
