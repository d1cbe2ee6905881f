//! One VirtualService's http rules → Envoy routes, as Istio's route builder does it
//! (pilot/pkg/networking/core/route/route.go at istio 1.31: `BuildHTTPRoutesForVirtualService`,
//! `TranslateRoute`, `applyHTTPRouteDestination`, `ApplyRedirect`, `ApplyDirectResponse`,
//! `GetRouteOperation`); the match is [`super::matches`]'s, the retry, fault, CORS and header
//! policies [`super::policies`]'. Each function here names the one it follows. The output is
//! Envoy's JSON form of the same protobuf messages.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use base64::Engine;
use serde_json::{Map, Value, json};

use super::BoundVirtualService;
use super::matches::{is_catch_all, translate_route_match};
use super::policies::{
    convert_retry_policy, envoy_duration, fractional_percent_of, translate_cors_policy,
    translate_fault, translate_headers_operations,
};
use super::upstream::Upstreams;
use crate::config::names::{INGRESS_GATEWAY_POD_LABELS, ISTIO_NAMESPACE};
use crate::manifest::istio::{
    HttpDirectResponse, HttpMatchRequest, HttpRedirect, HttpRoute, HttpRouteDestination,
};

/// The API version in a route's `istio` metadata: Istio's internal version of VirtualService.
const VIRTUAL_SERVICE_VERSION: &str = "v1";

/// What is being translated, for the routes and their errors.
struct Context<'a, 'u> {
    bound: &'a BoundVirtualService<'a>,
    listener_port: u32,
    gateway_names: &'a BTreeSet<String>,
    upstreams: &'a mut Upstreams<'u>,
}

/// `BuildHTTPRoutesForVirtualService`: each rule's matches in order, each its own route; a rule
/// without matches, or a match that takes every request, ends the list (nothing after it could
/// be reached). A rule or match that does not apply to this gateway (port, gateways, source
/// labels or namespace) adds no route.
pub(super) fn build_http_routes(
    bound: &BoundVirtualService,
    listener_port: u32,
    gateway_names: &BTreeSet<String>,
    upstreams: &mut Upstreams,
) -> Result<Vec<Value>> {
    let mut context = Context {
        bound,
        listener_port,
        gateway_names,
        upstreams,
    };
    if let Some(problem) = crate::manifest::validation::virtual_service_problems(bound.vs).first() {
        bail!(
            "VirtualService {}: {}: {}; Istio's webhook rejects the VirtualService, so none of \
             its routes would exist (`harness lint` lists every such problem)",
            bound.id,
            problem.field,
            problem.message
        );
    }
    let mut out = Vec::new();
    for (index, rule) in bound.vs.spec.http.iter().enumerate() {
        let at = format!("VirtualService {}: spec.http[{index}]", bound.id);
        refuse_untranslated(rule, &at)?;
        let mut catch_all = false;
        if rule.matches.is_empty() {
            if let Some(route) = translate_route(&mut context, rule, None, &at)? {
                out.push(route);
            }
            catch_all = true;
        } else {
            for (match_index, matcher) in rule.matches.iter().enumerate() {
                let match_at = format!("{at}.match[{match_index}]");
                if let Some(route) = translate_route(&mut context, rule, Some(matcher), &match_at)?
                {
                    let ends = is_catch_all(&route);
                    out.push(route);
                    if ends {
                        catch_all = true;
                        break;
                    }
                }
            }
        }
        if catch_all {
            break;
        }
    }
    Ok(out)
}

/// The fields Envoy cannot honour without istiod or filters the local gateway does not run.
fn refuse_untranslated(rule: &HttpRoute, at: &str) -> Result<()> {
    if rule.delegate.is_some() {
        bail!(
            "{at}.delegate is not translated by the local gateway (a delegate VirtualService is \
             merged by istiod)"
        );
    }
    for (index, matcher) in rule.matches.iter().enumerate() {
        for name in matcher.headers.keys().chain(matcher.without_headers.keys()) {
            if name.starts_with("@request.auth.claims") {
                bail!(
                    "{at}.match[{index}] header `{name}` matches a JWT claim, which needs a \
                     RequestAuthentication and Envoy's jwt_authn filter; the local gateway runs \
                     neither"
                );
            }
        }
    }
    Ok(())
}

