//! One VirtualService's http rules → Envoy routes, as Istio's route builder does it
//! (pilot/pkg/networking/core/route/route.go at istio 1.31: `BuildHTTPRoutesForVirtualService`,
//! `TranslateRoute`, `TranslateRouteMatch`, `applyHTTPRouteDestination`, `ApplyRedirect`,
//! `ApplyDirectResponse`, `TranslateFault`, `TranslateCORSPolicy`, `TranslateHeadersOperations`,
//! `GetRouteOperation`; the retry policy from `.../route/retry/retry.go` `ConvertPolicy`).
//! Each function here names the one it follows. The output is Envoy's JSON form of the same
//! protobuf messages.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use base64::Engine;
use serde_json::{Map, Value, json};

use super::BoundVirtualService;
use super::upstream::Upstreams;
use crate::config::names::{INGRESS_GATEWAY_POD_LABELS, ISTIO_NAMESPACE};
use crate::manifest::istio::{
    CorsPolicy, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRoute,
    HttpRouteDestination, Percent, StringMatch, parse_duration,
};
use crate::manifest::istio::{Headers, HttpDirectResponse};

/// The API version in a route's `istio` metadata: Istio's internal version of VirtualService.
const VIRTUAL_SERVICE_VERSION: &str = "v1";
/// The default `retryOn` of Istio's retry policy (retry.go).
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// Istio's default retry policy for every HTTP route (`DefaultPolicy`, retry.go): two retries,
/// on another host, of connection failures. `retriable-status-codes` is listed with no status
/// code: since Istio 1.27 an upstream's 503 is not retried (the
/// `EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY` default of 1.24 became the only behaviour), and
/// neither is a request reset after it was sent (`reset` is not listed).
pub(crate) fn default_retry_policy() -> Value {
    json!({
        "retry_on": DEFAULT_RETRY_ON,
        "num_retries": 2,
        "retry_host_predicate": [previous_hosts_predicate()],
        "host_selection_retry_max_attempts": "5"
    })
}

fn previous_hosts_predicate() -> Value {
    json!({
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
        }
    })
}

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

/// `TranslateRouteMatch`: the uri (no uri, or `{}`, is the prefix `/`), `case_sensitive` always
/// set, header and `withoutHeaders` matchers sorted by name, then `:method`, `:authority` and
/// `:scheme`, then the query parameters.
pub(super) fn translate_route_match(matcher: Option<&HttpMatchRequest>) -> Value {
    let mut out = Map::new();
    out.insert("prefix".into(), json!("/"));
    let Some(m) = matcher else {
        return Value::Object(out);
    };
    let mut headers: Vec<Value> = Vec::new();
    for (name, string_match) in &m.headers {
        headers.push(translate_header_match(name, string_match));
    }
    for (name, string_match) in &m.without_headers {
        let mut header = translate_header_match(name, string_match);
        header["invert_match"] = json!(true);
        // `treat_missing_header_as_empty` conflicts with `present_match`.
        if !is_present_match(string_match) {
            header["treat_missing_header_as_empty"] = json!(true);
        }
        headers.push(header);
    }
    headers.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    match &m.uri {
        Some(StringMatch::Exact(path)) => {
            out.remove("prefix");
            out.insert("path".into(), json!(path));
        }
        Some(StringMatch::Prefix(prefix)) => {
            out.insert("prefix".into(), json!(prefix));
        }
        // RE2, matching the whole path. Envoy ignores `case_sensitive` for a regex, so with
        // ignoreUriCase a regex stays case-sensitive on a real gateway too.
        Some(StringMatch::Regex(regex)) => {
            out.remove("prefix");
            out.insert("safe_regex".into(), json!({"regex": regex}));
        }
        None | Some(StringMatch::Any) => {}
    }
    out.insert(
        "case_sensitive".into(),
        json!(m.ignore_uri_case != Some(true)),
    );
    for (name, string_match) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(string_match) = string_match {
            headers.push(translate_header_match(name, string_match));
        }
    }
    if !headers.is_empty() {
        out.insert("headers".into(), Value::Array(headers));
    }
    let query: Vec<Value> = m
        .query_params
        .iter()
        .map(|(name, string_match)| {
            if is_present_match(string_match) {
                json!({"name": name, "present_match": true})
            } else {
                json!({"name": name, "string_match": string_matcher(string_match)})
            }
        })
        .collect();
    if !query.is_empty() {
        out.insert("query_parameters".into(), Value::Array(query));
    }
    Value::Object(out)
}

