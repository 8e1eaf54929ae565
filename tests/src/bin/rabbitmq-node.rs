//! Runs RabbitMQ the way fleetmq's external-broker tests do ([`RabbitMq::start`]), for
//! scripts such as `bench/upgrade.sh`: MQTT on `127.0.0.1:<mqtt-port>`, logins and topic
//! rights asked of fleetmq's auth service at `<auth-base>`. Two ports start two nodes joined
//! in one cluster ([`RabbitMq::start_cluster`]). Prints `mqtt 127.0.0.1:<port>` per node once
//! they all accept MQTT connections, then runs until SIGTERM or SIGINT, and takes the nodes
//! down with it.
//!
//! `rabbitmq-node <mqtt-port>[,<mqtt-port>] <auth-base> [<auth-cache-ms>]`, the auth base being
//! `http://user:secret@host:port/broker-auth/rabbitmq`; with `<auth-cache-ms>`, the nodes
//! cache fleetmq's answers that long (`rabbitmq_auth_backend_cache`).

use std::time::Duration;

use fleetmq_tests::rabbitmq::RabbitMq;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: rabbitmq-node <mqtt-port>[,<mqtt-port>] <auth-base> [<auth-cache-ms>]";
    let (Some(ports), Some(auth_base), cache, None) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        anyhow::bail!(usage);
    };
    let auth_cache = cache
        .map(|ms| {
            ms.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| anyhow::anyhow!("auth cache {ms:?} ms: {e}; {usage}"))
        })
        .transpose()?;
    let ports = ports
        .split(',')
        .map(|p| {
            p.parse::<u16>()
                .map_err(|e| anyhow::anyhow!("mqtt port {p:?}: {e}"))
        })
        .collect::<anyhow::Result<Vec<u16>>>()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let nodes = match ports[..] {
        [port] => vec![RabbitMq::start(port, &auth_base, auth_cache).await?],
        [first, second] => RabbitMq::start_cluster([first, second], &auth_base, auth_cache)
            .await?
            .into(),
        _ => anyhow::bail!("one or two MQTT ports, not {}", ports.len()),
    };
    for node in &nodes {
        println!("mqtt {}", node.mqtt_addr);
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Dropping a node kills its process group.
    drop(nodes);
    Ok(())
}