/// `sourceMatchHTTP`: a match's `gateways` must name this gateway; otherwise its
/// `sourceLabels` must be labels of the gateway's pods and its `sourceNamespace` their namespace.
fn applies_to_gateway(matcher: &HttpMatchRequest, context: &Context) -> bool {
    if !matcher.gateways.is_empty() {
        return matcher.gateways.iter().any(|g| {
            context
                .gateway_names
                .contains(&crate::manifest::hosts::resolve_gateway_name(
                    g,
                    &context.bound.namespace,
                ))
        });
    }
    let labels_match = matcher.source_labels.iter().all(|(k, v)| {
        INGRESS_GATEWAY_POD_LABELS
            .iter()
            .any(|(lk, lv)| lk == k && lv == v)
    });
    labels_match
        && matcher
            .source_namespace
            .as_deref()
            .is_none_or(|ns| ns.is_empty() || ns == ISTIO_NAMESPACE)
}

/// `TranslateRoute`: one rule and one of its matches → one Envoy route, or `None` when the match
/// does not apply to this gateway.
fn translate_route(
    context: &mut Context,
    rule: &HttpRoute,
    matcher: Option<&HttpMatchRequest>,
    at: &str,
) -> Result<Option<Value>> {
    if let Some(m) = matcher {
        if m.port.is_some_and(|p| p != 0 && p != context.listener_port) {
            return Ok(None);
        }
        if !applies_to_gateway(m, context) {
            return Ok(None);
        }
    }
    let mut name = rule.name.clone().unwrap_or_default();
    if let Some(match_name) = matcher
        .and_then(|m| m.name.as_deref())
        .filter(|n| !n.is_empty())
    {
        name = format!("{name}.{match_name}");
    }
    let bound = context.bound;
    let mut out = Map::new();
    if !name.is_empty() {
        out.insert("name".into(), json!(name));
    }
    out.insert("match".into(), translate_route_match(matcher));
    out.insert(
        "metadata".into(),
        json!({"filter_metadata": {"istio": {"config": format!(
            "/apis/networking.istio.io/{VIRTUAL_SERVICE_VERSION}/namespaces/{}/virtual-service/{}",
            bound.namespace,
            bound.vs.metadata.name.as_deref().unwrap_or_default()
        )}}}),
    );
    if let Some(prefix) = matcher
        .and_then(|m| m.stat_prefix.as_deref())
        .filter(|p| !p.is_empty())
    {
        out.insert("stat_prefix".into(), json!(prefix));
    }
    let mut authority = String::new();
    if let Some(headers) = &rule.headers {
        let operations = translate_headers_operations(headers);
        operations.apply_to(&mut out);
        authority = operations.authority;
    }
    if let Some(redirect) = &rule.redirect {
        out.insert(
            "redirect".into(),
            apply_redirect(redirect, context.listener_port, &format!("{at}.redirect"))?,
        );
    } else if let Some(direct) = &rule.direct_response {
        out.insert(
            "direct_response".into(),
            apply_direct_response(direct, &format!("{at}.directResponse"))?,
        );
    } else {
        let action = apply_route_destination(context, rule, &mut out, authority, at)?;
        out.insert("route".into(), action);
    }
    let operation = route_operation(
        &out,
        bound.vs.metadata.name.as_deref().unwrap_or_default(),
        context.listener_port,
    );
    out.insert("decorator".into(), json!({"operation": operation}));
    let mut per_filter = Map::new();
    if let Some(fault) = &rule.fault {
        per_filter.insert(
            "envoy.filters.http.fault".into(),
            translate_fault(fault, &format!("{at}.fault"))?,
        );
    }
    if let Some(cors) = &rule.cors_policy {
        per_filter.insert(
            "envoy.filters.http.cors".into(),
            translate_cors_policy(cors),
        );
    }
    if !per_filter.is_empty() {
        out.insert("typed_per_filter_config".into(), Value::Object(per_filter));
    }
    Ok(Some(Value::Object(out)))
}

