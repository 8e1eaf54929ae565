"""Checks fleetmq's embedded broker's MQTT 5 with a stock client, Eclipse paho-mqtt
(`protocol=MQTTv5`), beside MQTT 3.1.1 clients of the same library.

Run by tests/tests/broker/mqtt5.rs, one scenario per invocation; exits 0 when every check
holds, and prints what failed otherwise. Every wait is bounded; the only sleeps are where
time passing is what is checked (an expiry interval, a will delay).

    python3 mqtt5_check.py SCENARIO --port PORT [--device ID KEY TOPIC]... [--user NAME PASS]
"""

import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions
import paho_client
from paho_client import Client, check, fail, props, until


def options(qos=1, no_local=False, retain_as_published=False, retain_handling=0):
    return SubscribeOptions(
        qos=qos,
        noLocal=no_local,
        retainAsPublished=retain_as_published,
        retainHandling=retain_handling,
    )


def connack(args):
    """CONNACK tells a v5 client the broker's limits, its assigned id and keep-alive."""
    client = Client(args.port, "", keepalive=0)
    p = client.connack_properties
    check(getattr(p, "AssignedClientIdentifier", "").startswith("auto-"), "assigned client id")
    check(getattr(p, "ServerKeepAlive", None) == 3600, "server keep alive for keep-alive 0")
    check(getattr(p, "ReceiveMaximum", 0) >= 1, "receive maximum announced")
    check(getattr(p, "MaximumPacketSize", 0) > 1024 * 1024, "maximum packet size announced")
    check(getattr(p, "TopicAliasMaximum", None) == 10, "topic alias maximum announced")
    for name in (
        "RetainAvailable",
        "WildcardSubscriptionAvailable",
        "SubscriptionIdentifierAvailable",
        "SharedSubscriptionAvailable",
    ):
        check(getattr(p, name, None) == 1, f"{name} announced")
    client.close()
    plain = Client(args.port, "paho5-named", keepalive=30)
    p = plain.connack_properties
    check(not hasattr(p, "AssignedClientIdentifier"), "no id assigned when one was given")
    check(not hasattr(p, "ServerKeepAlive"), "the client's own keep-alive is kept")
    plain.close()
    # Enhanced authentication is not supported: 0x8C bad authentication method.
    scram = props(PacketTypes.CONNECT, AuthenticationMethod="SCRAM-SHA-1")
    Client(args.port, "paho5-scram", connect_properties=scram, expect=0x8C)
    # A device's key is checked as for MQTT 3.1.1: a wrong one gets 0x86.
    device_id, key, _ = args.device[0]
    Client(args.port, device_id, username=device_id, password="wrong", expect=0x86)


def reason_codes(args):
    """Refusals are reason codes: the connection goes on."""
    client = Client(args.port, "paho5-refused")
    device_topic = args.device[0][2]
    check(client.publish(device_topic, "{}", qos=1) == 0x87, "QoS 1 to a device topic: 0x87")
    # (QoS 2 refusals are checked with rumqttc: paho ignores a PUBREC's reason code.)
    not_utf8 = props(PacketTypes.PUBLISH, PayloadFormatIndicator=1)
    code = client.publish("a/b", b"\xff\xfe", qos=1, properties=not_utf8)
    check(code == 0x99, f"payload said UTF-8 and is not: {code:#x}")
    codes = client.subscribe([("ok/#", options(1)), ("fleetmq/#", options(1)), ("$SYS/#", options(1))])
    check(codes == [1, 0x87, 0x87], f"SUBACK codes {codes}")
    codes = client.unsubscribe(["ok/#", "never/subscribed"])
    check(codes == [0, 0x11], f"UNSUBACK codes {codes}")
    # Still connected, and what was refused was not routed.
    watcher = Client(args.port, "paho5-refused-watcher")
    watcher.subscribe([("a/#", options(1))])
    check(client.publish("a/ok", "fine", qos=1) == 0, "an allowed publish still works")
    check(watcher.next_message().topic == "a/ok", "only the allowed message was routed")
    client.close()


