//! `/api/v1/applications/{appName}/software[/{version}]`: the seed's software catalogue.

use axum::Json;
use axum::extract::State;
use axum::http::header::{HOST, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetmq_store::{
    AbortThreshold, Action, FailureRate, FilterActivation, FilterId, Limit, OAuthScope, OrgId,
    Rollout, RolloutStrategy, Software, SoftwareFields, Waves, valid_app_name,
};
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{
    OtaoBody, OtaoCaller, OtaoError, OtaoPath, OtaoQuery, application_org, format_instant,
    parse_instant, writable_org,
};
use crate::AppState;

/// The software routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_software))
        .routes(routes!(get_software, create_software, update_software))
}

/// A filter of a targeted rollout and when it takes effect.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterView {
    /// The filter's id.
    pub filter_id: String,
    /// When its endpoints become eligible: `yyyy-MM-ddTHH:mm:ssZ`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_date: Option<String>,
}

/// fleetmq's extension: the rollout engine's limits for this version's installations.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutView {
    /// Devices installing at once at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Installations started per minute at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_minute: Option<u32>,
    /// Suspend the version's rollout once too many installations failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_threshold: Option<AbortThresholdView>,
}

/// When the engine suspends a rollout.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortThresholdView {
    /// Failed share of finished installations, above 0 and at most 1.
    pub failure_rate: f64,
    /// Finished installations before the rate counts.
    pub min_sample: u32,
}

/// A software version as the seed shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SoftwareView {
    /// Application name that software is attributed to.
    pub app_name: String,
    /// Semantic version, unique per application.
    pub version: String,
    /// Sent to the endpoint as is (any JSON).
    pub specification: Value,
    /// Any JSON.
    pub metadata: Value,
    /// Versions that can be upgraded to this one.
    pub upgradable_from: Vec<String>,
    /// `suspended`, `targeted` or `general`.
    pub rollout_strategy: String,
    /// The targeted strategy's filters.
    pub filters: Vec<FilterView>,
    /// fleetmq's extension: rollout limits (absent when none are set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

impl SoftwareView {
    /// The view of a stored version.
    pub fn of(software: &Software) -> Self {
        let fields = &software.fields;
        let rollout = &fields.rollout;
        let limits = RolloutView {
            max_parallel: rollout.max_parallel(),
            rate_per_minute: rollout.rate_per_minute(),
            abort_threshold: rollout.abort_threshold().map(|t| AbortThresholdView {
                failure_rate: t.failure_rate(),
                min_sample: t.min_sample(),
            }),
        };
        let any_limit = limits.max_parallel.is_some()
            || limits.rate_per_minute.is_some()
            || limits.abort_threshold.is_some();
        SoftwareView {
            app_name: software.app_name.clone(),
            version: software.version.to_string(),
            specification: fields.specification.clone(),
            metadata: fields.metadata.clone(),
            upgradable_from: fields
                .upgradable_from
                .iter()
                .map(Version::to_string)
                .collect(),
            rollout_strategy: fields.rollout_strategy.as_str().to_owned(),
            filters: fields
                .filters
                .iter()
                .map(|a| FilterView {
                    filter_id: a.filter.0.to_string(),
                    rollout_date: a.rollout_date.map(format_instant),
                })
                .collect(),
            rollout: any_limit.then_some(limits),
        }
    }
}

/// What a client sends to publish (POST) or change (PUT) a version. On PUT the
/// specification may be repeated but not changed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SoftwareWrite {
    /// Must equal the path's, when given.
    #[serde(default)]
    pub app_name: Option<String>,
    /// Must equal the path's, when given.
    #[serde(default)]
    pub version: Option<String>,
    /// Sent to the endpoint as is (any JSON); fixed once published.
    #[serde(default)]
    pub specification: Option<Value>,
    /// Any JSON.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Semantic versions that can be upgraded to this one.
    #[serde(default)]
    pub upgradable_from: Option<Vec<String>>,
    /// `suspended`, `targeted` or `general`.
    #[schema(value_type = String)]
    pub rollout_strategy: RolloutStrategy,
    /// The targeted strategy's filters (of the application's organization).
    #[serde(default)]
    pub filters: Option<Vec<FilterView>>,
    /// fleetmq's extension: rollout limits.
    #[serde(default)]
    pub rollout: Option<RolloutView>,
}