/// `applyHTTPRouteDestination`: the route action. No timeout unless the rule sets one (and the
/// same for gRPC's `grpc-timeout`, `setTimeout`); rewrites; mirrors; the retry policy; one
/// cluster, or weighted clusters without the zero weights.
fn apply_route_destination(
    context: &mut Context,
    rule: &HttpRoute,
    out: &mut Map<String, Value>,
    mut authority: String,
    at: &str,
) -> Result<Value> {
    let mut action = Map::new();
    let timeout = match &rule.timeout {
        Some(text) => envoy_duration(text, &format!("{at}.timeout"))?,
        None => "0s".to_string(),
    };
    action.insert("timeout".into(), json!(timeout));
    // Istio still sets the deprecated field: its replacement has regressions (route.go).
    action.insert("max_grpc_timeout".into(), json!(timeout));
    if let Some(rewrite) = &rule.rewrite {
        if let Some(regex) = &rewrite.uri_regex_rewrite {
            action.insert(
                "regex_rewrite".into(),
                json!({"pattern": {"regex": regex.pattern}, "substitution": regex.rewrite}),
            );
        } else if let Some(uri) = rewrite.uri.as_deref().filter(|u| !u.is_empty()) {
            action.insert("prefix_rewrite".into(), json!(uri));
        }
        if let Some(rewritten) = rewrite.authority.as_deref().filter(|a| !a.is_empty()) {
            authority = rewritten.to_string();
        }
    }
    if !authority.is_empty() {
        action.insert("host_rewrite_literal".into(), json!(authority));
    }
    let vs_ns = context.bound.namespace.clone();
    let port = context.listener_port;
    let mut mirrors = Vec::new();
    if let Some(mirror) = &rule.mirror
        && let Some(fraction) = mirror_percent(rule)
    {
        let cluster =
            context
                .upstreams
                .cluster_for(mirror, &vs_ns, port, &format!("{at}.mirror"))?;
        mirrors.push(mirror_policy(cluster, fraction));
    }
    for (index, policy) in rule.mirrors.iter().enumerate() {
        let fraction = match &policy.percentage {
            Some(p) if p.value > 0.0 => Some(fractional_percent_of(p)),
            Some(_) => None,
            None => Some(json!({"numerator": 100, "denominator": "HUNDRED"})),
        };
        if let (Some(destination), Some(fraction)) = (&policy.destination, fraction) {
            let cluster = context.upstreams.cluster_for(
                destination,
                &vs_ns,
                port,
                &format!("{at}.mirrors[{index}].destination"),
            )?;
            mirrors.push(mirror_policy(cluster, fraction));
        }
    }
    if !mirrors.is_empty() {
        action.insert("request_mirror_policies".into(), Value::Array(mirrors));
    }
    match rule.route.as_slice() {
        [one] => {
            let cluster = context.upstreams.cluster_for(
                &one.destination,
                &vs_ns,
                port,
                &format!("{at}.route[0].destination"),
            )?;
            action.insert("cluster".into(), json!(cluster));
            if let Some(headers) = &one.headers {
                let operations = translate_headers_operations(headers);
                operations.append_to(out);
                if !operations.authority.is_empty() && !action.contains_key("host_rewrite_literal")
                {
                    action.insert("host_rewrite_literal".into(), json!(operations.authority));
                }
            }
        }
        many => {
            let mut weighted = Vec::new();
            for (index, destination) in many.iter().enumerate() {
                let weight = destination.weight.unwrap_or(0);
                if weight < 0 {
                    bail!(
                        "{at}.route[{index}].weight is {weight}: Istio's validation rejects a negative weight"
                    );
                }
                if weight == 0 {
                    continue;
                }
                weighted.push(weighted_cluster(
                    context,
                    destination,
                    weight,
                    &vs_ns,
                    &format!("{at}.route[{index}]"),
                )?);
            }
            if weighted.is_empty() {
                bail!(
                    "{at}.route has {} destinations and none with a weight above 0: Istio's \
                     validation rejects a total weight of 0",
                    many.len()
                );
            }
            action.insert("weighted_clusters".into(), json!({"clusters": weighted}));
        }
    }
    if let Some(policy) = convert_retry_policy(rule.retries.as_ref(), &format!("{at}.retries"))? {
        action.insert("retry_policy".into(), policy);
    }
    Ok(Value::Object(action))
}

/// `processWeightedDestination`: a weighted cluster with its own header operations.
fn weighted_cluster(
    context: &mut Context,
    destination: &HttpRouteDestination,
    weight: i32,
    vs_ns: &str,
    at: &str,
) -> Result<Value> {
    let cluster = context.upstreams.cluster_for(
        &destination.destination,
        vs_ns,
        context.listener_port,
        &format!("{at}.destination"),
    )?;
    let mut out = Map::new();
    out.insert("name".into(), json!(cluster));
    out.insert("weight".into(), json!(weight));
    if let Some(headers) = &destination.headers {
        let operations = translate_headers_operations(headers);
        operations.apply_to(&mut out);
        if !operations.authority.is_empty() {
            out.insert("host_rewrite_literal".into(), json!(operations.authority));
        }
    }
    Ok(Value::Object(out))
}

fn mirror_policy(cluster: String, fraction: Value) -> Value {
    json!({
        "cluster": cluster,
        "runtime_fraction": {"default_value": fraction},
        "trace_sampled": false,
        // DISABLE_SHADOW_HOST_SUFFIX defaults to true (pilot/pkg/features/pilot.go).
        "disable_shadow_host_suffix_append": true,
    })
}

/// `MirrorPercent`: `mirrorPercentage`, else the deprecated `mirrorPercent`, else all; an
/// explicit zero mirrors nothing.
fn mirror_percent(rule: &HttpRoute) -> Option<Value> {
    match (&rule.mirror_percentage, rule.mirror_percent) {
        (Some(p), _) => (p.value > 0.0).then(|| fractional_percent_of(p)),
        (None, Some(p)) => (p > 0).then(|| json!({"numerator": p, "denominator": "HUNDRED"})),
        (None, None) => Some(json!({"numerator": 100, "denominator": "HUNDRED"})),
    }
}

