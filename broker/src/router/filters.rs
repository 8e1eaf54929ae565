//! The subscription index: a tree of filter levels, so that routing a message costs the
//! depth of its topic, not the number of subscriptions.
//!
//! Each node holds the subscriptions whose filter ends there (`here`), those whose filter
//! ends with `#` there (`rest`), and its children by literal level plus one `+` child.
//! Shared subscriptions (`$share/{group}/{filter}`) sit at their inner filter's node, per
//! group; each message goes to one member of a group, in turn.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::mailbox::Mailbox;
use super::subscription::Options;

/// One subscription: whose, at which granted QoS, with which MQTT 5 options.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) qos: u8,
    pub(crate) options: Options,
}

/// Where a routed message goes: one per session, whatever the number of its subscriptions
/// that match.
pub(crate) struct Matched {
    pub(crate) mailbox: Arc<Mailbox>,
    /// The highest QoS granted among them.
    pub(crate) qos: u8,
    /// Whether one of them keeps the retain flag.
    pub(crate) retain_as_published: bool,
    /// Their subscription identifiers.
    pub(crate) ids: Option<Box<[u32]>>,
}

/// The members of one shared subscription group at one filter.
#[derive(Default)]
struct Group {
    members: Vec<Subscriber>,
    next: AtomicUsize,
}

/// Subscriptions ending at one node.
#[derive(Default)]
struct Slot {
    plain: Vec<Subscriber>,
    shared: HashMap<Box<str>, Group>,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_empty()
    }

    fn insert(&mut self, group: Option<&str>, subscriber: Subscriber) {
        let members = match group {
            Some(group) => &mut self.shared.entry(group.into()).or_default().members,
            None => &mut self.plain,
        };
        match members
            .iter_mut()
            .find(|s| Arc::ptr_eq(&s.mailbox, &subscriber.mailbox))
        {
            // A subscription to an existing filter replaces it (MQTT 3.1.1 §3.8.4).
            Some(existing) => {
                existing.qos = subscriber.qos;
                existing.options = subscriber.options;
            }
            None => members.push(subscriber),
        }
    }

    fn remove(&mut self, group: Option<&str>, mailbox: &Arc<Mailbox>) -> bool {
        let removed = |members: &mut Vec<Subscriber>| {
            let before = members.len();
            members.retain(|s| !Arc::ptr_eq(&s.mailbox, mailbox));
            before != members.len()
        };
        match group {
            None => removed(&mut self.plain),
            Some(group) => {
                let Some(members) = self.shared.get_mut(group) else {
                    return false;
                };
                let found = removed(&mut members.members);
                if members.members.is_empty() {
                    self.shared.remove(group);
                }
                found
            }
        }
    }

    fn collect(&self, out: &mut Vec<Subscriber>) {
        out.extend(self.plain.iter().cloned());
        for group in self.shared.values() {
            if group.members.is_empty() {
                continue;
            }
            // Prefer a member that is connected; round robin among them.
            let start = group.next.fetch_add(1, Ordering::Relaxed);
            let count = group.members.len();
            let pick = (0..count)
                .map(|i| &group.members[(start + i) % count])
                .find(|s| s.mailbox.is_attached())
                .unwrap_or(&group.members[start % count]);
            out.push(pick.clone());
        }
    }
}

#[derive(Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    here: Slot,
    rest: Slot,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.rest.is_empty()
    }
}

/// Every subscription of every session and in-process link.
#[derive(Default)]
pub(crate) struct FilterTree {
    root: Node,
}

/// `$share/{group}/{filter}` → (`Some(group)`, `filter`); any other filter → (`None`, itself).
pub(crate) fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((group, inner)) => (Some(group), inner),
        None => (None, filter),
    }
}

