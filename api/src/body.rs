//! Typed request bodies: one struct per write body is both the parser and the OpenAPI schema.
//!
//! [`Body<T>`] reads a create, replace or partial-update body (a JSON object) into `T`,
//! the way Django REST framework serializers report: every invalid field gets its own message
//! (`{"field": ["message"]}`, nested objects nested), and on create/replace every field that
//! `T`'s schema lists as required must be present. Fields that may be left out are `Option`s;
//! a field that may also be `null` is an `Option<Option<_>>`. Unknown fields are ignored, as DRF
//! does.
//!
//! Field types carry their rules: [`text_field!`] declares one for a domain newtype parsed from
//! a string,
//! [`Bounded<N>`] free text of at most `N` characters, [`Pk`] a reference to another object,
//! [`Nested<T>`] an object read by the same rules.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use axum::extract::{FromRequest, Request};
use axum::http::Method;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::__dev::ComposeSchema;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::extract::{JsonObject, kind};
use crate::{ApiError, AppState};

/// DRF's message for a required field left out.
pub const REQUIRED: &str = "This field is required.";
/// DRF's message for `null` where a value is needed.
pub const NOT_NULL: &str = "This field may not be null.";

/// A write body for `T`: a JSON object, read into `T` by [`Body::read`]. On create and
/// replace (POST, PUT) every field `T`'s schema requires must be present; a partial update
/// (PATCH) changes only what is present, and the document shows it `T`'s schema with nothing
/// required (see [`crate::docs`]).
///
/// The extractor only takes the JSON (413, 415 and malformed JSON answer at once); handlers
/// read it once they have found the object it writes to, so an object the caller cannot see is
/// a 404 before its body is judged, as in DRF.
#[derive(Debug)]
pub struct Body<T> {
    map: Map<String, Value>,
    partial: bool,
    marker: PhantomData<fn() -> T>,
}

impl<T> Body<T> {
    /// A body already parsed to an object (a multipart form read into one).
    pub(crate) fn from_map(map: Map<String, Value>, partial: bool) -> Self {
        Body {
            map,
            partial,
            marker: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + ToSchema> Body<T> {
    /// Reads the body into `T`, or every field's problem as a 400.
    pub fn read(self) -> Result<T, ApiError> {
        self.read_requiring(&[])
    }

    /// [`Body::read`], with `also` required on create and replace besides the schema's.
    fn read_requiring(self, also: &[&str]) -> Result<T, ApiError> {
        let mut errors = Map::new();
        if !self.partial {
            let also = also.iter().map(|f| (*f).to_owned());
            for field in required::<T>().into_iter().chain(also) {
                if !self.map.contains_key(&field) {
                    errors.insert(field, json!([REQUIRED]));
                }
            }
        }
        read(self.map, errors).map_err(ApiError::Validation)
    }
}

impl<T: DeserializeOwned + ToSchema + CreateRequires> Body<T> {
    /// Reads a create body: [`CreateRequires::ON_CREATE`] must be present too (reported with
    /// the schema's required fields, in one answer).
    pub fn read_new(self) -> Result<T, ApiError> {
        self.read_requiring(T::ON_CREATE)
    }
}

impl<T> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let partial = req.method() == Method::PATCH;
        let JsonObject(map) = JsonObject::from_request(req, state).await?;
        Ok(Body {
            map,
            partial,
            marker: PhantomData,
        })
    }
}

/// The fields `T`'s schema marks as required.
pub(crate) fn required<T: ToSchema>() -> Vec<String> {
    match T::schema() {
        RefOr::T(Schema::Object(object)) => object.required,
        _ => Vec::new(),
    }
}

/// A write body that requires more to create an object than to replace it (a user's
/// password: given once, kept on replace). Its create handler reads it with
/// [`Body::read_new`].
pub trait CreateRequires {
    /// Fields that must be present on create, besides those the schema requires.
    const ON_CREATE: &'static [&'static str];
}

