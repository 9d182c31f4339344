//! `/v1/services`: register, heartbeat, deregister and query instances.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::api::{self, WriteResponse};
use super::{body_error, json_body, namespace, ApiError, App, PathParams, QueryPairs};
use crate::core::{
    HealthStatus, InstanceId, Namespace, PickOptions, ServiceName, ServiceQuery, Strategy, ZonePreference,
};

type InstancePath = PathParams<(String, String, String)>;

fn parse_instance(
    (ns, service, instance): (String, String, String),
) -> Result<(crate::core::Namespace, ServiceName, InstanceId), ApiError> {
    Ok((
        namespace(&ns)?,
        ServiceName::new(service)?,
        InstanceId::new(instance)?,
    ))
}

/// `GET /v1/services/{ns}`: the service names registered in a namespace.
pub(crate) async fn names(
    State(app): State<App>,
    PathParams(ns): PathParams<String>,
) -> Result<Json<api::ServiceNames>, ApiError> {
    let ns = namespace(&ns)?;
    let names = app.node.service_names(&ns).await?;
    Ok(Json(api::ServiceNames {
        namespace: ns.as_str().to_string(),
        services: names.iter().map(|n| n.as_str().to_string()).collect(),
    }))
}

/// `GET /v1/services/{ns}/{service}?tag=T&tag=U&healthy=true`: instances
/// carrying every tag given, only the healthy ones if asked. With
/// `?pick=...`, the one instance a pick chooses (see [`pick`]).
pub(crate) async fn list(
    State(app): State<App>,
    PathParams((ns, service)): PathParams<(String, String)>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let ns = namespace(&ns)?;
    let service = ServiceName::new(service)?;
    if let Some(strategy) = q.get("pick") {
        return Ok(pick(&app, &ns, &service, strategy, &q).await?.into_response());
    }
    let query = ServiceQuery {
        tags: q.all("tag").map(str::to_string).collect::<BTreeSet<_>>(),
        healthy_only: q.flag("healthy")?,
    };
    let instances = app.node.services(&ns, &service, query).await?;
    let mut checks = app.node.check_statuses(Some(&ns));
    checks.retain(|c| c.service == service.as_str());
    Ok(Json(api::ServiceList {
        instances: instances
            .iter()
            .map(|v| {
                let mut i = api::ServiceInstance::from(v);
                // On the owner: the checks it runs for the instance.
                i.checks = checks
                    .iter()
                    .filter(|c| c.instance == i.instance)
                    .cloned()
                    .collect();
                i
            })
            .collect(),
        namespace: ns.as_str().to_string(),
        service: service.as_str().to_string(),
    })
    .into_response())
}

/// `GET /v1/services/{ns}/{service}?pick=random|round_robin|least_outstanding|hash&key=K&tag=T&zone=Z`:
/// one instance, chosen as [`NodeHandle::pick`](crate::node::NodeHandle::pick)
/// does. `zone` absent prefers this node's own `zone` tag, `zone=` (empty)
/// no zone. 400 for an unknown strategy or `hash` without `key`; 404 when no
/// instance is eligible.
async fn pick(
    app: &App,
    ns: &Namespace,
    service: &ServiceName,
    strategy: &str,
    q: &QueryPairs,
) -> Result<Json<api::ServiceInstance>, ApiError> {
    let strategy = Strategy::parse(strategy, q.get("key"))
        .map_err(|e| ApiError::bad_request("invalid_pick", e.to_string()))?;
    let mut options = PickOptions::new(strategy).with_zone(match q.get("zone") {
        None => ZonePreference::Local,
        Some("") => ZonePreference::Any,
        Some(z) => ZonePreference::Zone(z.to_string()),
    });
    options.tags = q.all("tag").map(str::to_string).collect();
    if let Some(picked) = app.node.pick(ns, service, options.clone()).await? {
        // The HTTP client does not report when its request ends: the pick
        // is not counted in flight past this answer.
        return Ok(Json(api::ServiceInstance::from(&picked.into_instance())));
    }
    let registered = app
        .node
        .services(ns, service, ServiceQuery::default())
        .await?
        .len();
    let ns_svc = format!("{}/{}", ns.as_str(), service.as_str());
    Err(ApiError::not_found(if registered == 0 {
        format!("no instance of {ns_svc} is registered")
    } else {
        let tags: Vec<&str> = options.tags.iter().map(String::as_str).collect();
        format!(
            "none of the {registered} instances of {ns_svc} is eligible: \
             none is passing or warning with weight > 0 and the tags {tags:?}"
        )
    }))
}

/// `PUT /v1/services/{ns}/{service}/{instance}` with a JSON
/// [`api::RegisterRequest`].
pub(crate) async fn register(
    State(app): State<App>,
    PathParams(path): InstancePath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WriteResponse>, ApiError> {
    let (ns, service, instance) = parse_instance(path)?;
    let request: Option<api::RegisterRequest> = json_body(&body.map_err(body_error)?)?;
    let request = request.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_body",
            "expected a JSON body {\"address\", \"port\", \"tags\", \"metadata\", \"weight\", \"ttl_ms\", \"checks\"}",
        )
    })?;
    let api::RegisterRequest { spec, checks } = request;
    spec.validate()
        .map_err(|e| ApiError::bad_request("invalid_spec", e))?;
    crate::node::validate_checks(&spec, &checks).map_err(|e| ApiError::bad_request("invalid_checks", e))?;
    if !app.node.http_command_checks() && checks.iter().any(|c| c.command.is_some()) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "command_checks_disabled",
            "command checks run programs on the node: this node accepts them over HTTP only with \
             `http_command_checks = true` in its config (service files may always use them)",
        ));
    }
    let written = app
        .node
        .register_service_with_checks(&ns, &service, &instance, spec, checks)
        .await?;
    Ok(Json((&written).into()))
}

/// `GET /v1/checks/{ns}`: the health checks this node runs for its
/// instances in a namespace, with their status and last output.
pub(crate) async fn checks(
    State(app): State<App>,
    PathParams(ns): PathParams<String>,
) -> Result<Json<api::CheckList>, ApiError> {
    let ns = namespace(&ns)?;
    Ok(Json(api::CheckList {
        checks: app.node.check_statuses(Some(&ns)),
        namespace: ns.as_str().to_string(),
    }))
}

/// `PUT /v1/services/{ns}/{service}/{instance}/heartbeat`, optionally with
/// `{"health": "passing" | "warning" | "critical"}` (default passing).
pub(crate) async fn heartbeat(
    State(app): State<App>,
    PathParams(path): InstancePath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<api::HeartbeatResponse>, ApiError> {
    let (ns, service, instance) = parse_instance(path)?;
    let body: Option<api::HeartbeatRequest> = json_body(&body.map_err(body_error)?)?;
    let health = body.and_then(|b| b.health);
    app.node
        .heartbeat_service(&ns, &service, &instance, health)
        .await?;
    Ok(Json(api::HeartbeatResponse {
        health: health.unwrap_or(HealthStatus::Passing),
        instance: instance.as_str().to_string(),
        namespace: ns.as_str().to_string(),
        service: service.as_str().to_string(),
    }))
}

/// `DELETE /v1/services/{ns}/{service}/{instance}`; 404 if not registered.
pub(crate) async fn deregister(
    State(app): State<App>,
    PathParams(path): InstancePath,
) -> Result<Json<WriteResponse>, ApiError> {
    let (ns, service, instance) = parse_instance(path)?;
    // The engine answers NotFound (404) for an unknown instance.
    let written = app.node.deregister_service(&ns, &service, &instance).await?;
    Ok(Json((&written).into()))
}