impl FilterTree {
    /// Adds (or updates the QoS of) `mailbox`'s subscription to `filter` (valid, as
    /// subscribed, `$share/…` included).
    pub(crate) fn insert(&mut self, filter: &str, subscriber: Subscriber) {
        let (group, inner) = split_shared(filter);
        let mut node = &mut self.root;
        let mut levels = inner.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                node.rest.insert(group, subscriber);
                return;
            }
            node = match level {
                "+" => node.plus.get_or_insert_with(Box::default),
                literal => node.literal.entry(literal.into()).or_default(),
            };
        }
        node.here.insert(group, subscriber);
    }

    /// Removes `mailbox`'s subscription to `filter`; returns whether there was one. Emptied
    /// nodes are pruned, so that filters that come and go leave nothing behind.
    pub(crate) fn remove(&mut self, filter: &str, mailbox: &Arc<Mailbox>) -> bool {
        let (group, inner) = split_shared(filter);
        let levels: Vec<&str> = inner.split('/').collect();
        remove_at(&mut self.root, &levels, group, mailbox)
    }

    /// Where a message on topic name `topic` goes: one entry per session (the highest
    /// granted QoS among its matching filters, their identifiers) and one member per shared
    /// group. `origin` is the publishing session: its own no-local subscriptions are left
    /// out.
    pub(crate) fn matching(&self, topic: &str, origin: Option<&Mailbox>) -> Vec<Matched> {
        let levels: Vec<&str> = topic.split('/').collect();
        let mut found = Vec::new();
        collect(&self.root, &levels, 0, topic.starts_with('$'), &mut found);
        if let Some(origin) = origin {
            found
                .retain(|s| !(s.options.no_local && std::ptr::eq(Arc::as_ptr(&s.mailbox), origin)));
        }
        // Overlapping subscriptions of one session: one copy, at the highest QoS.
        found.sort_by(|a, b| {
            (Arc::as_ptr(&a.mailbox) as usize)
                .cmp(&(Arc::as_ptr(&b.mailbox) as usize))
                .then(b.qos.cmp(&a.qos))
        });
        let mut out: Vec<Matched> = Vec::with_capacity(found.len());
        let mut ids: Vec<u32> = Vec::new();
        for s in found {
            match out.last_mut() {
                Some(last) if Arc::ptr_eq(&last.mailbox, &s.mailbox) => {
                    last.retain_as_published |= s.options.retain_as_published;
                    if s.options.id != 0 {
                        ids.push(s.options.id);
                    }
                }
                _ => {
                    if let Some(last) = out.last_mut() {
                        last.ids = take_ids(&mut ids);
                    }
                    if s.options.id != 0 {
                        ids.push(s.options.id);
                    }
                    out.push(Matched {
                        mailbox: s.mailbox,
                        qos: s.qos,
                        retain_as_published: s.options.retain_as_published,
                        ids: None,
                    });
                }
            }
        }
        if let Some(last) = out.last_mut() {
            last.ids = take_ids(&mut ids);
        }
        out
    }
}

/// The identifiers gathered for one session, sorted and once each.
fn take_ids(ids: &mut Vec<u32>) -> Option<Box<[u32]>> {
    if ids.is_empty() {
        return None;
    }
    ids.sort_unstable();
    ids.dedup();
    Some(std::mem::take(ids).into_boxed_slice())
}

fn remove_at(
    node: &mut Node,
    levels: &[&str],
    group: Option<&str>,
    mailbox: &Arc<Mailbox>,
) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        return node.here.remove(group, mailbox);
    };
    if *level == "#" && rest.is_empty() {
        return node.rest.remove(group, mailbox);
    }
    match *level {
        "+" => match &mut node.plus {
            Some(child) => {
                let removed = remove_at(child, rest, group, mailbox);
                if child.is_empty() {
                    node.plus = None;
                }
                removed
            }
            None => false,
        },
        literal => match node.literal.get_mut(literal) {
            Some(child) => {
                let removed = remove_at(child, rest, group, mailbox);
                if child.is_empty() {
                    node.literal.remove(literal);
                }
                removed
            }
            None => false,
        },
    }
}