def mixed(args):
    """Properties travel v5 to v5; v3.1.1 and v5 clients talk through the broker."""
    v5 = Client(args.port, "paho5-mixed-v5")
    v3 = Client(args.port, "paho5-mixed-v3", version=mqtt.MQTTv311)
    check(v5.subscribe([("mix/#", options(1))]) == [1], "v5 subscribed")
    check(v3.subscribe([("mix/#", 1)]) == [1], "v3.1.1 subscribed")
    sent = props(
        PacketTypes.PUBLISH,
        UserProperty=[("trace", "abc"), ("trace", "def")],
        ContentType="application/json",
        ResponseTopic="mix/reply",
        CorrelationData=b"\x00\x01req",
        PayloadFormatIndicator=1,
        MessageExpiryInterval=600,
    )
    check(v5.publish("mix/from-v5", '{"a":1}', qos=1, properties=sent) == 0, "published")
    got = v5.next_message()
    p = got.properties
    check(got.topic == "mix/from-v5" and got.payload == b'{"a":1}', "v5 got the message")
    check(p.UserProperty == [("trace", "abc"), ("trace", "def")], f"user properties {p.UserProperty}")
    check(p.ContentType == "application/json", "content type")
    check(p.ResponseTopic == "mix/reply", "response topic")
    check(p.CorrelationData == b"\x00\x01req", "correlation data")
    check(p.PayloadFormatIndicator == 1, "payload format indicator")
    check(0 < p.MessageExpiryInterval <= 600, f"expiry left {p.MessageExpiryInterval}")
    got = v3.next_message()
    check((got.topic, got.payload) == ("mix/from-v5", b'{"a":1}'), "v3.1.1 got the v5 message")
    check(v3.publish("mix/from-v3", "old", qos=1) == 0, "v3.1.1 published")
    for client in (v5, v3):
        got = client.next_message()
        check((got.topic, got.payload) == ("mix/from-v3", b"old"), f"got {got.topic}")
    v5.close()
    v3.close()


def message_expiry(args):
    """A queued message past its expiry interval is dropped; one within it keeps the time left."""
    keeper = Client(args.port, "paho5-expiry", clean_start=True, session_expiry=300)
    check(keeper.subscribe([("exp/#", options(1))]) == [1], "subscribed")
    keeper.close()
    publisher = Client(args.port, "paho5-expiry-publisher")
    short = props(PacketTypes.PUBLISH, MessageExpiryInterval=1)
    long = props(PacketTypes.PUBLISH, MessageExpiryInterval=120)
    publisher.publish("exp/short", "gone", qos=1, properties=short)
    publisher.publish("exp/long", "kept", qos=1, properties=long)
    publisher.publish("exp/none", "kept too", qos=1)
    # What is checked is time passing: the short one's interval.
    time.sleep(1.5)
    keeper = Client(args.port, "paho5-expiry", clean_start=False, session_expiry=300)
    check(keeper.session_present, "session present")
    got = [keeper.next_message() for _ in range(2)]
    check([m.topic for m in got] == ["exp/long", "exp/none"], f"received {[m.topic for m in got]}")
    left = got[0].properties.MessageExpiryInterval
    check(0 < left < 120, f"expiry left {left} is less than 120")
    check(not hasattr(got[1].properties, "MessageExpiryInterval"), "no expiry on the other")
    keeper.close()


