//! The OpenAPI document: its header, the bearer scheme, and the error answers every route
//! shares, added from each operation's shape so that no route can forget one.
//!
//! Routes document what is theirs (their success bodies, 409s, 503/504 of device calls, 403s
//! with a rule of their own); [`finish`] adds the rest: 401 and 403 where a token is
//! needed, 404 where a path names an object or a list is paged, 400/413/415 where a body is
//! read, 400 where query parameters are checked. A PATCH body is shown as its PUT schema with
//! nothing required (`Patched…`), as [`crate::body::Body`] reads it.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::ErrorDetail;

/// A 400 body: field → messages (nested for nested objects), or `{"detail": ...}` for a
/// body that is not JSON.
pub struct FieldErrors;

impl PartialSchema for FieldErrors {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(
                    "Field → list of messages (nested objects nest), or `detail`",
                ))
                .build(),
        ))
    }
}

impl ToSchema for FieldErrors {}

#[derive(OpenApi)]
#[openapi(
    info(title = "fleetmq", description = "OpenWISP-compatible device management over MQTT."),
    modifiers(&BearerAuth),
    // The live event stream's `data` objects (no route body names them).
    components(schemas(
        ErrorDetail,
        FieldErrors,
        crate::routes::otao::OtaoMessage,
        crate::routes::events::PresenceEvent,
        crate::routes::events::CommandEvent,
        crate::routes::events::BatchEvent,
    )),
    tags(
        (name = "devices", description = "OpenWISP controller: devices"),
        (name = "templates", description = "OpenWISP controller: configuration templates"),
        (name = "groups", description = "OpenWISP controller: device groups"),
        (name = "users", description = "Organizations, users and tokens"),
        (name = "pki", description = "OpenWISP controller: certificate authorities and certificates"),
        (name = "vpn", description = "OpenWISP controller: VPN servers (OpenVPN, WireGuard, VXLAN over WireGuard)"),
        (name = "connections", description = "Credentials and device connections"),
        (name = "commands", description = "Commands sent to devices over MQTT"),
        (name = "firmware", description = "Firmware upgrader: categories, builds, images"),
        (name = "upgrades", description = "Firmware upgrader: image types, device firmware, upgrade operations, mass upgrades"),
        (name = "system_update", description = "A device's npm.system_update 2.0 API, proxied over MQTT"),
        (name = "otao", description = "Over-the-air orchestrator (seed otao-api-v1): application software, endpoints' software, filters; errors are {\"message\"}"),
        (name = "oauth", description = "OAuth 2.0 client credentials for the OTAO API: the token endpoint and clients"),
        (name = "agent", description = "The openwisp-config agent's HTTP protocol (plain text, no token)"),
        (name = "health", description = "Liveness"),
        (name = "events", description = "Live events of the caller's organizations as server-sent events (the console's live views)")
    )
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The browser console's session (`/api/v1/users/session/`): every route takes it in
        // place of the bearer token; requests that change state add `X-CSRFToken`.
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("fleetmq_session"))),
        );
    }
}

/// Completes the document once every route is in it: the error answers each operation's
/// shape implies, and PATCH bodies shown with nothing required.
pub(crate) fn finish(openapi: &mut utoipa::openapi::OpenApi) {
    let mut patched = Vec::new();
    for item in openapi.paths.paths.values_mut() {
        if let Some(patch) = &mut item.patch {
            patched.extend(partial_body(patch));
            // A PATCH without a body changes nothing, and is answered as such.
            if let Some(body) = &mut patch.request_body {
                body.required = Some(Required::False);
            }
        }
        let put_id = item.put.as_ref().and_then(|put| put.operation_id.clone());
        if let Some(patch) = &mut item.patch {
            // One handler may serve PUT and PATCH; operation ids must still be unique.
            if patch.operation_id.is_some() && patch.operation_id == put_id {
                patch.operation_id = put_id.map(|id| format!("partial_{id}"));
            }
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            add_to_operation(operation);
        }
    }
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    for name in patched {
        let partial = format!("Patched{name}");
        if let Some(RefOr::T(Schema::Object(mut object))) = components.schemas.get(&name).cloned() {
            object.required.clear();
            components
                .schemas
                .insert(partial, RefOr::T(Schema::Object(object)));
        }
    }
}

/// Points a PATCH body at the `Patched…` form of its schema; returns the schema's name.
fn partial_body(operation: &mut Operation) -> Option<String> {
    let body = operation.request_body.as_mut()?;
    let content = body.content.get_mut("application/json")?;
    let Some(RefOr::Ref(reference)) = &content.schema else {
        return None;
    };
    let name = reference.ref_location.rsplit('/').next()?.to_owned();
    content.schema = Some(RefOr::Ref(Ref::from_schema_name(format!("Patched{name}"))));
    Some(name)
}

fn add_to_operation(operation: &mut Operation) {
    let params = operation.parameters.as_deref().unwrap_or_default();
    let names_object = params
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Path || p.name == "page");
    let checks_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    let needs_token = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let reads_body = operation.request_body.is_some();
    // Form-encoded bodies (the agent protocol) are never refused for their media type.
    let reads_form = operation.request_body.as_ref().is_some_and(|body| {
        body.content
            .keys()
            .all(|kind| kind == "application/x-www-form-urlencoded")
    });

    // The OTAO routes answer every error with `{"message"}`, as their seed specifies.
    let otao = operation
        .tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|t| t == "otao"));
    let mut add = |status: &str, description: &str, schema: &str| {
        let schema = if otao { "OtaoMessage" } else { schema };
        let responses = &mut operation.responses.responses;
        if !responses.contains_key(status) {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(Ref::from_schema_name(schema))))
                        .build(),
                )
                .build();
            responses.insert(status.to_owned(), RefOr::T(response));
        }
    };
    if reads_body || checks_query {
        add("400", "Invalid fields or query parameters", "FieldErrors");
    }
    if needs_token {
        add("401", "No token, or a wrong one", "ErrorDetail");
        add(
            "403",
            "No permission, or the caller manages no organization",
            "ErrorDetail",
        );
    }
    if names_object {
        add("404", "No such object visible to the caller", "ErrorDetail");
    }
    if reads_body {
        add("413", "Body too large", "ErrorDetail");
    }
    if reads_body && !reads_form {
        add("415", "Body is not JSON", "ErrorDetail");
    }
}
