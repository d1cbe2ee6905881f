//! The policies a route carries besides where it goes, as Istio builds them
//! (pilot/pkg/networking/core/route/route.go at istio 1.31: `TranslateFault`,
//! `TranslateCORSPolicy`, `TranslateHeadersOperations`; `.../route/retry/retry.go`
//! `ConvertPolicy`), and the duration and percentage forms they share. Each function names the
//! one it follows.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use crate::manifest::istio::{
    CorsPolicy, Headers, HttpFaultInjection, HttpRetry, Percent, StringMatch, parse_duration,
};

use super::matches::string_matcher;

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

/// A duration in Envoy's JSON form (`"1.5s"`), or an error naming the field.
pub(super) fn envoy_duration(text: &str, at: &str) -> Result<String> {
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

/// `translatePercentToFractionalPercent`: a share in millionths.
pub(super) fn fractional_percent_of(percent: &Percent) -> Value {
    json!({"numerator": (percent.value * 10000.0) as u32, "denominator": "MILLION"})
}

/// `ConvertPolicy` (retry.go): no `retries` is the default policy; `attempts: 0` none at all;
/// otherwise the default with the rule's fields, status codes in `retryOn` moved to
/// `retriable_status_codes`.
pub(super) fn convert_retry_policy(retries: Option<&HttpRetry>, at: &str) -> Result<Option<Value>> {
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

/// `TranslateFault`: a delay (a share of requests, in millionths, or the deprecated integer
/// percent) and an abort with its status, as the fault filter's per-route configuration.
pub(super) fn translate_fault(fault: &HttpFaultInjection, at: &str) -> Result<Value> {
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
pub(super) fn translate_cors_policy(cors: &CorsPolicy) -> Value {
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
pub(super) struct HeaderOperations {
    request_add: Vec<Value>,
    response_add: Vec<Value>,
    request_remove: Vec<String>,
    response_remove: Vec<String>,
    pub(super) authority: String,
}

impl HeaderOperations {
    /// Sets the four fields of `out` (a route, or a weighted cluster).
    pub(super) fn apply_to(&self, out: &mut Map<String, Value>) {
        for (key, values) in self.fields() {
            if values.as_array().is_none_or(Vec::is_empty) {
                out.remove(key);
            } else {
                out.insert(key.into(), values);
            }
        }
    }

    /// Appends to the four fields of `out`, after what the route set.
    pub(super) fn append_to(&self, out: &mut Map<String, Value>) {
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

pub(super) fn translate_headers_operations(headers: &Headers) -> HeaderOperations {
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
