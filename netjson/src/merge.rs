//! Templates and the device's own config merged into one, as netjsonconfig's `merge_config`.
//!
//! Rules (each one a user sees in the rendered config):
//! - objects merge key by key, recursively; a later layer's scalar replaces the earlier value;
//! - lists merge element by element: objects with the same identifier (`name`, else
//!   `config_value`, else `id`; VLAN interfaces by `type`+`name`+`vid`) are merged, an element equal
//!   to one already present is dropped, every other element is appended in order;
//! - inside merged list elements, nested lists are concatenated (without duplicates);
//! - an object meeting a list (or the other way round) is an error, as in OpenWISP.

use serde_json::{Map, Value};

use crate::{Invalid, pointer_join};

/// The default list identifiers (first one present wins).
const IDENTIFIERS: &[&str] = &["name", "config_value", "id"];
/// Interface types whose list elements are identified by a composite key.
const VLAN_TYPES: &[&str] = &["8021q", "8021ad"];
const VLAN_IDENTIFIERS: &[&str] = &["type", "name", "vid"];

/// How list elements are matched across layers.
#[derive(Clone, Copy)]
pub(crate) enum Identifiers<'a> {
    /// Plain concatenation (duplicates dropped).
    None,
    /// First identifier present in the element names it.
    Keys(&'a [&'a str]),
    /// Like `Keys`, but VLAN interfaces use the composite key.
    Interfaces,
}

/// Merges `layers` (templates in order, then the device's own config) into one config.
///
/// Fails, like OpenWISP, when a layer is not an object or when one layer has an object where
/// another has a list; the pointer names the conflicting key in the merged document.
pub fn merge(layers: &[&Value]) -> Result<Value, Invalid> {
    let mut result = Map::new();
    for (index, layer) in layers.iter().enumerate() {
        let Value::Object(layer) = layer else {
            return Err(Invalid::at(
                "",
                format!("layer {index} is not a JSON object"),
            ));
        };
        // netjsonconfig switches to the VLAN-aware identifiers whenever the layer being merged
        // has interfaces, for every list in that layer.
        let ids = if layer.contains_key("interfaces") {
            Identifiers::Interfaces
        } else {
            Identifiers::Keys(IDENTIFIERS)
        };
        result = merge_objects(&result, layer, ids, "")?;
    }
    Ok(Value::Object(result))
}

/// `merge_config(template, config, identifiers)`.
pub(crate) fn merge_objects(
    template: &Map<String, Value>,
    config: &Map<String, Value>,
    ids: Identifiers<'_>,
    pointer: &str,
) -> Result<Map<String, Value>, Invalid> {
    let mut result = template.clone();
    for (key, value) in config {
        let here = pointer_join(pointer, key);
        let merged = match (result.get(key), value) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                Value::Object(merge_objects(old, new, ids, &here)?)
            }
            (Some(Value::Array(old)), Value::Array(new)) => {
                Value::Array(merge_lists(old, new, ids, &here)?)
            }
            (
                Some(old @ (Value::Object(_) | Value::Array(_))),
                Value::Object(_) | Value::Array(_),
            ) => {
                return Err(Invalid::at(
                    here,
                    format!(
                        "Incompatible type for '{key}': expected {}, got {}.",
                        python_type(old),
                        python_type(value)
                    ),
                ));
            }
            _ => value.clone(),
        };
        result.insert(key.clone(), merged);
    }
    Ok(result)
}

fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "dict",
        _ => "list",
    }
}

/// What an element of a list is matched by.
#[derive(PartialEq)]
enum Key {
    /// Never matches another element.
    Unique(usize),
    Value(Value),
    Composite(Vec<Value>),
}

fn key_of(element: &Value, ids: Identifiers<'_>, unique: usize) -> Key {
    let Value::Object(object) = element else {
        return Key::Unique(unique);
    };
    let default_ids: &[&str] = match ids {
        Identifiers::None => &[],
        Identifiers::Keys(keys) => keys,
        Identifiers::Interfaces => {
            if let Some(Value::String(kind)) = object.get("type")
                && VLAN_TYPES.contains(&kind.as_str())
            {
                return Key::Composite(
                    VLAN_IDENTIFIERS
                        .iter()
                        .filter_map(|k| object.get(*k).cloned())
                        .collect(),
                );
            }
            IDENTIFIERS
        }
    };
    default_ids
        .iter()
        .find_map(|k| object.get(*k))
        .map_or(Key::Unique(unique), |v| Key::Value(v.clone()))
}