impl SoftwareWrite {
    /// The fields after this write; `org`'s filters are checked by the caller.
    fn fields(self, app: &str, version: &Version) -> Result<SoftwareFields, OtaoError> {
        if self.app_name.as_deref().is_some_and(|a| a != app) {
            return Err(OtaoError::bad_request(
                "appName in the body must equal the path's.",
            ));
        }
        if let Some(given) = &self.version {
            let same = Version::parse(given).is_ok_and(|v| v == *version);
            if !same {
                return Err(OtaoError::bad_request(
                    "version in the body must equal the path's.",
                ));
            }
        }
        let upgradable_from = self
            .upgradable_from
            .unwrap_or_default()
            .iter()
            .map(|v| {
                Version::parse(v).map_err(|_| {
                    OtaoError::bad_request(format!(
                        "upgradableFrom: \"{v}\" is not a semantic version."
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filters = self
            .filters
            .unwrap_or_default()
            .into_iter()
            .map(|f| {
                let filter = Uuid::parse_str(&f.filter_id).map(FilterId).map_err(|_| {
                    OtaoError::bad_request(format!(
                        "filters: \"{}\" is not a filter id.",
                        f.filter_id
                    ))
                })?;
                let rollout_date = match f.rollout_date {
                    None => None,
                    Some(text) => Some(parse_instant(&text).ok_or_else(|| {
                        OtaoError::bad_request(format!(
                            "filters: rolloutDate \"{text}\" is not yyyy-MM-ddTHH:mm:ssZ."
                        ))
                    })?),
                };
                Ok(FilterActivation {
                    filter,
                    rollout_date,
                })
            })
            .collect::<Result<Vec<_>, OtaoError>>()?;
        if self.rollout_strategy == RolloutStrategy::Targeted && filters.is_empty() {
            return Err(OtaoError::bad_request(
                "A targeted rollout needs at least one filter.",
            ));
        }
        Ok(SoftwareFields {
            specification: self.specification.unwrap_or(Value::Null),
            metadata: self.metadata.unwrap_or(Value::Null),
            upgradable_from,
            rollout_strategy: self.rollout_strategy,
            filters,
            rollout: rollout(self.rollout.unwrap_or_default())?,
        })
    }
}

fn rollout(view: RolloutView) -> Result<Rollout, OtaoError> {
    let limit = |name: &str, n: Option<u32>| {
        n.map(Limit::try_from)
            .transpose()
            .map_err(|e| OtaoError::bad_request(format!("rollout.{name}: {e}")))
    };
    let max_parallel = limit("maxParallel", view.max_parallel)?;
    let rate_per_minute = limit("ratePerMinute", view.rate_per_minute)?;
    let abort_threshold = match view.abort_threshold {
        None => None,
        Some(t) => {
            let rate = FailureRate::try_from(t.failure_rate).map_err(|e| {
                OtaoError::bad_request(format!("rollout.abortThreshold.failureRate: {e}"))
            })?;
            let sample = Limit::try_from(t.min_sample).map_err(|e| {
                OtaoError::bad_request(format!("rollout.abortThreshold.minSample: {e}"))
            })?;
            Some(AbortThreshold::new(rate, sample))
        }
    };
    Ok(Rollout::new(
        max_parallel,
        rate_per_minute,
        Waves::default(),
        abort_threshold,
    ))
}

/// Checks the application name and version of a path.
fn path_version(app: &str, version: &str) -> Result<Version, OtaoError> {
    if !valid_app_name(app) {
        return Err(OtaoError::bad_request(format!(
            "\"{app}\" is not an application name."
        )));
    }
    Version::parse(version)
        .map_err(|_| OtaoError::bad_request(format!("\"{version}\" is not a semantic version.")))
}

/// Every filter named must be one of `org`'s (400 otherwise).
async fn check_filters(
    state: &AppState,
    org: OrgId,
    fields: &SoftwareFields,
) -> Result<(), OtaoError> {
    let ids: Vec<FilterId> = fields.filters.iter().map(|a| a.filter).collect();
    let foreign = state
        .store()
        .run(move |db| {
            for id in ids {
                match db.filter(id)? {
                    Some(f) if f.fields.organization == org => {}
                    _ => return Ok(Some(id)),
                }
            }
            Ok(None)
        })
        .await?;
    match foreign {
        Some(id) => Err(OtaoError::bad_request(format!(
            "filters: \"{}\" is not a filter of the application's organization.",
            id.0
        ))),
        None => Ok(()),
    }
}

/// Returns software by application name, lowest version first.
#[utoipa::path(get, path = "/api/v1/applications/{appName}/software", tag = "otao",
    params(("appName" = String, Path, description = "Application name"),
        ("organization" = Option<Uuid>, Query, description = "Which organization's application (users with several)")),
    responses((status = 200, body = Vec<SoftwareView>)),
    security(("bearer" = ["application:software:read"])))]
async fn list_software(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(app): OtaoPath<String>,
    OtaoQuery(query): OtaoQuery,
) -> Result<Json<Vec<SoftwareView>>, OtaoError> {
    let scope = caller.allowed(OAuthScope::SoftwareRead, Action::View)?;
    let org = application_org(&state, &caller, &scope, &app, &query).await?;
    let name = app.clone();
    let list = state
        .store()
        .run(move |db| db.list_software(org, &name))
        .await?;
    if list.is_empty() {
        return Err(OtaoError::not_found(format!(
            "Application \"{app}\" not found."
        )));
    }
    Ok(Json(list.iter().map(SoftwareView::of).collect()))
}

async fn stored(
    state: &AppState,
    org: OrgId,
    app: &str,
    version: &Version,
) -> Result<Software, OtaoError> {
    let (name, v) = (app.to_owned(), version.clone());
    state
        .store()
        .run(move |db| db.software(org, &name, &v))
        .await?
        .ok_or_else(|| {
            OtaoError::not_found(format!(
                "Version {version} of application \"{app}\" not found."
            ))
        })
}

/// Returns software by application name and version.
#[utoipa::path(get, path = "/api/v1/applications/{appName}/software/{version}", tag = "otao",
    params(("appName" = String, Path, description = "Application name"),
        ("version" = String, Path, description = "Semantic version"),
        ("organization" = Option<Uuid>, Query, description = "Which organization's application (users with several)")),
    responses((status = 200, body = SoftwareView)),
    security(("bearer" = ["application:software:read"])))]
async fn get_software(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath((app, version)): OtaoPath<(String, String)>,
    OtaoQuery(query): OtaoQuery,
) -> Result<Json<SoftwareView>, OtaoError> {
    let scope = caller.allowed(OAuthScope::SoftwareRead, Action::View)?;
    let version = path_version(&app, &version)?;
    let org = application_org(&state, &caller, &scope, &app, &query).await?;
    let software = stored(&state, org, &app, &version).await?;
    Ok(Json(SoftwareView::of(&software)))
}

/// Publishes a version (the application is created with its first version).
#[utoipa::path(post, path = "/api/v1/applications/{appName}/software/{version}", tag = "otao",
    params(("appName" = String, Path, description = "Application name"),
        ("version" = String, Path, description = "Semantic version"),
        ("organization" = Option<Uuid>, Query, description = "Whose application (users with several organizations, for a new application)")),
    request_body = SoftwareWrite,
    responses((status = 201, description = "Created; `Location` names it")),
    security(("bearer" = ["application:software:update"])))]
