"""The paho-mqtt client the broker scripts share (broker_check.py for MQTT 3.1.1,
mqtt5_check.py for MQTT 5): callbacks feed queues, so that scenarios await events, and every
wait is bounded."""

import argparse
import queue
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10.0


def props(kind, **values):
    p = Properties(kind)
    for name, value in values.items():
        setattr(p, name, value)
    return p


class Client:
    """A connected paho client whose callbacks feed queues, so that tests await events."""

    def __init__(
        self,
        port,
        client_id,
        version=mqtt.MQTTv5,
        clean_start=True,
        session_expiry=None,
        username=None,
        password=None,
        keepalive=30,
        connect_properties=None,
        will=None,
        manual_ack=False,
        expect=0,
    ):
        self.version = version
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        self.connack = queue.Queue()
        self.disconnects = queue.Queue()
        kwargs = {"protocol": version, "manual_ack": manual_ack}
        if version != mqtt.MQTTv5:
            kwargs["clean_session"] = clean_start
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **kwargs)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            topic, payload, will_properties = will
            self.client.will_set(topic, payload, qos=1, properties=will_properties)
        self.client.on_connect = lambda c, u, flags, rc, p: self.connack.put((flags, rc, p))
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.acks.put(
            ("suback", mid, [int(code.value) for code in codes])
        )
        self.client.on_unsubscribe = lambda c, u, mid, codes, p: self.acks.put(
            ("unsuback", mid, [int(code.value) for code in codes])
        )
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.put(
            ("published", mid, int(rc.value))
        )
        self.client.on_disconnect = lambda c, u, flags, rc, p: self.disconnects.put(int(rc.value))
        if version == mqtt.MQTTv5:
            connect_properties = connect_properties or Properties(PacketTypes.CONNECT)
            if session_expiry is not None:
                connect_properties.SessionExpiryInterval = session_expiry
            self.client.connect(
                "127.0.0.1",
                port,
                keepalive=keepalive,
                clean_start=clean_start,
                properties=connect_properties,
            )
        else:
            self.client.connect("127.0.0.1", port, keepalive=keepalive)
        self.client.loop_start()
        flags, rc, properties = self.connack.get(timeout=WAIT)
        self.reason = int(rc.value)
        check(self.reason == expect, f"{client_id}: CONNACK {self.reason:#x}, expected {expect:#x}")
        self.session_present = flags.session_present
        self.connack_properties = properties

    def subscribe(self, filters, properties=None):
        result, mid = self.client.subscribe(filters, properties=properties)
        check(result == mqtt.MQTT_ERR_SUCCESS, f"SUBSCRIBE {filters} not sent")
        return self.wait_ack("suback", mid)

    def unsubscribe(self, filters):
        result, mid = self.client.unsubscribe(filters)
        check(result == mqtt.MQTT_ERR_SUCCESS, f"UNSUBSCRIBE {filters} not sent")
        return self.wait_ack("unsuback", mid)

    def publish(self, topic, payload, qos=1, retain=False, properties=None):
        """Publishes and returns the PUBACK/PUBREC reason code (0 for QoS 0)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos == 0:
            return 0
        return self.wait_ack("published", info.mid)

    def wait_ack(self, kind, mid):
        deadline = time.monotonic() + WAIT
        while True:
            try:
                got = self.acks.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                fail(f"no {kind} for {mid} in time")
            if got[0] == kind and got[1] == mid:
                return got[2]

    def next_message(self, wait=WAIT):
        try:
            return self.messages.get(timeout=wait)
        except queue.Empty:
            fail("no message in time")

    def nothing_within(self, seconds):
        try:
            message = self.messages.get(timeout=seconds)
        except queue.Empty:
            return
        fail(f"unexpected message on {message.topic}: {message.payload!r}")

    def disconnected(self):
        try:
            return self.disconnects.get(timeout=WAIT)
        except queue.Empty:
            fail("not disconnected in time")

    def close(self, properties=None, reason=None):
        if reason is not None:
            self.client.disconnect(reasoncode=reason, properties=properties)
        else:
            self.client.disconnect(properties=properties)
        self.client.loop_stop()

    def drop(self):
        """Closes the socket without DISCONNECT (the connection is lost)."""
        self.client.loop_stop()
        self.client._sock_close()


def check(condition, what):
    if not condition:
        fail(what)


def fail(what):
    print(f"FAILED: {what}", file=sys.stderr)
    sys.exit(1)


def until(client, topic):
    """Messages received up to and including the first on `topic`."""
    received = []
    while True:
        message = client.next_message()
        received.append(message)
        if message.topic == topic:
            return received


def run(scenarios):
    """Runs the scenario the command line names:
    SCENARIO --port PORT [--device ID KEY TOPIC]... [--user NAME PASS]."""
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=scenarios)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", nargs=3, action="append", default=[])
    parser.add_argument("--user", nargs=2)
    args = parser.parse_args()
    scenarios[args.scenario](args)
    print(f"{args.scenario}: ok")