/// Wildcards at the first level never match `$…` topics (MQTT 3.1.1 §4.7.2).
fn collect(node: &Node, levels: &[&str], depth: usize, dollar: bool, out: &mut Vec<Subscriber>) {
    let first = depth == 0;
    // `a/#` matches `a` too (§4.7.1.2).
    if !(first && dollar) {
        node.rest.collect(out);
    }
    let Some(level) = levels.get(depth) else {
        node.here.collect(out);
        return;
    };
    if let Some(child) = node.literal.get(*level) {
        collect(child, levels, depth + 1, dollar, out);
    }
    if let Some(child) = &node.plus
        && !(first && dollar)
    {
        collect(child, levels, depth + 1, dollar, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_protocol::topic::matches;

    fn subscriber(qos: u8) -> Subscriber {
        Subscriber {
            mailbox: Arc::new(Mailbox::for_tests()),
            qos,
            options: Options::default(),
        }
    }

    #[test]
    fn the_tree_agrees_with_the_reference_matcher() {
        let filters = [
            "#", "+", "+/+", "a/#", "a/+", "a/b", "a/b/#", "+/b", "a/+/c", "/+", "+/", "$SYS/#",
            "$SYS/+", "a//c", "a/b/c/#", "+/+/+",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "a//c", "/a", "a/", "/", "$SYS/x", "$SYS", "b/b", "a/x/c",
            "$share/x",
        ];
        let mut tree = FilterTree::default();
        let subs: Vec<(&str, Subscriber)> = filters.iter().map(|f| (*f, subscriber(1))).collect();
        for (filter, s) in &subs {
            tree.insert(filter, s.clone());
        }
        for topic in topics {
            let got = tree.matching(topic, None);
            for (filter, s) in &subs {
                let found = got.iter().any(|g| Arc::ptr_eq(&g.mailbox, &s.mailbox));
                assert_eq!(found, matches(filter, topic), "{filter} vs {topic}");
            }
        }
        for (filter, s) in &subs {
            assert!(tree.remove(filter, &s.mailbox), "{filter}");
        }
        assert!(
            tree.root.is_empty(),
            "removing every filter prunes every node"
        );
    }

    #[test]
    fn overlapping_filters_of_one_session_deliver_once_at_the_highest_qos() {
        let mut tree = FilterTree::default();
        let s = subscriber(0);
        tree.insert("a/#", s.clone());
        tree.insert(
            "a/+",
            Subscriber {
                qos: 2,
                ..s.clone()
            },
        );
        tree.insert(
            "a/b",
            Subscriber {
                qos: 1,
                ..s.clone()
            },
        );
        let got = tree.matching("a/b", None);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].qos, 2);
        // Subscribing again to the same filter replaces its QoS.
        tree.insert(
            "a/+",
            Subscriber {
                qos: 0,
                ..s.clone()
            },
        );
        assert_eq!(tree.matching("a/b", None)[0].qos, 1);
    }

    #[test]
    fn no_local_and_identifiers_are_applied_per_session() {
        let mut tree = FilterTree::default();
        let s = subscriber(1);
        let with = |id, no_local| Subscriber {
            options: Options {
                id,
                no_local,
                ..Options::default()
            },
            ..s.clone()
        };
        tree.insert("a/#", with(7, false));
        tree.insert("a/+", with(3, true));
        tree.insert("a/b", with(0, false));
        let got = tree.matching("a/b", None);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ids.as_deref(), Some(&[3, 7][..]));
        // Its own message: the no-local subscription does not count.
        let own = tree.matching("a/b", Some(&s.mailbox));
        assert_eq!(own[0].ids.as_deref(), Some(&[7][..]));
        tree.insert("a/#", with(0, true));
        tree.insert("a/b", with(0, true));
        assert!(
            tree.matching("a/b", Some(&s.mailbox)).is_empty(),
            "every matching subscription is no-local"
        );
    }

    #[test]
    fn a_shared_group_gets_each_message_once_in_turn() {
        let mut tree = FilterTree::default();
        let (a, b) = (subscriber(1), subscriber(1));
        tree.insert("$share/g/t/+", a.clone());
        tree.insert("$share/g/t/+", b.clone());
        let firsts: Vec<bool> = (0..4)
            .map(|_| {
                let got = tree.matching("t/x", None);
                assert_eq!(got.len(), 1);
                Arc::ptr_eq(&got[0].mailbox, &a.mailbox)
            })
            .collect();
        assert_eq!(firsts.iter().filter(|x| **x).count(), 2);
        assert!(tree.remove("$share/g/t/+", &a.mailbox));
        assert!(!tree.remove("$share/g/t/+", &a.mailbox));
        assert!(Arc::ptr_eq(
            &tree.matching("t/y", None)[0].mailbox,
            &b.mailbox
        ));
    }
}