/// Reads `map` into `T`, adding each field's problem to `errors` (which may already hold
/// missing required fields); any error makes the whole body a 400.
pub fn read<T: DeserializeOwned>(
    mut map: Map<String, Value>,
    mut errors: Map<String, Value>,
) -> Result<T, Map<String, Value>> {
    // Each pass either succeeds or names one invalid field, which is recorded and left out of
    // the next pass; so every field's problem is found in at most `map.len()` passes.
    loop {
        let failed = RefCell::new(None);
        match T::deserialize(Object {
            map: &map,
            failed: &failed,
        }) {
            Ok(value) if errors.is_empty() => return Ok(value),
            Ok(_) => return Err(errors),
            Err(FieldError::Missing(field)) => {
                errors
                    .entry(field.to_owned())
                    .or_insert_with(|| json!([REQUIRED]));
                return Err(errors);
            }
            Err(FieldError::Invalid(message)) => {
                let Some(field) = failed.into_inner() else {
                    errors.insert("non_field_errors".to_owned(), json!([message]));
                    return Err(errors);
                };
                let value = map.remove(&field).unwrap_or(Value::Null);
                errors.insert(field, field_message(&message, &value));
            }
        }
    }
}

/// Marks a nested object's errors inside a serde message (see [`Nested`]).
const NESTED: &str = "\u{0}nested:";

/// The DRF message for a field whose value failed with serde's `message`.
fn field_message(message: &str, value: &Value) -> Value {
    if let Some(Ok(errors @ Value::Object(_))) = message
        .strip_prefix(NESTED)
        .map(serde_json::from_str::<Value>)
    {
        return errors;
    }
    if value.is_null() {
        return json!([NOT_NULL]);
    }
    let drf = if let Some(expected) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected ").map(|(_, e)| e))
    {
        match expected {
            "a string" => "Not a valid string.".to_owned(),
            "a boolean" => "Must be a valid boolean.".to_owned(),
            "a map" => format!(
                "Expected a dictionary of items but got type \"{}\".",
                kind(value)
            ),
            "a sequence" => format!("Expected a list of items but got type \"{}\".", kind(value)),
            e if e.starts_with('u') || e.starts_with('i') => {
                "A valid integer is required.".to_owned()
            }
            _ => message.to_owned(),
        }
    } else if message.starts_with("unknown variant") {
        let shown = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        format!("\"{shown}\" is not a valid choice.")
    } else if message.starts_with("invalid value: integer") {
        "Ensure this value is within its range.".to_owned()
    } else {
        message.to_owned()
    };
    json!([drf])
}

/// Why a body did not read.
#[derive(Debug)]
enum FieldError {
    /// A required field is absent.
    Missing(&'static str),
    /// A value (or the body) is invalid.
    Invalid(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Missing(field) => write!(f, "missing field `{field}`"),
            FieldError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for FieldError {}

impl de::Error for FieldError {
    fn custom<M: fmt::Display>(message: M) -> Self {
        FieldError::Invalid(message.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        FieldError::Missing(field)
    }
}

/// A body object being read; remembers which field failed.
struct Object<'a> {
    map: &'a Map<String, Value>,
    failed: &'a RefCell<Option<String>>,
}

impl<'de> Deserializer<'de> for Object<'_> {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        visitor.visit_map(Entries {
            entries: self.map.iter(),
            current: None,
            failed: self.failed,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct Entries<'a> {
    entries: serde_json::map::Iter<'a>,
    current: Option<(&'a String, &'a Value)>,
    failed: &'a RefCell<Option<String>>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = FieldError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, FieldError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some((key, value));
        let key: de::value::StrDeserializer<'_, FieldError> = key.as_str().into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, FieldError> {
        let Some((key, value)) = self.current.take() else {
            return Err(de::Error::custom("value without a key"));
        };
        seed.deserialize(Present(value)).map_err(|e| {
            *self.failed.borrow_mut() = Some(key.clone());
            FieldError::Invalid(e.to_string())
        })
    }
}

/// A field's value as given. Unlike plain JSON, `null` is not "absent": an `Option` field
/// hands it on to its inner type (which refuses it, or is itself an `Option` and takes it).
struct Present<'a>(&'a Value);

