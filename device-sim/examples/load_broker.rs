//! A bare fleetmq broker that admits the devices of a `fleetmq-sim` CSV, with a connection
//! cap of your choice: for measuring the simulator past the server's default cap (10,000)
//! and without the store in the loop.
//!
//! ```text
//! cargo run --release -p fleetmq-sim --example load_broker -- \
//!     --csv devices.csv --org load --addr 127.0.0.1:11884 --max-connections 20000
//! fleetmq-sim --org load --csv devices.csv --devices 19000 --mqtt 127.0.0.1:11884
//! ```
//!
//! Stops on Ctrl-C.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use fleetmq_broker::{AuthFuture, Authenticator, Broker, BrokerConfig, Login, Refusal};
use fleetmq_protocol::Principal;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// `id,key` CSV written by `fleetmq-sim --csv`.
    #[arg(long)]
    csv: PathBuf,
    /// Organization slug the devices belong to.
    #[arg(long)]
    org: String,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:11884")]
    addr: SocketAddr,
    /// Concurrent connections admitted.
    #[arg(long, default_value_t = 20_000)]
    max_connections: usize,
}

/// Device id to key, from the CSV.
struct CsvAuth {
    org: String,
    keys: HashMap<String, String>,
}

impl Authenticator for CsvAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            let user = login.username.ok_or(Refusal::BadCredentials)?;
            let password = login.password.unwrap_or_default();
            match self.keys.get(&user) {
                Some(key) if key.as_bytes() == password.as_slice() => Ok(Principal::Device {
                    org_slug: self.org.clone(),
                    device_id: user.parse().map_err(|_| Refusal::BadCredentials)?,
                }),
                _ => Err(Refusal::BadCredentials),
            }
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: could not raise the open files limit: {e}");
    }
    let keys = fleetmq_sim::registration::read_csv(&args.csv)?
        .into_iter()
        .map(|c| (c.id.to_string(), c.key))
        .collect();
    let config = BrokerConfig {
        mqtt_addr: args.addr,
        max_connections: args.max_connections,
        ..BrokerConfig::default()
    };
    let auth = CsvAuth {
        org: args.org,
        keys,
    };
    let broker = Broker::bind(config, Arc::new(auth)).await?;
    println!("MQTT on {}", broker.local_addr());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    broker.run(shutdown).await;
    Ok(())
}