async fn create_software(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath((app, version)): OtaoPath<(String, String)>,
    OtaoQuery(query): OtaoQuery,
    headers: HeaderMap,
    body: OtaoBody,
) -> Result<Response, OtaoError> {
    let scope = caller.allowed(OAuthScope::SoftwareUpdate, Action::Change)?;
    let version = path_version(&app, &version)?;
    let org = writable_org(&state, &caller, &scope, Some(&app), &query).await?;
    let fields = body.parse::<SoftwareWrite>()?.fields(&app, &version)?;
    check_filters(&state, org, &fields).await?;
    let (name, v) = (app.clone(), version.clone());
    let software = state
        .store()
        .run(move |db| db.create_software(org, &name, v, fields))
        .await?;
    state.hooks().software_changed(org);
    tracing::info!(app = %app, version = %software.version, org = %org.0, "software published");
    let path = format!("/api/v1/applications/{app}/software/{}", software.version);
    let location = match headers.get(HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}{path}"),
        None => path,
    };
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

/// Replaces a version's metadata, upgradableFrom, strategy, filters and rollout limits; its
/// specification never changes.
#[utoipa::path(put, path = "/api/v1/applications/{appName}/software/{version}", tag = "otao",
    params(("appName" = String, Path, description = "Application name"),
        ("version" = String, Path, description = "Semantic version"),
        ("organization" = Option<Uuid>, Query, description = "Which organization's application (users with several)")),
    request_body = SoftwareWrite,
    responses((status = 204, description = "Updated")),
    security(("bearer" = ["application:software:update"])))]
async fn update_software(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath((app, version)): OtaoPath<(String, String)>,
    OtaoQuery(query): OtaoQuery,
    body: OtaoBody,
) -> Result<StatusCode, OtaoError> {
    let scope = caller.allowed(OAuthScope::SoftwareUpdate, Action::Change)?;
    let version = path_version(&app, &version)?;
    let org = application_org(&state, &caller, &scope, &app, &query).await?;
    let current = stored(&state, org, &app, &version).await?;
    let write = body.parse::<SoftwareWrite>()?;
    if write
        .specification
        .as_ref()
        .is_some_and(|s| *s != current.fields.specification)
    {
        return Err(OtaoError::bad_request(
            "The specification of a published version cannot change.",
        ));
    }
    let mut fields = write.fields(&app, &version)?;
    fields.specification = current.fields.specification.clone();
    check_filters(&state, org, &fields).await?;
    let id = current.id;
    state
        .store()
        .run(move |db| db.update_software(id, fields))
        .await?;
    state.hooks().software_changed(org);
    Ok(StatusCode::NO_CONTENT)
}
