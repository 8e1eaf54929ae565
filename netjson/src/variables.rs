//! `{{ variable }}` substitution, as netjsonconfig's `evaluate_vars`.

use std::collections::BTreeMap;

use serde_json::Value;

/// Replaces every `{{ name }}` (spaces optional) in every string value of `config` with
/// `vars[name]`. Unknown variables stay as written, so a missing variable is visible in the
/// rendered file instead of silently becoming empty. Object keys are never substituted.
///
/// Callers build `vars` lowest precedence first: template default_values, organization
/// variables, group context, config context, then `id`, `key`, `name`, `mac_address`.
pub fn substitute(config: &Value, vars: &BTreeMap<String, String>) -> Value {
    match config {
        Value::String(s) => Value::String(substitute_str(s, vars)),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// One string: each `{{\s*(\w*)\s*}}` whose name is known is replaced; the rest is kept.
fn substitute_str(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        match parse_placeholder(after) {
            Some((name, len)) if vars.contains_key(name) => {
                out.push_str(&vars[name]);
                rest = &after[len..];
            }
            _ => {
                // Not a placeholder we replace: keep one brace and look again after it, so
                // `{{{ x }}` still finds `{{ x }}`.
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// At `{{`: the variable name and the placeholder's length in bytes, if it is one.
fn parse_placeholder(s: &str) -> Option<(&str, usize)> {
    let inner = s.strip_prefix("{{")?;
    let trimmed = inner.trim_start();
    let lead = inner.len() - trimmed.len();
    let name_len = trimmed
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(trimmed.len(), |(i, _)| i);
    let name = &trimmed[..name_len];
    let tail = &trimmed[name_len..];
    let tail_trimmed = tail.trim_start();
    let gap = tail.len() - tail_trimmed.len();
    tail_trimmed.strip_prefix("}}")?;
    Some((name, 2 + lead + name_len + gap + 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_with_and_without_spaces_are_replaced_everywhere() {
        let config = json!({
            "general": {"hostname": "{{name}}"},
            "interfaces": [{"name": "wlan0", "wireless": {"ssid": "{{ ssid }}-{{name}}"}}],
            "mtu": 1500
        });
        let out = substitute(&config, &vars(&[("name", "r1"), ("ssid", "office")]));
        assert_eq!(
            out,
            json!({
                "general": {"hostname": "r1"},
                "interfaces": [{"name": "wlan0", "wireless": {"ssid": "office-r1"}}],
                "mtu": 1500
            })
        );
    }

    #[test]
    fn unknown_variables_stay_as_written() {
        let config = json!({"x": "{{ known }} and {{ unknown }}"});
        let out = substitute(&config, &vars(&[("known", "k")]));
        assert_eq!(out, json!({"x": "k and {{ unknown }}"}));
    }

    #[test]
    fn keys_are_not_substituted_and_values_are_inserted_literally() {
        let config = json!({"{{ k }}": "{{ v }}"});
        let out = substitute(&config, &vars(&[("k", "x"), ("v", "{{ k }} \\1 $1")]));
        assert_eq!(out, json!({"{{ k }}": "{{ k }} \\1 $1"}));
    }

    #[test]
    fn tabs_and_newlines_count_as_spaces_inside_the_braces() {
        let out = substitute(&json!("a{{\tv\n}}b{{v}"), &vars(&[("v", "1")]));
        assert_eq!(out, json!("a1b{{v}"));
    }
}