/// `merge_list(list1, list2, identifiers)`.
pub(crate) fn merge_lists(
    first: &[Value],
    second: &[Value],
    ids: Identifiers<'_>,
    pointer: &str,
) -> Result<Vec<Value>, Invalid> {
    let mut unique = 0;
    let mut entries: Vec<(Key, Value)> = Vec::with_capacity(first.len() + second.len());
    for element in first {
        unique += 1;
        let key = key_of(element, ids, unique);
        match entries.iter_mut().find(|(k, _)| *k == key) {
            // The same key twice in one list: the later element wins, at the earlier place.
            Some(entry) => entry.1 = element.clone(),
            None => entries.push((key, element.clone())),
        }
    }
    let first_len = entries.len();
    for element in second {
        // Identical elements (e.g. a file two templates share) are not repeated.
        if entries[..first_len].iter().any(|(_, v)| v == element) {
            continue;
        }
        unique += 1;
        let key = key_of(element, ids, unique);
        match entries.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                let here = pointer_join(pointer, i);
                let merged = match (&entries[i].1, element) {
                    (Value::Object(old), Value::Object(new)) => {
                        Value::Object(merge_objects(old, new, Identifiers::None, &here)?)
                    }
                    (Value::Array(old), Value::Array(new)) => {
                        Value::Array(merge_lists(old, new, Identifiers::None, &here)?)
                    }
                    _ => element.clone(),
                };
                entries[i].1 = merged;
            }
            None => entries.push((key, element.clone())),
        }
    }
    Ok(entries.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_device_config_overrides_template_scalars_and_keeps_the_rest() {
        let template = json!({"general": {"hostname": "tpl", "timezone": "UTC"}});
        let device = json!({"general": {"hostname": "dev"}});
        let merged = merge(&[&template, &device]).unwrap();
        assert_eq!(
            merged,
            json!({"general": {"hostname": "dev", "timezone": "UTC"}})
        );
    }

    #[test]
    fn interfaces_with_the_same_name_merge_and_others_are_appended_in_order() {
        let t1 = json!({"interfaces": [
            {"name": "eth0", "type": "ethernet", "mtu": 1500},
            {"name": "eth1", "type": "ethernet"}
        ]});
        let t2 = json!({"interfaces": [{"name": "eth0", "mtu": 1400}, {"name": "wg0", "type": "wireguard"}]});
        let merged = merge(&[&t1, &t2]).unwrap();
        assert_eq!(
            merged["interfaces"],
            json!([
                {"name": "eth0", "type": "ethernet", "mtu": 1400},
                {"name": "eth1", "type": "ethernet"},
                {"name": "wg0", "type": "wireguard"}
            ])
        );
    }

    #[test]
    fn custom_package_blocks_merge_by_config_value() {
        let t = json!({"luci": [{"config_name": "core", "config_value": "main", "lang": "en"}]});
        let d = json!({"luci": [{"config_name": "core", "config_value": "main", "lang": "it"}]});
        let merged = merge(&[&t, &d]).unwrap();
        assert_eq!(
            merged["luci"],
            json!([{"config_name": "core", "config_value": "main", "lang": "it"}])
        );
    }

    #[test]
    fn lists_without_identifiers_are_concatenated_without_repeating_equal_elements() {
        let t = json!({"dns_servers": ["10.0.0.1", "10.0.0.2"], "files": [{"path": "/a", "mode": "0644", "contents": "x"}]});
        let d = json!({"dns_servers": ["10.0.0.2", "10.0.0.3"], "files": [{"path": "/a", "mode": "0644", "contents": "x"}]});
        let merged = merge(&[&t, &d]).unwrap();
        assert_eq!(
            merged["dns_servers"],
            json!(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        );
        assert_eq!(merged["files"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn addresses_inside_a_merged_interface_are_concatenated() {
        let t = json!({"interfaces": [{"name": "lan", "type": "ethernet", "addresses": [{"proto": "dhcp", "family": "ipv4"}]}]});
        let d = json!({"interfaces": [{"name": "lan", "addresses": [{"proto": "dhcp", "family": "ipv6"}]}]});
        let merged = merge(&[&t, &d]).unwrap();
        assert_eq!(
            merged["interfaces"][0]["addresses"],
            json!([{"proto": "dhcp", "family": "ipv4"}, {"proto": "dhcp", "family": "ipv6"}])
        );
    }

    #[test]
    fn vlans_on_the_same_device_with_different_ids_stay_apart() {
        let t = json!({"interfaces": [{"name": "eth0", "type": "8021q", "vid": 1}]});
        let d = json!({"interfaces": [{"name": "eth0", "type": "8021q", "vid": 2}]});
        let merged = merge(&[&t, &d]).unwrap();
        assert_eq!(merged["interfaces"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_object_where_a_template_has_a_list_is_refused_with_its_pointer() {
        let t = json!({"general": {"x": []}});
        let d = json!({"general": {"x": {}}});
        let err = merge(&[&t, &d]).unwrap_err();
        assert_eq!(err.pointer, "/general/x");
        assert!(err.message.contains("Incompatible type"), "{err}");
    }

    #[test]
    fn no_layers_is_an_empty_config() {
        assert_eq!(merge(&[]).unwrap(), json!({}));
    }
}