def session_expiry(args):
    """A session ends its expiry interval after its connection; clean start drops it."""
    short = Client(args.port, "paho5-brief", session_expiry=1)
    short.subscribe([("brief/#", options(1))])
    short.close()
    kept = Client(args.port, "paho5-kept", session_expiry=300)
    kept.subscribe([("kept/#", options(1))])
    kept.close()
    time.sleep(1.5)
    short = Client(args.port, "paho5-brief", clean_start=False, session_expiry=1)
    check(not short.session_present, "the 1 s session expired")
    short.close()
    kept = Client(args.port, "paho5-kept", clean_start=False, session_expiry=300)
    check(kept.session_present, "the 300 s session is kept")
    # DISCONNECT may shorten it to 0: the session ends with this connection.
    kept.close(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    kept = Client(args.port, "paho5-kept", clean_start=False, session_expiry=300)
    check(not kept.session_present, "ended at DISCONNECT with expiry 0")
    kept.close()
    fresh = Client(args.port, "paho5-kept", clean_start=True, session_expiry=300)
    check(not fresh.session_present, "clean start never resumes")
    fresh.close()


def will(args):
    """Will delay: published after the delay, not at all if the session comes back first;
    DISCONNECT 0x04 publishes it at once."""
    watcher = Client(args.port, "paho5-will-watcher")
    watcher.subscribe([("will/#", options(1))])
    delayed = (
        "will/delayed",
        "gone",
        props(
            PacketTypes.WILLMESSAGE,
            WillDelayInterval=1,
            UserProperty=[("why", "lost")],
            MessageExpiryInterval=60,
        ),
    )
    client = Client(args.port, "paho5-will", session_expiry=60, will=delayed)
    lost_at = time.monotonic()
    client.drop()
    got = watcher.next_message()
    waited = time.monotonic() - lost_at
    check(got.topic == "will/delayed", f"will received: {got.topic}")
    check(waited >= 0.9, f"the will waited its delay ({waited:.2f} s)")
    check(got.properties.UserProperty == [("why", "lost")], "the will's properties travel")
    left = got.properties.MessageExpiryInterval
    check(left == 60, f"the will's expiry counts from its publication, not the CONNECT: {left}")
    # Back before the delay: no will.
    again = ("will/cancelled", "gone", props(PacketTypes.WILLMESSAGE, WillDelayInterval=1))
    client = Client(args.port, "paho5-will-2", session_expiry=60, will=again)
    client.drop()
    client = Client(args.port, "paho5-will-2", clean_start=False, session_expiry=60)
    time.sleep(1.5)
    marker = Client(args.port, "paho5-will-marker")
    marker.publish("will/marker", "x")
    check(watcher.next_message().topic == "will/marker", "a cancelled will is not published")
    client.close()
    # DISCONNECT with reason 0x04: published at once, delay or not.
    asked = ("will/asked", "bye", props(PacketTypes.WILLMESSAGE, WillDelayInterval=0))
    client = Client(args.port, "paho5-will-3", will=asked)
    from paho.mqtt.reasoncodes import ReasonCode

    client.close(reason=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
    check(watcher.next_message().topic == "will/asked", "will on DISCONNECT 0x04")


def subscription_options(args):
    """No local, retain as published, retain handling and subscription identifiers."""
    me = Client(args.port, "paho5-options")
    other = Client(args.port, "paho5-options-other")
    me.subscribe([("nl/#", options(1, no_local=True))])
    me.publish("nl/mine", "x")
    other.publish("nl/theirs", "y")
    check(me.next_message().topic == "nl/theirs", "no local: own message not received")

    other.publish("ret/t", "kept", retain=True)
    handling2 = me.subscribe([("ret/#", options(1, retain_handling=2))])
    check(handling2 == [1], "subscribed with retain handling 2")
    other.publish("ret/live", "live")
    got = me.next_message()
    check(got.topic == "ret/live", f"retain handling 2 sends no retained message: {got.topic}")
    me.unsubscribe(["ret/#"])
    me.subscribe([("ret/t", options(1, retain_handling=1))])
    check(me.next_message().topic == "ret/t", "retain handling 1: sent on a new subscription")
    me.subscribe([("ret/t", options(1, retain_handling=1))])
    other.publish("ret/t", "kept again", retain=True)
    got = me.next_message()
    check(got.payload == b"kept again", "retain handling 1: not sent again on a re-subscription")
    check(got.retain is False, "live messages lose the retain flag by default")
    me.subscribe([("rap/#", options(1, retain_as_published=True))])
    other.publish("rap/x", "r", retain=True)
    got = me.next_message()
    check(got.topic == "rap/x" and got.retain is True, "retain as published keeps the flag")

    me.subscribe([("sid/#", options(1))], properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    me.subscribe([("sid/+", options(1))], properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=9))
    other.publish("sid/a", "x")
    got = me.next_message()
    ids = sorted(got.properties.SubscriptionIdentifier)
    check(got.topic == "sid/a" and ids == [7, 9], f"subscription identifiers {ids}")


def aliases(args):
    """Topic aliases both ways; an alias above the maximum ends the connection with 0x94."""
    watcher = Client(
        args.port,
        "paho5-alias-watcher",
        connect_properties=props(PacketTypes.CONNECT, TopicAliasMaximum=5),
    )
    watcher.subscribe([("alias/#", options(1))])
    sender = Client(args.port, "paho5-alias-sender")
    sender.publish("alias/x", "1", properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    sender.publish("", "2", properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    first, second = watcher.next_message(), watcher.next_message()
    # The broker's own alias towards the watcher: the topic once, then the alias alone.
    check(first.topic == "alias/x" and first.properties.TopicAlias == 1, "first with its topic")
    check(second.topic == "" and second.properties.TopicAlias == 1, "then by alias")
    check(second.payload == b"2", "the aliased message is the second one")
    sender.publish("alias/y", "3", qos=0, properties=props(PacketTypes.PUBLISH, TopicAlias=11))
    check(sender.disconnected() == 0x94, "alias above the maximum: DISCONNECT 0x94")


def flow(args):
    """Receive maximum and maximum packet size, both ways."""
    slow = Client(
        args.port,
        "paho5-slow",
        connect_properties=props(PacketTypes.CONNECT, ReceiveMaximum=1, MaximumPacketSize=200),
        manual_ack=True,
    )
    slow.subscribe([("flow/#", options(1))])
    sender = Client(args.port, "paho5-flow-sender")
    sender.publish("flow/big", "x" * 500)
    for n in range(3):
        sender.publish(f"flow/{n}", str(n))
    first = slow.next_message()
    check(first.topic == "flow/0", f"too large for the client is not sent: {first.topic}")
    slow.nothing_within(0.5)
    slow.client.ack(first.mid, first.qos)
    check(slow.next_message().topic == "flow/1", "the next one after the acknowledgement")
    big = Client(args.port, "paho5-big")
    big.publish("flow/huge", b"x" * (1024 * 1024 + 10), qos=0)
    check(big.disconnected() == 0x95, "a packet over the broker's maximum: DISCONNECT 0x95")


def takeover(args):
    """A session taken over is told so: DISCONNECT 0x8E."""
    first = Client(args.port, "paho5-same-id")
    Client(args.port, "paho5-same-id")
    check(first.disconnected() == 0x8E, "taken over: DISCONNECT 0x8E")


def shared(args):
    """A shared subscription group gets each message once, spread over its members."""
    members = [Client(args.port, f"paho5-shared-{n}") for n in range(2)]
    for member in members:
        check(member.subscribe([("$share/workers/jobs/#", options(1))]) == [1], "joined")
    sender = Client(args.port, "paho5-shared-sender")
    for n in range(4):
        sender.publish(f"jobs/{n}", str(n))
    got = {n: [] for n in range(2)}
    for n, member in enumerate(members):
        got[n].append(member.next_message().topic)
        got[n].append(member.next_message().topic)
    every = sorted(got[0] + got[1])
    check(every == [f"jobs/{n}" for n in range(4)], f"each once: {got}")
    for member in members:
        member.nothing_within(0.3)


def persist_before(args):
    """Phase 1: a v5 session (expiry 300 s) subscribes and leaves; messages with properties
    are queued for it."""
    keeper = Client(args.port, "paho5-keeper", session_expiry=300)
    codes = keeper.subscribe(
        [("keep5/#", options(2))],
        properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42),
    )
    check(codes == [2], f"granted {codes}")
    keeper.close()
    publisher = Client(args.port, "paho5-publisher")
    with_properties = props(
        PacketTypes.PUBLISH, UserProperty=[("k", "v")], ResponseTopic="keep5/reply", MessageExpiryInterval=300
    )
    publisher.publish("keep5/1", "one", qos=1, properties=with_properties)
    publisher.publish("keep5/2", "two", qos=2)
    publisher.close()


def persist_after(args):
    """Phase 2 (after a restart): the session is present with its messages and properties."""
    keeper = Client(args.port, "paho5-keeper", clean_start=False, session_expiry=300)
    check(keeper.session_present, "session present after the restart")
    first, second = keeper.next_message(), keeper.next_message()
    check((first.topic, first.payload, first.qos) == ("keep5/1", b"one", 1), f"first {first.topic}")
    check((second.topic, second.payload, second.qos) == ("keep5/2", b"two", 2), "second")
    p = first.properties
    check(p.UserProperty == [("k", "v")] and p.ResponseTopic == "keep5/reply", "properties kept")
    check(0 < p.MessageExpiryInterval <= 300, "expiry kept")
    check(p.SubscriptionIdentifier == [42], "subscription identifier kept")
    keeper.close()


SCENARIOS = {
    "connack": connack,
    "reason-codes": reason_codes,
    "mixed": mixed,
    "message-expiry": message_expiry,
    "session-expiry": session_expiry,
    "will": will,
    "options": subscription_options,
    "aliases": aliases,
    "flow": flow,
    "takeover": takeover,
    "shared": shared,
    "persist-before": persist_before,
    "persist-after": persist_after,
}



if __name__ == "__main__":
    paho_client.run(SCENARIOS)
