//! Reading fields out of a JSON object body the way Django REST framework serializers do:
//! every problem is collected per field, and PUT differs from PATCH only in that required
//! fields must be present.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::ApiError;
use crate::extract::kind;

/// Whether absent required fields are errors (create, PUT) or not (PATCH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// POST or PUT: required fields must be present.
    Full,
    /// PATCH: only what is present changes.
    Partial,
}

/// A body being read, with the errors found so far.
pub struct Form {
    map: Map<String, Value>,
    mode: Mode,
    errors: Map<String, Value>,
}

/// The result of reading one field.
pub enum Field<T> {
    /// Not in the body.
    Absent,
    /// Present and valid.
    Set(T),
    /// Present but invalid (the error is recorded).
    Invalid,
}

impl<T> Field<T> {
    /// Applies a present value to `slot`.
    pub fn apply(self, slot: &mut T) {
        if let Field::Set(v) = self {
            *slot = v;
        }
    }

    /// The value, if present and valid.
    pub fn set(self) -> Option<T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }
}

const REQUIRED: &str = "This field is required.";
const NOT_NULL: &str = "This field may not be null.";

impl Form {
    /// Starts reading `map`.
    pub fn new(map: Map<String, Value>, mode: Mode) -> Self {
        Self {
            map,
            mode,
            errors: Map::new(),
        }
    }

    /// Records an error on `field`.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let entry = self
            .errors
            .entry(field.to_owned())
            .or_insert_with(|| json!([]));
        if let Value::Array(list) = entry {
            list.push(Value::String(message.into()));
        }
    }

    /// Records nested errors (a nested serializer's) under `field`.
    pub fn nested_errors(&mut self, field: &str, errors: Map<String, Value>) {
        if !errors.is_empty() {
            self.errors.insert(field.to_owned(), Value::Object(errors));
        }
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The raw value of a field (for fields with their own parsing).
    pub fn raw(&mut self, field: &str, required: bool) -> Field<Value> {
        match self.map.remove(field) {
            Some(v) => Field::Set(v),
            None if required && self.mode == Mode::Full => {
                self.error(field, REQUIRED);
                Field::Invalid
            }
            None => Field::Absent,
        }
    }

    /// A string field; `parse` turns it into its domain type or says why not.
    pub fn parsed<T, E: Into<String>>(
        &mut self,
        field: &str,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Field<T> {
        match self.raw(field, required) {
            Field::Set(Value::String(s)) => match parse(&s) {
                Ok(v) => Field::Set(v),
                Err(message) => {
                    self.error(field, message);
                    Field::Invalid
                }
            },
            Field::Set(Value::Null) => {
                self.error(field, NOT_NULL);
                Field::Invalid
            }
            Field::Set(Value::Number(n)) => match parse(&n.to_string()) {
                Ok(v) => Field::Set(v),
                Err(message) => {
                    self.error(field, message);
                    Field::Invalid
                }
            },
            Field::Set(_) => {
                self.error(field, "Not a valid string.");
                Field::Invalid
            }
            Field::Absent => Field::Absent,
            Field::Invalid => Field::Invalid,
        }
    }

    /// A free text field of at most `max` characters (blank allowed).
    pub fn text(&mut self, field: &str, max: usize) -> Field<String> {
        self.parsed(field, false, |s| {
            if s.chars().count() > max {
                Err(max_len_message(max))
            } else {
                Ok(s.to_owned())
            }
        })
    }

    /// A text field that may also be null (null reads as empty).
    pub fn nullable_text(&mut self, field: &str, max: usize) -> Field<String> {
        if self.map.get(field).is_some_and(Value::is_null) {
            self.map.remove(field);
            return Field::Set(String::new());
        }
        self.text(field, max)
    }

    /// A boolean field.
    pub fn boolean(&mut self, field: &str) -> Field<bool> {
        match self.raw(field, false) {
            Field::Set(Value::Bool(b)) => Field::Set(b),
            Field::Set(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Field::Set(true),
                "false" | "0" | "no" | "off" => Field::Set(false),
                _ => {
                    self.error(field, "Must be a valid boolean.");
                    Field::Invalid
                }
            },
            Field::Set(Value::Number(n)) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                Field::Set(n.as_u64() == Some(1))
            }
            Field::Set(_) => {
                self.error(field, "Must be a valid boolean.");
                Field::Invalid
            }
            other => other.map_absent(),
        }
    }

    /// A reference to another object by UUID; `null` allowed when `nullable`.
    pub fn reference(
        &mut self,
        field: &str,
        required: bool,
        nullable: bool,
    ) -> Field<Option<Uuid>> {
        match self.raw(field, required) {
            Field::Set(Value::Null) if nullable => Field::Set(None),
            Field::Set(Value::Null) => {
                self.error(field, NOT_NULL);
                Field::Invalid
            }
            Field::Set(Value::String(s)) if s.is_empty() && nullable => Field::Set(None),
            Field::Set(Value::String(s)) => match Uuid::parse_str(&s) {
                Ok(id) => Field::Set(Some(id)),
                Err(_) => {
                    self.error(field, does_not_exist(&s));
                    Field::Invalid
                }
            },
            Field::Set(other) => {
                self.error(
                    field,
                    format!(
                        "Incorrect type. Expected pk value, received {}.",
                        kind(&other)
                    ),
                );
                Field::Invalid
            }
            other => other.map_absent(),
        }
    }

    /// A JSON object field.
    pub fn object(&mut self, field: &str) -> Field<Map<String, Value>> {
        match self.raw(field, false) {
            Field::Set(Value::Object(map)) => Field::Set(map),
            Field::Set(other) => {
                self.error(
                    field,
                    format!(
                        "Expected a dictionary of items but got type \"{}\".",
                        kind(&other)
                    ),
                );
                Field::Invalid
            }
            other => other.map_absent(),
        }
    }

    /// Ends reading: fields nobody asked for are ignored (as DRF does); errors become a 400.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }

    /// The collected errors (for nesting under a parent field).
    pub fn into_errors(self) -> Map<String, Value> {
        self.errors
    }

    /// The mode the form was read in.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

impl Field<Value> {
    fn map_absent<T>(self) -> Field<T> {
        match self {
            Field::Absent => Field::Absent,
            _ => Field::Invalid,
        }
    }
}

/// DRF's message for a reference to an object that does not exist or is not visible.
pub fn does_not_exist(pk: &str) -> String {
    format!("Invalid pk \"{pk}\" - object does not exist.")
}

fn max_len_message(max: usize) -> &'static str {
    match max {
        32 => "Ensure this field has no more than 32 characters.",
        64 => "Ensure this field has no more than 64 characters.",
        100 => "Ensure this field has no more than 100 characters.",
        128 => "Ensure this field has no more than 128 characters.",
        150 => "Ensure this field has no more than 150 characters.",
        200 => "Ensure this field has no more than 200 characters.",
        254 => "Ensure this field has no more than 254 characters.",
        _ => "Ensure this field is not too long.",
    }
}