/// `canBeConvertedToPresentMatch`: `{}`, or the regex `*` (not RE2: Istio's spelling of
/// "present", istio PR 20629).
fn is_present_match(string_match: &StringMatch) -> bool {
    match string_match {
        StringMatch::Any => true,
        StringMatch::Regex(regex) => regex == "*",
        StringMatch::Exact(_) | StringMatch::Prefix(_) => false,
    }
}

/// `ConvertToEnvoyMatch` (pilot/pkg/networking/util/util.go).
fn string_matcher(string_match: &StringMatch) -> Value {
    match string_match {
        StringMatch::Exact(value) => json!({"exact": value}),
        StringMatch::Prefix(value) => json!({"prefix": value}),
        StringMatch::Regex(value) => json!({"safe_regex": {"regex": value}}),
        StringMatch::Any => json!({}),
    }
}

/// `translateHeaderMatch`.
fn translate_header_match(name: &str, string_match: &StringMatch) -> Value {
    if is_present_match(string_match) {
        json!({"name": name, "present_match": true})
    } else {
        json!({"name": name, "string_match": string_matcher(string_match)})
    }
}

/// `IsCatchAllRoute`: the prefix `/` or the regex `.*`, with no header or query condition.
pub(super) fn is_catch_all(route: &Value) -> bool {
    let m = &route["match"];
    let path_takes_all = m["prefix"].as_str() == Some("/")
        || m.pointer("/safe_regex/regex").and_then(Value::as_str) == Some(".*");
    let empty = |key: &str| m[key].as_array().is_none_or(Vec::is_empty);
    path_takes_all && empty("headers") && empty("query_parameters")
}

/// `SortVHostRoutes`: catch-all routes move to the end, the others keep their order.
pub(super) fn sort_catch_alls_last(routes: Vec<Value>) -> Vec<Value> {
    let (catch_alls, others): (Vec<Value>, Vec<Value>) = routes.into_iter().partition(is_catch_all);
    others.into_iter().chain(catch_alls).collect()
}

/// A duration in Envoy's JSON form (`"1.5s"`), or an error naming the field.
fn envoy_duration(text: &str, at: &str) -> Result<String> {
    let duration = parse_duration(text).map_err(|err| anyhow::anyhow!("{at}: {err}"))?;
    Ok(format_duration(duration))
}

fn format_duration(duration: std::time::Duration) -> String {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        format!("{}s", duration.as_secs())
    } else {
        let fraction = format!("{nanos:09}");
        format!("{}.{}s", duration.as_secs(), fraction.trim_end_matches('0'))
    }
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

/// `translatePercentToFractionalPercent`: a share in millionths.
fn fractional_percent_of(percent: &Percent) -> Value {
    json!({"numerator": (percent.value * 10000.0) as u32, "denominator": "MILLION"})
}

/// `ConvertPolicy` (retry.go): no `retries` is the default policy; `attempts: 0` none at all;
/// otherwise the default with the rule's fields, status codes in `retryOn` moved to
/// `retriable_status_codes`.
fn convert_retry_policy(retries: Option<&HttpRetry>, at: &str) -> Result<Option<Value>> {
    let Some(retries) = retries else {
        return Ok(Some(default_retry_policy()));
    };
    if retries.attempts <= 0 {
        return Ok(None);
    }
    let mut out = default_retry_policy();
    out["num_retries"] = json!(retries.attempts);
    if let Some(retry_on) = retries.retry_on.as_deref().filter(|r| !r.is_empty()) {
        let mut policies = Vec::new();
        let mut codes = Vec::new();
        for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<u32>() {
                Ok(code) if crate::manifest::validation::is_known_status(code) => codes.push(code),
                _ => policies.push(part),
            }
        }
        let mut joined = policies.join(",");
        if !codes.is_empty() && !joined.contains("retriable-status-codes") {
            joined.push_str(",retriable-status-codes");
        }
        out["retry_on"] = json!(joined);
        if !codes.is_empty() {
            out["retriable_status_codes"] = json!(codes);
        }
    }
    if let Some(per_try) = &retries.per_try_timeout {
        out["per_try_timeout"] = json!(envoy_duration(per_try, &format!("{at}.perTryTimeout"))?);
    }
    match retries.retry_ignore_previous_hosts {
        Some(true) | None => {}
        Some(false) => {
            out.as_object_mut()
                .expect("an object")
                .remove("retry_host_predicate");
        }
    }
    if retries.retry_remote_localities == Some(true) {
        out["retry_priority"] = json!({
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 2
            }
        });
    }
    if let Some(backoff) = &retries.backoff {
        out["retry_back_off"] =
            json!({"base_interval": envoy_duration(backoff, &format!("{at}.backoff"))?});
    }
    Ok(Some(out))
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

