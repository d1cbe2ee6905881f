//! A VirtualService match → Envoy's route match, as Istio's `TranslateRouteMatch` and its
//! helpers build it (pilot/pkg/networking/core/route/route.go at istio 1.31), and which routes
//! take every request (`IsCatchAllRoute`, `SortVHostRoutes`).

use serde_json::{Map, Value, json};

use crate::manifest::istio::{HttpMatchRequest, StringMatch};

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
pub(super) fn string_matcher(string_match: &StringMatch) -> Value {
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