impl<'de, 'a> Deserializer<'de> for Present<'a> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        Deserializer::deserialize_any(self.0.clone(), visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self.0.clone())
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.clone().deserialize_enum(name, variants, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.clone().deserialize_newtype_struct(name, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// Reads a string field and parses it into a domain type; `parse`'s error is the message the
/// client sees. The deserializer of the field types [`text_field!`] declares.
pub fn parse_text<'de, D, T, E>(
    deserializer: D,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    match Value::deserialize(deserializer)? {
        Value::String(s) => parse(&s).map_err(de::Error::custom),
        Value::Null => Err(de::Error::custom(NOT_NULL)),
        _ => Err(de::Error::custom("Not a valid string.")),
    }
}

/// Declares a body field type for a domain newtype read from a string:
/// `text_field!(/** docs */ SlugField(Slug), Slug::parse, schema)` — the parser's error is the
/// client's message, and `schema` (an `ObjectBuilder`) documents the same rules.
macro_rules! text_field {
    ($(#[$doc:meta])* $field:ident($domain:ty), $parse:expr, $schema:expr $(,)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $field(pub $domain);

        impl<'de> serde::Deserialize<'de> for $field {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::body::parse_text(deserializer, $parse).map($field)
            }
        }

        impl utoipa::PartialSchema for $field {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(
                    ($schema).build(),
                ))
            }
        }

        impl utoipa::ToSchema for $field {}
    };
}
pub(crate) use text_field;

/// Free text of at most `MAX` characters (blank allowed).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Bounded<const MAX: usize>(pub String);

impl<'de, const MAX: usize> Deserialize<'de> for Bounded<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) if s.chars().count() <= MAX => Ok(Bounded(s)),
            Value::String(_) => Err(de::Error::custom(format!(
                "Ensure this field has no more than {MAX} characters."
            ))),
            Value::Null => Err(de::Error::custom(NOT_NULL)),
            _ => Err(de::Error::custom("Not a valid string.")),
        }
    }
}

impl<const MAX: usize> PartialSchema for Bounded<MAX> {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX))
                .build(),
        ))
    }
}

impl<const MAX: usize> ToSchema for Bounded<MAX> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("Text{MAX}"))
    }
}

/// A name: text of at most `MAX` characters that may not be blank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NonBlank<const MAX: usize>(pub String);

impl<'de, const MAX: usize> Deserialize<'de> for NonBlank<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Bounded(text) = Bounded::<MAX>::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Err(de::Error::custom("This field may not be blank."));
        }
        Ok(NonBlank(text))
    }
}

impl<const MAX: usize> PartialSchema for NonBlank<MAX> {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX))
                .build(),
        ))
    }
}

impl<const MAX: usize> ToSchema for NonBlank<MAX> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("Name{MAX}"))
    }
}

/// An email address, or blank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(pub String);

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Bounded(text) = Bounded::<254>::deserialize(deserializer)?;
        let address = text
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
        if text.is_empty() || (address && !text.contains(char::is_whitespace)) {
            Ok(Email(text))
        } else {
            Err(de::Error::custom("Enter a valid email address."))
        }
    }
}

impl PartialSchema for Email {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(254))
                // Blank is accepted, so not the strict `email` format: a format of its own
                // keeps tools that infer one from our messages from assuming it.
                .format(Some(SchemaFormat::Custom("email-or-blank".to_owned())))
                .pattern(Some(r"^$|^\S+@\S+$"))
                .description(Some("An email address, or blank"))
                .build(),
        ))
    }
}

impl ToSchema for Email {}

/// A reference to another object by id; whether it exists and is visible is the handler's
/// question (an invisible one reads as "does not exist").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pk(pub Uuid);

impl<'de> Deserialize<'de> for Pk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => parse_uuid(&s)
                .map(Pk)
                .ok_or_else(|| de::Error::custom(does_not_exist(&s))),
            Value::Null => Err(de::Error::custom(NOT_NULL)),
            other => Err(de::Error::custom(format!(
                "Incorrect type. Expected pk value, received {}.",
                kind(&other)
            ))),
        }
    }
}

impl PartialSchema for Pk {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                .build(),
        ))
    }
}

impl ToSchema for Pk {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Pk")
    }
}

/// A hyphenated UUID, or empty (a filter left out, a reference cleared).
pub const UUID_OR_EMPTY: &str =
    "^$|^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// A UUID in its hyphenated form, the one the document names (`format: uuid`).
pub fn parse_uuid(text: &str) -> Option<Uuid> {
    (text.len() == 36)
        .then(|| Uuid::parse_str(text).ok())
        .flatten()
}

/// DRF's message for a reference to an object that does not exist or is not visible.
pub fn does_not_exist(pk: &str) -> String {
    format!("Invalid pk \"{pk}\" - object does not exist.")
}

/// A reference that may be cleared, read as DRF's related fields read it: `null`, or `""`
/// (a blank choice), is `NullablePk(None)`. The field is an `Option<NullablePk>` (absent =
/// not given); whether this caller may clear it is the handler's question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NullablePk(pub Option<Uuid>);

