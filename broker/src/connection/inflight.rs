//! Client-to-broker packet ids in flight: what makes a resent QoS 1/2 PUBLISH a resend
//! rather than a new message.
//!
//! A QoS 2 PUBLISH is exactly once from its first arrival until the client's PUBREL (MQTT
//! 3.1.1 §4.3.3): a copy re-sent with DUP in between must not reach the uplink (the bridge
//! would store the sample twice) nor subscribers (they would get it twice). A QoS 1 PUBLISH whose
//! packet id is still unacknowledged is likewise a resend: the PUBACK already on its way
//! answers both. So is a QoS 1 PUBLISH with DUP whose packet id was acknowledged lately and
//! not used since: the client sent it before our PUBACK reached it (a client reuses an id only
//! once it has the PUBACK, and a new message never carries DUP). The PUBACK already written
//! answers it too; a second one could reach the client after it reused the id, and
//! acknowledge that new message before it is stored.

use std::collections::{HashMap, VecDeque};

/// QoS 1 packet ids remembered after their PUBACK, for resends that crossed it.
const RECENTLY_ACKNOWLEDGED: usize = 32;

/// What to do with an incoming PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// A new message: deliver and route it.
    New,
    /// A resend whose acknowledgement is still to come: drop it.
    Resend,
    /// A QoS 2 resend whose PUBREC was already written: drop it and write PUBREC again.
    ResendAnswerPubRec,
    /// More QoS 2 messages awaiting PUBREL than allowed: close the connection.
    TooManyAwaitingRelease,
}

/// Packet ids the client used and the broker has not finished with, per connection.
pub(super) struct ClientInflight {
    /// QoS 1: routed, PUBACK not yet written. A handful at most (one message is held at a
    /// time), so a list: a set would be 24 more bytes in every connection's state.
    unacknowledged: Vec<u16>,
    /// QoS 1: PUBACK written lately, id not used again since; oldest first.
    acknowledged: VecDeque<u16>,
    /// QoS 2: taken, PUBREL not yet received; `true` once the PUBREC was written.
    awaiting_release: HashMap<u16, bool>,
    max_awaiting_release: usize,
}

impl ClientInflight {
    /// At most `max_awaiting_release` QoS 2 messages may wait for their PUBREL.
    pub(super) fn new(max_awaiting_release: usize) -> ClientInflight {
        ClientInflight {
            unacknowledged: Vec::new(),
            acknowledged: VecDeque::new(),
            awaiting_release: HashMap::new(),
            max_awaiting_release,
        }
    }

    /// Classifies a PUBLISH (QoS as its number, DUP flag) and records a new QoS 1/2 one.
    pub(super) fn arrive(&mut self, qos: u8, pkid: u16, dup: bool) -> Arrival {
        match qos {
            1 if self.unacknowledged.contains(&pkid) => Arrival::Resend,
            1 => {
                let lately = self.acknowledged.iter().position(|id| *id == pkid);
                if let Some(at) = lately {
                    if dup {
                        return Arrival::Resend;
                    }
                    // The client has our PUBACK and uses the id for a new message.
                    self.acknowledged.remove(at);
                }
                self.unacknowledged.push(pkid);
                Arrival::New
            }
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
        let Some(at) = self.unacknowledged.iter().position(|id| *id == pkid) else {
            return;
        };
        self.unacknowledged.swap_remove(at);
        if !self.acknowledged.contains(&pkid) {
            if self.acknowledged.len() == RECENTLY_ACKNOWLEDGED {
                self.acknowledged.pop_front();
            }
            self.acknowledged.push_back(pkid);
        }
    }

    /// The router's PUBREC for `pkid` is being written.
    pub(super) fn received(&mut self, pkid: u16) {
        if let Some(answered) = self.awaiting_release.get_mut(&pkid) {
            *answered = true;
        }
    }

    /// The client released `pkid` (PUBREL); returns whether it was awaiting release. A PUBREL
    /// for anything else is answered with PUBCOMP all the same.
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
        assert_eq!(inflight.arrive(2, 5, false), Arrival::New);
        assert_eq!(inflight.arrive(2, 5, true), Arrival::Resend);
        inflight.received(5);
        assert_eq!(inflight.arrive(2, 5, true), Arrival::ResendAnswerPubRec);
        assert!(inflight.release(5));
        assert!(!inflight.release(5));
        assert_eq!(inflight.arrive(2, 5, false), Arrival::New);
    }

    #[test]
    fn a_qos1_resend_is_new_only_after_its_puback() {
        let mut inflight = ClientInflight::new(8);
        assert_eq!(inflight.arrive(1, 9, false), Arrival::New);
        assert_eq!(inflight.arrive(1, 9, true), Arrival::Resend);
        inflight.acknowledged(9);
        assert_eq!(inflight.arrive(1, 9, false), Arrival::New);
        assert_eq!(inflight.arrive(0, 0, false), Arrival::New);
        assert_eq!(inflight.arrive(0, 0, false), Arrival::New);
    }

    #[test]
    fn a_qos1_resend_that_crossed_its_puback_is_not_taken() {
        let mut inflight = ClientInflight::new(8);
        assert_eq!(inflight.arrive(1, 4, false), Arrival::New);
        inflight.acknowledged(4);
        // The client re-sent before our PUBACK reached it.
        assert_eq!(inflight.arrive(1, 4, true), Arrival::Resend);
        assert_eq!(inflight.arrive(1, 4, true), Arrival::Resend);
        // Then it got the PUBACK and uses the id for a new message.
        assert_eq!(inflight.arrive(1, 4, false), Arrival::New);
        assert_eq!(inflight.arrive(1, 4, true), Arrival::Resend);
        inflight.acknowledged(4);
        // Only the latest ids are remembered.
        for pkid in 100..100 + RECENTLY_ACKNOWLEDGED as u16 {
            assert_eq!(inflight.arrive(1, pkid, false), Arrival::New);
            inflight.acknowledged(pkid);
        }
        assert_eq!(inflight.arrive(1, 4, true), Arrival::New);
    }

    #[test]
    fn qos2_messages_awaiting_release_are_bounded() {
        let mut inflight = ClientInflight::new(2);
        assert_eq!(inflight.arrive(2, 1, false), Arrival::New);
        assert_eq!(inflight.arrive(2, 2, false), Arrival::New);
        assert_eq!(
            inflight.arrive(2, 3, false),
            Arrival::TooManyAwaitingRelease
        );
        assert!(inflight.release(1));
        assert_eq!(inflight.arrive(2, 3, false), Arrival::New);
    }
}
