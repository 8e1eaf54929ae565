//! UCI sections (`config <type> '<name>'` with options and lists) and their text.
//!
//! Sections are built from NetJSON by the section modules, merged per package the way
//! netjsonconfig merges its intermediate data (by section name), then written out as netjsonconfig's
//! jinja template writes them.

use serde_json::{Map, Value};

use crate::merge::{Identifiers, merge_lists};

/// One `config <kind> '<name>'` block. Options keep their order: netjsonconfig sorts each section's
/// keys, and options added by a later merge come after the sorted ones.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub kind: String,
    pub name: String,
    pub options: Vec<(String, Value)>,
}

impl Section {
    /// A section whose options are `map`'s entries in sorted key order.
    pub fn sorted(
        kind: impl Into<String>,
        name: impl Into<String>,
        map: Map<String, Value>,
    ) -> Self {
        // serde_json's Map (without preserve_order) iterates in key order already.
        Self {
            kind: kind.into(),
            name: name.into(),
            options: map.into_iter().collect(),
        }
    }

    fn same_as(&self, other: &Section) -> bool {
        if self.kind != other.kind || self.name != other.name {
            return false;
        }
        let mut a: Vec<_> = self.options.iter().collect();
        let mut b: Vec<_> = other.options.iter().collect();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        b.sort_by(|x, y| x.0.cmp(&y.0));
        a == b
    }

    /// `merge_config(self, other)`: other's options override, new ones are appended.
    fn merge_from(&mut self, other: &Section) {
        self.kind = other.kind.clone();
        for (key, value) in &other.options {
            match self.options.iter_mut().find(|(k, _)| k == key) {
                Some((_, old)) => {
                    *old = match (&*old, value) {
                        (Value::Array(a), Value::Array(b)) => Value::Array(
                            merge_lists(a, b, Identifiers::None, "").unwrap_or_else(|_| b.clone()),
                        ),
                        (Value::Object(a), Value::Object(b)) => {
                            let mut merged = a.clone();
                            for (k, v) in b {
                                merged.insert(k.clone(), v.clone());
                            }
                            Value::Object(merged)
                        }
                        _ => value.clone(),
                    }
                }
                None => self.options.push((key.clone(), value.clone())),
            }
        }
    }
}

/// UCI packages in the order they were first produced.
#[derive(Debug, Default)]
pub(crate) struct Packages(pub Vec<(String, Vec<Section>)>);

impl Packages {
    /// Adds `sections` to `package`, merging sections that share a name (netjsonconfig's
    /// intermediate merge with the `.name` identifier).
    pub fn add(&mut self, package: &str, sections: Vec<Section>) {
        if sections.is_empty() {
            return;
        }
        match self.0.iter_mut().find(|(p, _)| p == package) {
            Some((_, existing)) => {
                let old = std::mem::take(existing);
                *existing = merge_sections(old, sections);
            }
            None => self
                .0
                .push((package.to_string(), merge_sections(Vec::new(), sections))),
        }
    }

    /// The sections of `package` produced so far.
    pub fn get(&self, package: &str) -> &[Section] {
        self.0
            .iter()
            .find(|(p, _)| p == package)
            .map_or(&[], |(_, s)| s.as_slice())
    }
}

/// `merge_list(first, second, identifiers=[".name"])` over sections.
pub(crate) fn merge_sections(first: Vec<Section>, second: Vec<Section>) -> Vec<Section> {
    let mut result: Vec<Section> = Vec::with_capacity(first.len() + second.len());
    for section in first {
        match result.iter_mut().find(|s| s.name == section.name) {
            Some(slot) => *slot = section,
            None => result.push(section),
        }
    }
    let first_len = result.len();
    for section in second {
        if result[..first_len].iter().any(|s| s.same_as(&section)) {
            continue;
        }
        match result.iter_mut().find(|s| s.name == section.name) {
            Some(slot) => slot.merge_from(&section),
            None => result.push(section),
        }
    }
    result
}

/// How the two backends spell a section and its options.
#[derive(Clone, Copy)]
pub(crate) enum Syntax {
    /// `config system 'system'` / `option hostname 'x'`.
    Plain,
    /// `config 'system' 'system'` / `option 'hostname' 'x'` (OpenWISP 1.x).
    Quoted,
}

/// The text of one package's sections, as the package's file holds it.
pub(crate) fn package_text(sections: &[Section], syntax: Syntax) -> String {
    let mut out = String::new();
    for section in sections {
        let kind = match syntax {
            Syntax::Plain => section.kind.clone(),
            Syntax::Quoted => quote(&section.kind),
        };
        out.push_str(&format!("config {kind} {}\n", quote(&section.name)));
        for (key, value) in &section.options {
            if key.starts_with('.') || value.is_null() || value.as_str() == Some("") {
                continue;
            }
            let key = match syntax {
                Syntax::Plain => key.clone(),
                Syntax::Quoted => quote(key),
            };
            match value {
                Value::Array(items) => {
                    for item in items {
                        out.push_str(&format!("\tlist {key} {}\n", quote(&python_str(item))));
                    }
                }
                // A mapping iterates over its keys in the template.
                Value::Object(map) => {
                    for k in map.keys() {
                        out.push_str(&format!("\tlist {key} {}\n", quote(k)));
                    }
                }
                Value::Bool(b) => out.push_str(&format!("\toption {key} '{}'\n", u8::from(*b))),
                other => out.push_str(&format!("\toption {key} {}\n", quote(&python_str(other)))),
            }
        }
        out.push('\n');
    }
    out
}

/// Single-quotes a UCI value. A quote inside is written `'\''` (as `uci export` does), so the
/// device reads back exactly the value configured.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The text Python's `str()` gives a JSON value (what the template prints).
pub(crate) fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => python_repr(other),
    }
}

fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => python_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => {
            if s.contains('\'') && !s.contains('"') {
                format!("\"{s}\"")
            } else {
                format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Value::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // `{:e}` gives the shortest round-trip digits: "1.2345e-5".
    let exp_form = format!("{f:e}");
    let Some((mantissa, exp)) = exp_form.split_once('e') else {
        return exp_form;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        format!(
            "{sign}0.{}{digits}",
            "0".repeat(point.unsigned_abs() as usize)
        )
    } else if (point as usize) >= digits.len() {
        format!(
            "{sign}{digits}{}.0",
            "0".repeat(point as usize - digits.len())
        )
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_does() {
        for (f, expected) in [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e16, "1e+16"),
            (123456789.125, "123456789.125"),
            (-2.5e-7, "-2.5e-07"),
        ] {
            assert_eq!(python_float(f), expected, "{f}");
        }
    }
}