/// `TranslateFault`: a delay (a share of requests, in millionths, or the deprecated integer
/// percent) and an abort with its status, as the fault filter's per-route configuration.
fn translate_fault(fault: &HttpFaultInjection, at: &str) -> Result<Value> {
    let mut out = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    });
    if let Some(delay) = &fault.delay {
        let percentage = match &delay.percentage {
            Some(p) => fractional_percent_of(p),
            None => json!({"numerator": delay.percent.unwrap_or(0), "denominator": "HUNDRED"}),
        };
        let Some(fixed) = &delay.fixed_delay else {
            bail!(
                "{at}.delay has no fixedDelay: Istio drops any other delay (exponentialDelay is \
                 not supported)"
            );
        };
        out["delay"] = json!({
            "fixed_delay": envoy_duration(fixed, &format!("{at}.delay.fixedDelay"))?,
            "percentage": percentage,
        });
    }
    if let Some(abort) = &fault.abort {
        let mut envoy_abort = Map::new();
        if let Some(p) = &abort.percentage {
            envoy_abort.insert("percentage".into(), fractional_percent_of(p));
        }
        match (&abort.http_status, &abort.grpc_status, &abort.http2_error) {
            (Some(status), None, None) => {
                if !(200..600).contains(status) {
                    bail!("{at}.abort.httpStatus {status} is not an HTTP status (200–599)");
                }
                envoy_abort.insert("http_status".into(), json!(status));
            }
            (None, Some(code), None) => {
                let Some(number) = grpc_status_number(code) else {
                    bail!("{at}.abort.grpcStatus `{code}` is not a gRPC status name");
                };
                envoy_abort.insert("grpc_status".into(), json!(number));
            }
            (None, None, Some(_)) => bail!(
                "{at}.abort.http2Error is not translated by Istio (only HTTP and gRPC aborts are)"
            ),
            _ => bail!("{at}.abort takes exactly one of httpStatus, grpcStatus or http2Error"),
        }
        out["abort"] = Value::Object(envoy_abort);
    }
    if fault.delay.is_none() && fault.abort.is_none() {
        bail!("{at} has neither delay nor abort");
    }
    Ok(out)
}

