"""Checks fleetmq's embedded broker with a stock client, Eclipse paho-mqtt (MQTT 3.1.1).

Run by tests/tests/broker/paho.rs, one scenario per invocation; exits 0 when every check
holds, and prints what failed otherwise. Every wait is bounded.

    python3 broker_check.py SCENARIO --port PORT [--device ID KEY TOPIC]... [--user NAME PASS]
"""


import paho.mqtt.client as mqtt
import paho_client
from paho_client import check, until


def Client(port, client_id, clean=True, username=None, password=None):
    """An MQTT 3.1.1 client of the shared kind (see paho_client.py)."""
    return paho_client.Client(
        port,
        client_id,
        version=mqtt.MQTTv311,
        clean_start=clean,
        username=username,
        password=password,
    )


def sandbox(args):
    """A wildcard sandbox subscriber gets sandbox topics once and nothing of the fleet."""
    watcher = Client(args.port, "paho-watcher")
    codes = watcher.subscribe([("#", 1), ("+/+", 1), ("$SYS/#", 1)])
    check(codes == [1, 1, 128], f"SUBACK codes {codes}, expected [1, 1, 128]")
    for index, (device_id, key, topic) in enumerate(args.device):
        device = Client(args.port, device_id, username=device_id, password=key)
        device.publish(topic, "{}")
        device.close()
    talker = Client(args.port, "paho-talker")
    for topic in ["a/b", "x", "done"]:
        talker.publish(topic, topic)
    topics = [m.topic for m in until(watcher, "done")]
    check(topics == ["a/b", "x", "done"], f"sandbox received {topics}")


def operator(args):
    """An operator's wildcard delivers its own organizations' devices only."""
    name, password = args.user
    watcher = Client(args.port, "paho-operator", username=name, password=password)
    codes = watcher.subscribe([("fleetmq/v1/+/+/up/telemetry", 1)])
    check(codes == [1], f"SUBACK codes {codes}")
    devices = [Client(args.port, d, username=d, password=k) for d, k, _ in args.device]
    own_topic = args.device[0][2]
    for _ in range(2):
        # The other organization's device first, then the operator's own.
        for client, (_, _, topic) in reversed(list(zip(devices, args.device))):
            client.publish(topic, "{}")
        message = watcher.next_message()
        check(message.topic == own_topic, f"operator received {message.topic}")


def qos(args):
    """A message is forwarded at min(publish QoS, granted QoS)."""
    subscribers = {granted: Client(args.port, f"paho-at{granted}") for granted in (0, 1, 2)}
    for granted, client in subscribers.items():
        check(client.subscribe([("q/#", granted)]) == [granted], "granted as asked")
    publisher = Client(args.port, "paho-qos-publisher")
    for published in (0, 1, 2):
        publisher.publish(f"q/{published}", "x", qos=published)
    for granted, client in subscribers.items():
        for published in (0, 1, 2):
            message = client.next_message()
            check(message.topic == f"q/{published}", f"order: {message.topic}")
            check(
                message.qos == min(published, granted),
                f"published {published}, granted {granted}: delivered at {message.qos}",
            )


def persist_before(args):
    """Phase 1: a persistent session subscribes and leaves; QoS 1 and 2 are published."""
    keeper = Client(args.port, "paho-keeper", clean=False)
    check(keeper.subscribe([("keep/#", 2)]) == [2], "keep/# granted at QoS 2")
    keeper.close()
    publisher = Client(args.port, "paho-publisher")
    publisher.publish("keep/1", "one", qos=1)
    publisher.publish("keep/2", "two", qos=2)
    publisher.close()


def persist_after(args):
    """Phase 2 (after a restart): the session is present and gets both messages."""
    keeper = Client(args.port, "paho-keeper", clean=False)
    check(keeper.session_present, "session present after the restart")
    got = [(m.topic, m.qos, m.payload) for m in (keeper.next_message(), keeper.next_message())]
    expected = [("keep/1", 1, b"one"), ("keep/2", 2, b"two")]
    check(got == expected, f"received {got}")
    keeper.close()


SCENARIOS = {
    "sandbox": sandbox,
    "operator": operator,
    "qos": qos,
    "persist-before": persist_before,
    "persist-after": persist_after,
}



if __name__ == "__main__":
    paho_client.run(SCENARIOS)
