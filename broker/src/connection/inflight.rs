//! Client-to-broker packet ids in flight: what makes a resent QoS 1/2 PUBLISH a resend
//! rather than a new message.
//!
//! A QoS 2 PUBLISH is exactly once from its first arrival until the client's PUBREL (MQTT
//! 3.1.1 §4.3.3): a copy re-sent with DUP in between must not reach the uplink (the bridge
//! would store the sample twice) nor the router (whose QoS 2 state is a FIFO that pairs each
//! PUBREL with the oldest recorded PUBLISH, whatever its packet id). A QoS 1 PUBLISH whose
//! packet id is still unacknowledged is likewise a resend: the PUBACK already on its way
//! answers both.

use std::collections::{HashMap, HashSet};

/// What to do with an incoming PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// A new message: deliver and route it.
    New,
    /// A resend whose acknowledgement is still to come from the router: drop it.
    Resend,
    /// A QoS 2 resend whose PUBREC was already written: drop it and write PUBREC again.
    ResendAnswerPubRec,
    /// More QoS 2 messages awaiting PUBREL than allowed: close the connection.
    TooManyAwaitingRelease,
}

/// Packet ids the client used and the broker has not finished with, per connection.
pub(super) struct ClientInflight {
    /// QoS 1: routed, PUBACK not yet written.
    unacknowledged: HashSet<u16>,
    /// QoS 2: taken, PUBREL not yet received; `true` once the PUBREC was written.
    awaiting_release: HashMap<u16, bool>,
    max_awaiting_release: usize,
}

impl ClientInflight {
    /// At most `max_awaiting_release` QoS 2 messages may wait for their PUBREL.
    pub(super) fn new(max_awaiting_release: usize) -> ClientInflight {
        ClientInflight {
            unacknowledged: HashSet::new(),
            awaiting_release: HashMap::new(),
            max_awaiting_release,
        }
    }

    /// Classifies a PUBLISH (QoS as its number) and records a new QoS 1/2 one.
    pub(super) fn arrive(&mut self, qos: u8, pkid: u16) -> Arrival {
        match qos {
            1 if !self.unacknowledged.insert(pkid) => Arrival::Resend,
            2 => match self.awaiting_release.get(&pkid) {
                Some(true) => Arrival::ResendAnswerPubRec,
                Some(false) => Arrival::Resend,
                None if self.awaiting_release.len() >= self.max_awaiting_release => {
                    Arrival::TooManyAwaitingRelease
                }
                None => {
                    self.awaiting_release.insert(pkid, false);
                    Arrival::New
                }
            },
            _ => Arrival::New,
        }
    }

    /// The router's PUBACK for `pkid` is being written: the id is free again.
    pub(super) fn acknowledged(&mut self, pkid: u16) {
        self.unacknowledged.remove(&pkid);
    }

    /// The router's PUBREC for `pkid` is being written.
    pub(super) fn received(&mut self, pkid: u16) {
        if let Some(answered) = self.awaiting_release.get_mut(&pkid) {
            *answered = true;
        }
    }

    /// The client released `pkid` (PUBREL); returns whether the router holds that message.
    /// A PUBREL for anything else is answered with PUBCOMP by the front end: rumqttd's router
    /// would pair it with an unrelated message, or drop the link without a word.
    pub(super) fn release(&mut self, pkid: u16) -> bool {
        self.awaiting_release.remove(&pkid).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qos2_resend_is_new_only_after_its_release() {
        let mut inflight = ClientInflight::new(8);
        assert_eq!(inflight.arrive(2, 5), Arrival::New);
        assert_eq!(inflight.arrive(2, 5), Arrival::Resend);
        inflight.received(5);
        assert_eq!(inflight.arrive(2, 5), Arrival::ResendAnswerPubRec);
        assert!(inflight.release(5));
        assert!(!inflight.release(5));
        assert_eq!(inflight.arrive(2, 5), Arrival::New);
    }

    #[test]
    fn a_qos1_resend_is_new_only_after_its_puback() {
        let mut inflight = ClientInflight::new(8);
        assert_eq!(inflight.arrive(1, 9), Arrival::New);
        assert_eq!(inflight.arrive(1, 9), Arrival::Resend);
        inflight.acknowledged(9);
        assert_eq!(inflight.arrive(1, 9), Arrival::New);
        assert_eq!(inflight.arrive(0, 0), Arrival::New);
        assert_eq!(inflight.arrive(0, 0), Arrival::New);
    }

    #[test]
    fn qos2_messages_awaiting_release_are_bounded() {
        let mut inflight = ClientInflight::new(2);
        assert_eq!(inflight.arrive(2, 1), Arrival::New);
        assert_eq!(inflight.arrive(2, 2), Arrival::New);
        assert_eq!(inflight.arrive(2, 3), Arrival::TooManyAwaitingRelease);
        assert!(inflight.release(1));
        assert_eq!(inflight.arrive(2, 3), Arrival::New);
    }
}