/// gRPC's status names and numbers (`SupportedGRPCStatus`, pkg/util/grpc).
fn grpc_status_number(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// `TranslateCORSPolicy`: origins as string matchers (or the deprecated exact list), lists
/// joined with `,`, max age in seconds, unmatched preflights forwarded unless `IGNORE`.
fn translate_cors_policy(cors: &CorsPolicy) -> Value {
    let mut out = Map::new();
    out.insert(
        "@type".into(),
        json!("type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"),
    );
    out.insert(
        "forward_not_matching_preflights".into(),
        json!(cors.unmatched_preflights.as_deref() != Some("IGNORE")),
    );
    let origins: Vec<Value> = if !cors.allow_origins.is_empty() {
        cors.allow_origins
            .iter()
            .filter(|m| **m != StringMatch::Any)
            .map(string_matcher)
            .collect()
    } else {
        cors.allow_origin
            .iter()
            .map(|o| json!({"exact": o}))
            .collect()
    };
    if !origins.is_empty() {
        out.insert("allow_origin_string_match".into(), Value::Array(origins));
    }
    out.insert(
        "filter_enabled".into(),
        json!({"default_value": {"numerator": 100, "denominator": "HUNDRED"}}),
    );
    if let Some(credentials) = cors.allow_credentials {
        out.insert("allow_credentials".into(), json!(credentials));
    }
    for (key, list) in [
        ("allow_headers", &cors.allow_headers),
        ("allow_methods", &cors.allow_methods),
        ("expose_headers", &cors.expose_headers),
    ] {
        if !list.is_empty() {
            out.insert(key.into(), json!(list.join(",")));
        }
    }
    if let Some(max_age) = &cors.max_age
        && let Ok(duration) = parse_duration(max_age)
    {
        out.insert("max_age".into(), json!(duration.as_secs().to_string()));
    }
    Value::Object(out)
}

/// Header operations in Envoy's form (`TranslateHeadersOperations`): `set` overwrites, `add`
/// appends, each sorted by name; pseudo-headers and `host` are dropped, and an `:authority` or
/// `host` value (the one in `set` first) becomes a host rewrite.
struct HeaderOperations {
    request_add: Vec<Value>,
    response_add: Vec<Value>,
    request_remove: Vec<String>,
    response_remove: Vec<String>,
    authority: String,
}

impl HeaderOperations {
    /// Sets the four fields of `out` (a route, or a weighted cluster).
    fn apply_to(&self, out: &mut Map<String, Value>) {
        for (key, values) in self.fields() {
            if values.as_array().is_none_or(Vec::is_empty) {
                out.remove(key);
            } else {
                out.insert(key.into(), values);
            }
        }
    }

    /// Appends to the four fields of `out`, after what the route set.
    fn append_to(&self, out: &mut Map<String, Value>) {
        for (key, values) in self.fields() {
            let Value::Array(values) = values else {
                continue;
            };
            if values.is_empty() {
                continue;
            }
            let entry = out.entry(key).or_insert_with(|| json!([]));
            if let Value::Array(existing) = entry {
                existing.extend(values);
            }
        }
    }

    fn fields(&self) -> [(&'static str, Value); 4] {
        [
            ("request_headers_to_add", json!(self.request_add)),
            ("response_headers_to_add", json!(self.response_add)),
            ("request_headers_to_remove", json!(self.request_remove)),
            ("response_headers_to_remove", json!(self.response_remove)),
        ]
    }
}

fn is_authority_header(key: &str) -> bool {
    key.eq_ignore_ascii_case(":authority") || key.eq_ignore_ascii_case("host")
}

fn is_internal_header(key: &str) -> bool {
    key.starts_with(':') || key.eq_ignore_ascii_case("host")
}

/// `translateAppendHeaders`: the operations of one map, sorted by name, and the authority it
/// sets, if any.
fn translate_append_headers(
    headers: &BTreeMap<String, String>,
    append: bool,
) -> (Vec<Value>, String) {
    let mut authority = String::new();
    let mut out = Vec::new();
    for (key, value) in headers {
        if is_authority_header(key) {
            authority = value.clone();
        }
        if is_internal_header(key) {
            continue;
        }
        let action = if append {
            "APPEND_IF_EXISTS_OR_ADD"
        } else {
            "OVERWRITE_IF_EXISTS_OR_ADD"
        };
        out.push(json!({"header": {"key": key, "value": value}, "append_action": action}));
    }
    (out, authority)
}

fn translate_headers_operations(headers: &Headers) -> HeaderOperations {
    let request = headers.request.clone().unwrap_or_default();
    let response = headers.response.clone().unwrap_or_default();
    let (mut request_add, set_authority) = translate_append_headers(&request.set, false);
    let (request_append, add_authority) = translate_append_headers(&request.add, true);
    request_add.extend(request_append);
    let (mut response_add, _) = translate_append_headers(&response.set, false);
    response_add.extend(translate_append_headers(&response.add, true).0);
    let drop_internal = |keys: &[String]| -> Vec<String> {
        keys.iter()
            .filter(|k| !is_internal_header(k))
            .cloned()
            .collect()
    };
    HeaderOperations {
        request_add,
        response_add,
        request_remove: drop_internal(&request.remove),
        response_remove: drop_internal(&response.remove),
        authority: if set_authority.is_empty() {
            add_authority
        } else {
            set_authority
        },
    }
}