impl<'de> Deserialize<'de> for NullablePk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Null => Ok(NullablePk(None)),
            Value::String(s) if s.is_empty() => Ok(NullablePk(None)),
            other => Pk::deserialize(other)
                .map(|Pk(id)| NullablePk(Some(id)))
                .map_err(de::Error::custom),
        }
    }
}

impl PartialSchema for NullablePk {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .pattern(Some(UUID_OR_EMPTY))
                .description(Some("An id; null or blank clears it"))
                .build(),
        ))
    }
}

impl ToSchema for NullablePk {}

/// An object field read by the same rules as a body: every field its schema requires must be
/// given (all missing ones named at once), and its errors nest under the field.
#[derive(Debug, Clone, PartialEq)]
pub struct Nested<T>(pub T);

impl<'de, T: DeserializeOwned + ToSchema> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Object(map) => {
                let missing: Map<String, Value> = required::<T>()
                    .into_iter()
                    .filter(|field| !map.contains_key(field))
                    .map(|field| (field, json!([REQUIRED])))
                    .collect();
                read(map, missing).map(Nested).map_err(|errors| {
                    de::Error::custom(format!("{NESTED}{}", Value::Object(errors)))
                })
            }
            Value::Null => Err(de::Error::custom(NOT_NULL)),
            other => Err(de::Error::custom(format!(
                "Invalid data. Expected a dictionary, but got {}.",
                kind(&other)
            ))),
        }
    }
}

impl<T: ToSchema> ComposeSchema for Nested<T> {
    fn compose(_: Vec<RefOr<Schema>>) -> RefOr<Schema> {
        T::schema()
    }
}

impl<T: ToSchema> ToSchema for Nested<T> {
    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        T::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, ToSchema)]
    struct Inner {
        backend: Option<Choice>,
        context: Option<Map<String, Value>>,
    }

    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    enum Choice {
        A,
    }

    #[derive(Debug, Deserialize, ToSchema)]
    struct Outer {
        #[schema(required = true)]
        name: Option<Bounded<4>>,
        organization: Option<Pk>,
        group: Option<Option<Pk>>,
        active: Option<bool>,
        config: Option<Nested<Inner>>,
    }

    fn errors_of(body: Value) -> Value {
        let Value::Object(map) = body else {
            panic!("an object")
        };
        match read::<Outer>(map, Map::new()) {
            Ok(v) => panic!("accepted {v:?}"),
            Err(errors) => Value::Object(errors),
        }
    }

    #[test]
    fn every_invalid_field_gets_its_drf_message() {
        let errors = errors_of(json!({
            "name": "too long", "organization": 5, "active": "yes",
            "config": {"backend": "b", "context": []}, "unknown": 1
        }));
        assert_eq!(
            errors,
            json!({
                "name": ["Ensure this field has no more than 4 characters."],
                "organization": ["Incorrect type. Expected pk value, received int."],
                "active": ["Must be a valid boolean."],
                "config": {
                    "backend": ["\"b\" is not a valid choice."],
                    "context": ["Expected a dictionary of items but got type \"list\"."]
                }
            })
        );
    }

    #[test]
    fn null_is_refused_unless_the_field_is_nullable() {
        let errors = errors_of(json!({"name": null, "group": null, "organization": "x"}));
        assert_eq!(
            errors,
            json!({
                "name": [NOT_NULL],
                "organization": ["Invalid pk \"x\" - object does not exist."]
            })
        );
        let Value::Object(map) = json!({
            "group": null, "organization": Uuid::nil().to_string(), "active": false,
            "config": {"backend": "a", "context": {"k": 1}}
        }) else {
            unreachable!()
        };
        let outer: Outer = read(map, Map::new()).expect("valid");
        assert_eq!(
            outer.group,
            Some(None),
            "null on a nullable field clears it"
        );
        assert!(outer.name.is_none(), "absent stays absent");
        assert_eq!(outer.organization, Some(Pk(Uuid::nil())));
        assert_eq!(outer.active, Some(false));
        let Some(Nested(inner)) = outer.config else {
            panic!("config read")
        };
        assert!(matches!(inner.backend, Some(Choice::A)));
        assert_eq!(
            inner.context,
            Some(Map::from_iter([("k".to_owned(), json!(1))]))
        );
    }

    #[test]
    fn the_schema_says_what_create_and_replace_require() {
        assert_eq!(required::<Outer>(), vec!["name".to_owned()]);
    }
}
