//! Runs one RabbitMQ node the way fleetmq's external-broker tests do ([`RabbitMq::start`]),
//! for scripts such as `bench/upgrade.sh`: MQTT on `127.0.0.1:<mqtt-port>`, logins and topic
//! rights asked of fleetmq's auth service at `<auth-base>`. Prints `mqtt 127.0.0.1:<port>` once
//! the node accepts MQTT connections, then runs until SIGTERM or SIGINT, and takes the node
//! down with it.
//!
//! `rabbitmq-node <mqtt-port> <auth-base>`, the auth base being
//! `http://user:secret@host:port/broker-auth/rabbitmq`.

use fleetmq_tests::rabbitmq::RabbitMq;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(auth_base), None) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: rabbitmq-node <mqtt-port> <auth-base>");
    };
    let port: u16 = port
        .parse()
        .map_err(|e| anyhow::anyhow!("mqtt port {port:?}: {e}"))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let node = RabbitMq::start(port, &auth_base).await?;
    println!("mqtt {}", node.mqtt_addr);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Dropping the node kills its process group.
    drop(node);
    Ok(())
}