/// `ApplyRedirect`: Envoy's redirect action; the port only when the rule sets one, dropped when
/// it is the scheme's default; `FROM_REQUEST_PORT` is the gateway server's port.
fn apply_redirect(redirect: &HttpRedirect, listener_port: u32, at: &str) -> Result<Value> {
    let mut out = Map::new();
    if let Some(authority) = redirect.authority.as_deref().filter(|a| !a.is_empty()) {
        out.insert("host_redirect".into(), json!(authority));
    }
    match redirect.prefix_rewrite.as_deref().filter(|p| !p.is_empty()) {
        Some(prefix) => {
            out.insert("prefix_rewrite".into(), json!(prefix));
        }
        None => {
            out.insert(
                "path_redirect".into(),
                json!(redirect.uri.clone().unwrap_or_default()),
            );
        }
    }
    if let Some(scheme) = redirect.scheme.as_deref().filter(|s| !s.is_empty()) {
        out.insert("scheme_redirect".into(), json!(scheme));
    }
    let port = match (redirect.port, redirect.derive_port.as_deref()) {
        (Some(port), _) => Some(port),
        (None, Some("FROM_REQUEST_PORT")) => Some(listener_port),
        (None, Some("FROM_PROTOCOL_DEFAULT")) => Some(0),
        (None, Some(other)) => bail!(
            "{at}.derivePort `{other}` is neither FROM_PROTOCOL_DEFAULT nor FROM_REQUEST_PORT"
        ),
        (None, None) => None,
    };
    if let Some(port) = port {
        // The local gateway's server is plain HTTP: the scheme is `http` unless the rule says.
        let scheme = redirect
            .scheme
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("http");
        let default_port = (port == 80 && scheme == "http") || (port == 443 && scheme == "https");
        if port != 0 && !default_port {
            out.insert("port_redirect".into(), json!(port));
        }
    }
    let code = match redirect.redirect_code.unwrap_or(0) {
        0 | 301 => "MOVED_PERMANENTLY",
        302 => "FOUND",
        303 => "SEE_OTHER",
        307 => "TEMPORARY_REDIRECT",
        308 => "PERMANENT_REDIRECT",
        other => bail!(
            "{at}.redirectCode {other} is not a redirect Envoy can send (301, 302, 303, 307 or \
             308); Istio's validation rejects it"
        ),
    };
    out.insert("response_code".into(), json!(code));
    Ok(Value::Object(out))
}

/// `ApplyDirectResponse`: the status and an inline body.
fn apply_direct_response(direct: &HttpDirectResponse, at: &str) -> Result<Value> {
    if !(200..=599).contains(&direct.status) {
        bail!(
            "{at}.status {} is not an HTTP status Envoy can send",
            direct.status
        );
    }
    let mut out = json!({"status": direct.status});
    if let Some(body) = &direct.body {
        match (&body.string, &body.bytes) {
            (Some(text), None) => out["body"] = json!({"inline_string": text}),
            (None, Some(bytes)) => {
                base64::engine::general_purpose::STANDARD
                    .decode(bytes)
                    .map_err(|err| anyhow::anyhow!("{at}.body.bytes is not base64: {err}"))?;
                out["body"] = json!({"inline_bytes": bytes});
            }
            (None, None) => {}
            (Some(_), Some(_)) => bail!("{at}.body takes one of `string` or `bytes`, not both"),
        }
    }
    Ok(out)
}

/// `GetRouteOperation`: `<host>:<port><path>` for a route to one cluster, else
/// `<VirtualService name>:<listener port><path>`, the path read from the match.
fn route_operation(route: &Map<String, Value>, vs_name: &str, listener_port: u32) -> String {
    let m = &route["match"];
    let path = if let Some(prefix) = m["prefix"].as_str() {
        format!("{prefix}*")
    } else if let Some(path) = m["path"].as_str() {
        path.to_string()
    } else if let Some(regex) = m.pointer("/safe_regex/regex").and_then(Value::as_str) {
        regex.to_string()
    } else {
        "/*".to_string()
    };
    let cluster = route
        .get("route")
        .and_then(|action| action["cluster"].as_str());
    if let Some(cluster) = cluster {
        let parts: Vec<&str> = cluster.split('|').collect();
        if let [_, port, _, host] = parts.as_slice() {
            return format!("{host}:{port}{path}");
        }
    }
    format!("{vs_name}:{listener_port}{path}")
}
