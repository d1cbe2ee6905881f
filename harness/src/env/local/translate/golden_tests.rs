//! Golden tests: for each construct, the Envoy configuration Istio's gateway generates, taken
//! from Istio's own tests or source (istio 1.31.0-rc.0; each case names the file and the
//! function or subtest), against what the translation produces. Route fields that a case does
//! not concern (metadata, decorator, retry policy) are checked once, in the first case.

use std::path::Path;

use rstest::rstest;
use serde_json::{Value, json};

use super::{GatewayPlan, default_retry_policy, plan};
use crate::manifest::load_str;

/// A Service and a Deployment of the service, named `name`, with one port.
fn backend(name: &str, port: u32) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {port}, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: "fft-service:0.1.0", ports: [{{containerPort: 8080}}]}}]
"#
    )
}

fn gateway(name: &str, hosts: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: {hosts}}}]
"#
    )
}

fn virtual_service(name: &str, hosts: &str, gateways: &str, http: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http:
{http}
"#
    )
}

fn plan_of(documents: &[String]) -> GatewayPlan {
    let text = documents.join("\n---\n");
    let docs = load_str(Path::new("golden.yaml"), &text).unwrap();
    plan(&docs).unwrap()
}

fn plan_error(documents: &[String]) -> String {
    let text = documents.join("\n---\n");
    let docs = load_str(Path::new("golden.yaml"), &text).unwrap();
    format!("{:#}", plan(&docs).unwrap_err())
}

/// The routes of one VirtualService `vs` on `*`, with the Services `v1` (port 80) and `v2`
/// (port 80) behind it.
fn routes(http: &str) -> Vec<Value> {
    let plan = plan_of(&[
        backend("v1", 80),
        backend("v2", 80),
        gateway("gw", "['*']"),
        virtual_service("vs", "['*']", "[gw]", http),
    ]);
    assert_eq!(plan.virtual_hosts.len(), 1, "{:?}", plan.virtual_hosts);
    plan.virtual_hosts[0].routes.clone()
}

fn only_route(http: &str) -> Value {
    let routes = routes(http);
    assert_eq!(routes.len(), 1, "{routes:#?}");
    routes[0].clone()
}

const V1: &str = "outbound|80||v1.shop.svc.cluster.local";
const V2: &str = "outbound|80||v2.shop.svc.cluster.local";
const TO_V1: &str = "      route: [{destination: {host: v1}}]";

/// The whole route for the tutorial's kind of rule: `TranslateRoute` (route.go) sets the name,
/// the match with `case_sensitive`, the config metadata (`BuildConfigInfoMetadata`), a route
/// action with no timeout (`setTimeout`: `timeout` and the deprecated `max_grpc_timeout` 0s) and
/// the default retry policy (`ConvertPolicy(nil)`), and the decorator `GetRouteOperation` builds
/// from the cluster's host and port and the match's path.
#[test]
fn a_prefix_route_is_istios_route_field_by_field() {
    let route = only_route(&format!(
        "    - name: fft\n      match: [{{uri: {{prefix: /fft}}}}]\n{TO_V1}"
    ));
    assert_eq!(
        route,
        json!({
            "name": "fft",
            "match": {"prefix": "/fft", "case_sensitive": true},
            "metadata": {"filter_metadata": {"istio": {
                "config": "/apis/networking.istio.io/v1/namespaces/shop/virtual-service/vs"
            }}},
            "route": {
                "cluster": V1,
                "timeout": "0s",
                "max_grpc_timeout": "0s",
                "retry_policy": default_retry_policy(),
            },
            "decorator": {"operation": "v1.shop.svc.cluster.local:80/fft*"},
        })
    );
}

/// route.go `TranslateRoute`: `routeName + "." + match.Name`, so a match name without a rule
/// name starts with a dot; route_test.go `TestBuildHTTPRoutes` "for virtual service with catch
/// all route" expects `route.non-catch-all` and `route.catch-all`.
#[test]
fn route_names_join_rule_and_match_names() {
    let http = format!(
        "    - name: route\n      match: [{{name: non-catch-all, uri: {{prefix: /route/v1}}}}, {{name: catch-all, uri: {{prefix: /}}}}]\n{TO_V1}\n    - match: [{{name: only-match, uri: {{exact: /x}}}}]\n{TO_V1}"
    );
    let names: Vec<Value> = routes(&http).iter().map(|r| r["name"].clone()).collect();
    // The catch-all ends the list (`BuildHTTPRoutesForVirtualService`): the third is never built.
    assert_eq!(
        names,
        [json!("route.non-catch-all"), json!("route.catch-all")]
    );
    let dotted = only_route(&format!(
        "    - match: [{{name: only-match, uri: {{exact: /x}}}}]\n{TO_V1}"
    ));
    assert_eq!(dotted["name"], ".only-match");
}

#[rstest]
// route.go `TranslateRouteMatch`; route_test.go "for virtual service with regex matching on URI".
#[case::exact("{uri: {exact: /metrics}}", json!({"path": "/metrics", "case_sensitive": true}))]
#[case::regex("{uri: {regex: '\\/(.?)\\/status'}}", json!({"prefix": null, "safe_regex": {"regex": "\\/(.?)\\/status"}, "case_sensitive": true}))]
#[case::empty_uri_is_everything("{uri: {}}", json!({"prefix": "/", "case_sensitive": true}))]
#[case::ignore_uri_case("{uri: {prefix: /FFT}, ignoreUriCase: true}", json!({"prefix": "/FFT", "case_sensitive": false}))]
// Headers sorted by name, then :method, :authority, :scheme in that order.
#[case::headers_sorted_then_pseudo_headers(
    "{headers: {x-b: {exact: b}, x-a: {prefix: a}}, method: {exact: POST}, authority: {regex: 'fft\\..*'}, scheme: {exact: http}}",
    json!({"prefix": "/", "case_sensitive": true, "headers": [
        {"name": "x-a", "string_match": {"prefix": "a"}},
        {"name": "x-b", "string_match": {"exact": "b"}},
        {"name": ":method", "string_match": {"exact": "POST"}},
        {"name": ":authority", "string_match": {"safe_regex": {"regex": "fft\\..*"}}},
        {"name": ":scheme", "string_match": {"exact": "http"}},
    ]})
)]
// route_test.go "for virtual service with presence matching on header": `{}` is a presence
// match (`canBeConvertedToPresentMatch`, as is the regex `*`, which the webhook allows only in
// withoutHeaders); the header name keeps its case.
#[case::present_header(
    "{headers: {FOO-HEADER: {}}, withoutHeaders: {x-star: {regex: '*'}}}",
    json!({"prefix": "/", "case_sensitive": true, "headers": [
        {"name": "FOO-HEADER", "present_match": true},
        {"name": "x-star", "present_match": true, "invert_match": true},
    ]})
)]
// route_test.go "for virtual service with regex matching on without_header": inverted, with a
// missing header read as empty; "... presence matching on header and without_header": a presence
// match is inverted without that flag.
#[case::without_headers(
    "{withoutHeaders: {x-bar: {regex: 'BAR .+?'}, x-gone: {}}}",
    json!({"prefix": "/", "case_sensitive": true, "headers": [
        {"name": "x-bar", "string_match": {"safe_regex": {"regex": "BAR .+?"}}, "invert_match": true, "treat_missing_header_as_empty": true},
        {"name": "x-gone", "present_match": true, "invert_match": true},
    ]})
)]
// route_test.go "... exact / prefix / regex matching on query parameter" and "... for all
// cases on query parameter" (present).
#[case::query_params(
    "{queryParams: {a: {exact: foo}, b: {prefix: foo-}, c: {regex: 'BAR .+?'}, token: {}}}",
    json!({"prefix": "/", "case_sensitive": true, "query_parameters": [
        {"name": "a", "string_match": {"exact": "foo"}},
        {"name": "b", "string_match": {"prefix": "foo-"}},
        {"name": "c", "string_match": {"safe_regex": {"regex": "BAR .+?"}}},
        {"name": "token", "present_match": true},
    ]})
)]
fn matches_are_translated_as_istio_does(#[case] matcher: &str, #[case] expected: Value) {
    let route = only_route(&format!("    - match: [{matcher}]\n{TO_V1}"));
    let mut expected = expected;
    expected
        .as_object_mut()
        .unwrap()
        .retain(|_, v| !v.is_null());
    assert_eq!(route["match"], expected);
}

/// route.go `TranslateRoute`: a match whose `port` is not the listener's, or whose `gateways`
/// do not name this gateway, or whose `sourceLabels` are not the gateway pod's (`sourceMatchHTTP`)
/// adds no route; route_test.go "for virtual service with catch all route：port match".
#[test]
fn matches_for_other_ports_gateways_or_sources_add_no_route() {
    let http = format!(
        "    - match: [{{port: 8080, uri: {{prefix: /a}}}}, {{gateways: [other], uri: {{prefix: /b}}}}, {{sourceLabels: {{app: reviews}}, uri: {{prefix: /c}}}}, {{port: 80, uri: {{prefix: /d}}}}, {{gateways: [gw], sourceNamespace: istio-system, uri: {{prefix: /e}}}}, {{sourceLabels: {{istio.io/rev: default, istio: ingressgateway}}, uri: {{prefix: /f}}}}]\n{TO_V1}"
    );
    let prefixes: Vec<Value> = routes(&http)
        .iter()
        .map(|r| r["match"]["prefix"].clone())
        .collect();
    assert_eq!(prefixes, [json!("/d"), json!("/e"), json!("/f")]);
}

/// route_test.go "for virtual service with timeout": the route's timeout, and the same for
/// gRPC's header (`setTimeout`); Go's and protobuf's duration forms both read.
#[rstest]
#[case("10s", "10s")]
#[case("0.5s", "0.5s")]
#[case("1m30s", "90s")]
#[case("250ms", "0.25s")]
fn a_timeout_bounds_the_route(#[case] timeout: &str, #[case] envoy: &str) {
    let route = only_route(&format!("{TO_V1}\n      timeout: {timeout}").replacen(
        "      route",
        "    - route",
        1,
    ));
    assert_eq!(route["route"]["timeout"], envoy);
    assert_eq!(route["route"]["max_grpc_timeout"], envoy);
}

/// retry.go `ConvertPolicy` (retry_test.go `TestRetry`): the default with the rule's attempts;
/// status codes in `retryOn` move to `retriable_status_codes` and add `retriable-status-codes`;
/// `retryIgnorePreviousHosts: false` drops the host predicate; `attempts: 0` disables retries.
#[test]
fn explicit_retries_follow_convert_policy() {
    let with = |retries: &str| {
        only_route(&format!("    - retries: {retries}\n{TO_V1}"))["route"]["retry_policy"].clone()
    };
    assert_eq!(
        with("{attempts: 3, perTryTimeout: 2s, retryOn: '5xx,503,gateway-error'}"),
        json!({
            "retry_on": "5xx,gateway-error,retriable-status-codes",
            "retriable_status_codes": [503],
            "num_retries": 3,
            "per_try_timeout": "2s",
            "retry_host_predicate": default_retry_policy()["retry_host_predicate"],
            "host_selection_retry_max_attempts": "5",
        })
    );
    let no_predicate = with("{attempts: 1, retryIgnorePreviousHosts: false, backoff: 100ms}");
    assert!(
        no_predicate.get("retry_host_predicate").is_none(),
        "{no_predicate}"
    );
    assert_eq!(
        no_predicate["retry_back_off"],
        json!({"base_interval": "0.1s"})
    );
    assert_eq!(no_predicate["retry_on"], default_retry_policy()["retry_on"]);
    let disabled = only_route(&format!("    - retries: {{attempts: 0}}\n{TO_V1}"));
    assert!(
        disabled["route"].get("retry_policy").is_none(),
        "{disabled}"
    );
}

/// route_test.go "for header operations for weighted cluster" and route.go
/// `processWeightedDestination`: each destination its weight and header operations; a zero
/// weight is left out; the decorator names the VirtualService, not a host (`GetRouteOperation`).
#[test]
fn weighted_destinations_become_weighted_clusters() {
    let http = "    - route:\n      - {destination: {host: v1}, weight: 90, headers: {response: {set: {x-version: v1}}}}\n      - {destination: {host: v2}, weight: 10, headers: {request: {add: {x-canary: 'yes'}}}}\n      - {destination: {host: v2, port: {number: 80}}, weight: 0}";
    let route = only_route(http);
    assert_eq!(
        route["route"]["weighted_clusters"],
        json!({"clusters": [
            {"name": V1, "weight": 90, "response_headers_to_add": [
                {"header": {"key": "x-version", "value": "v1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]},
            {"name": V2, "weight": 10, "request_headers_to_add": [
                {"header": {"key": "x-canary", "value": "yes"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}]},
        ]})
    );
    assert!(route["route"].get("cluster").is_none());
    assert_eq!(route["decorator"]["operation"], "vs:80/*");
}

/// route_test.go "for header operations for single cluster" (`TranslateHeadersOperations`):
/// `set` (overwrite) then `add` (append), each sorted by name, the destination's after the
/// rule's; `remove` lists; `host`/`:authority` become a host rewrite and are not headers.
#[test]
fn header_operations_follow_translate_headers_operations() {
    let http = "    - headers:\n        request: {set: {x-req-set: v1, host: foo.extsvc.com}, add: {x-req-add: v2}, remove: [x-req-remove, ':path']}\n        response: {set: {x-resp-set: v1}, add: {x-resp-add: v2}, remove: [x-resp-remove]}\n      route: [{destination: {host: v1}, headers: {request: {set: {x-route-req-set: v1}}, response: {remove: [x-route-resp-remove]}}}]";
    let route = only_route(http);
    let op = |key: &str, value: &str, action: &str| json!({"header": {"key": key, "value": value}, "append_action": action});
    assert_eq!(
        route["request_headers_to_add"],
        json!([
            op("x-req-set", "v1", "OVERWRITE_IF_EXISTS_OR_ADD"),
            op("x-req-add", "v2", "APPEND_IF_EXISTS_OR_ADD"),
            op("x-route-req-set", "v1", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ])
    );
    assert_eq!(route["request_headers_to_remove"], json!(["x-req-remove"]));
    assert_eq!(
        route["response_headers_to_add"],
        json!([
            op("x-resp-set", "v1", "OVERWRITE_IF_EXISTS_OR_ADD"),
            op("x-resp-add", "v2", "APPEND_IF_EXISTS_OR_ADD"),
        ])
    );
    assert_eq!(
        route["response_headers_to_remove"],
        json!(["x-resp-remove", "x-route-resp-remove"])
    );
    assert_eq!(route["route"]["host_rewrite_literal"], "foo.extsvc.com");
}

/// route_test.go "for prefix path rewrite", "for full path rewrite" (a `uriRegexRewrite`),
/// "for path and host rewrite" (`applyHTTPRouteDestination`).
#[rstest]
#[case("{uri: /replace-prefix}", json!({"prefix_rewrite": "/replace-prefix"}))]
#[case("{uriRegexRewrite: {match: '/.*', rewrite: /replace-full}, authority: bar.example.org}",
    json!({"regex_rewrite": {"pattern": {"regex": "/.*"}, "substitution": "/replace-full"}, "host_rewrite_literal": "bar.example.org"}))]
fn rewrites_follow_apply_http_route_destination(#[case] rewrite: &str, #[case] expected: Value) {
    let route = only_route(&format!("    - rewrite: {rewrite}\n{TO_V1}"));
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&route["route"][key], value, "{key}: {route}");
    }
}

/// route.go `ApplyRedirect`; route_test.go "for redirect code" (308 → PERMANENT_REDIRECT),
/// "for full path redirect", "for prefix_rewrite redirect"; a port equal to the scheme's default
/// is dropped, `FROM_REQUEST_PORT` is the server's port.
#[rstest]
#[case("{uri: /replace-full-path, redirectCode: 308}", json!({"path_redirect": "/replace-full-path", "response_code": "PERMANENT_REDIRECT"}))]
#[case("{prefixRewrite: /, authority: foo.example.com}", json!({"prefix_rewrite": "/", "host_redirect": "foo.example.com", "response_code": "MOVED_PERMANENTLY"}))]
#[case("{uri: /x, port: 8443, scheme: https, redirectCode: 302}", json!({"path_redirect": "/x", "port_redirect": 8443, "scheme_redirect": "https", "response_code": "FOUND"}))]
#[case("{uri: /x, derivePort: FROM_REQUEST_PORT}", json!({"path_redirect": "/x", "response_code": "MOVED_PERMANENTLY"}))]
#[case("{uri: /x, port: 443, scheme: https}", json!({"path_redirect": "/x", "scheme_redirect": "https", "response_code": "MOVED_PERMANENTLY"}))]
fn redirects_follow_apply_redirect(#[case] redirect: &str, #[case] expected: Value) {
    let route = only_route(&format!(
        "    - redirect: {redirect}\n      headers: {{response: {{set: {{Strict-Transport-Security: max-age=31536000}}}}}}"
    ));
    assert_eq!(route["redirect"], expected);
    assert!(route.get("route").is_none());
    // route_test.go "for redirect and header manipulation": the response headers stay.
    assert_eq!(
        route["response_headers_to_add"][0]["header"]["key"],
        "Strict-Transport-Security"
    );
    assert_eq!(route["decorator"]["operation"], "vs:80/*");
}

/// route_test.go "for direct response code" (`ApplyDirectResponse`).
#[test]
fn a_direct_response_answers_from_the_gateway() {
    let route = only_route("    - directResponse: {status: 200, body: {string: hello}}");
    assert_eq!(
        route["direct_response"],
        json!({"status": 200, "body": {"inline_string": "hello"}})
    );
    let bytes = only_route("    - directResponse: {status: 503, body: {bytes: aGVsbG8=}}");
    assert_eq!(
        bytes["direct_response"]["body"],
        json!({"inline_bytes": "aGVsbG8="})
    );
}

/// route.go `TranslateFault`: percentages in millionths (`translatePercentToFractionalPercent`),
/// the deprecated integer percent in hundredths, an abort without a percentage has none.
#[test]
fn faults_follow_translate_fault() {
    let route = only_route(&format!(
        "    - fault: {{delay: {{fixedDelay: 5s, percentage: {{value: 0.1}}}}, abort: {{httpStatus: 418, percentage: {{value: 50}}}}}}\n{TO_V1}"
    ));
    assert_eq!(
        route["typed_per_filter_config"]["envoy.filters.http.fault"],
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "delay": {"fixed_delay": "5s", "percentage": {"numerator": 1000, "denominator": "MILLION"}},
            "abort": {"http_status": 418, "percentage": {"numerator": 500000, "denominator": "MILLION"}},
        })
    );
    let legacy = only_route(&format!(
        "    - fault: {{delay: {{fixedDelay: 1s, percent: 30}}, abort: {{grpcStatus: UNAVAILABLE}}}}\n{TO_V1}"
    ));
    let fault = &legacy["typed_per_filter_config"]["envoy.filters.http.fault"];
    assert_eq!(
        fault["delay"]["percentage"],
        json!({"numerator": 30, "denominator": "HUNDRED"})
    );
    assert_eq!(fault["abort"], json!({"grpc_status": 14}));
}

/// route.go `TranslateCORSPolicy`.
#[test]
fn cors_follows_translate_cors_policy() {
    let route = only_route(&format!(
        "    - corsPolicy: {{allowOrigins: [{{exact: 'https://a.example'}}, {{regex: '.*\\.b\\.example'}}], allowMethods: [GET, POST], allowHeaders: [x-a], exposeHeaders: [x-b], maxAge: 24h, allowCredentials: true, unmatchedPreflights: IGNORE}}\n{TO_V1}"
    ));
    assert_eq!(
        route["typed_per_filter_config"]["envoy.filters.http.cors"],
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "forward_not_matching_preflights": false,
            "allow_origin_string_match": [{"exact": "https://a.example"}, {"safe_regex": {"regex": ".*\\.b\\.example"}}],
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "allow_credentials": true,
            "allow_methods": "GET,POST",
            "allow_headers": "x-a",
            "expose_headers": "x-b",
            "max_age": "86400",
        })
    );
}

/// route.go `MirrorPercent`/`MirrorPercentByPolicy` and `TranslateRequestMirrorPolicy`: all by
/// default, an explicit 0 not at all, trace sampling off, the shadow host suffix off
/// (`DISABLE_SHADOW_HOST_SUFFIX` defaults to true).
#[test]
fn mirrors_follow_translate_request_mirror_policy() {
    let policy = |numerator: u32, denominator: &str| {
        json!({"cluster": V2, "runtime_fraction": {"default_value": {"numerator": numerator, "denominator": denominator}},
               "trace_sampled": false, "disable_shadow_host_suffix_append": true})
    };
    let mirror = |fields: &str| {
        only_route(&format!("    - {fields}\n{TO_V1}"))["route"]["request_mirror_policies"].clone()
    };
    assert_eq!(
        mirror("mirror: {host: v2}\n      mirrorPercentage: {value: 25}"),
        json!([policy(250000, "MILLION")])
    );
    assert_eq!(
        mirror("mirror: {host: v2}"),
        json!([policy(100, "HUNDRED")])
    );
    assert_eq!(
        mirror("mirror: {host: v2}\n      mirrorPercent: 30"),
        json!([policy(30, "HUNDRED")])
    );
    assert_eq!(
        mirror("mirror: {host: v2}\n      mirrorPercentage: {value: 0}"),
        Value::Null
    );
    assert_eq!(
        mirror(
            "mirrors: [{destination: {host: v2}}, {destination: {host: v1}, percentage: {value: 0}}]"
        ),
        json!([policy(100, "HUNDRED")])
    );
}

/// gateway_test.go `TestGatewayHTTPRouteConfig` "duplicate by wildcard should merge" and
/// "duplicate virtual service case insensitive": VirtualServices whose hosts intersect a server's
/// in the same host share one virtual host, lower-cased, with both routes; the domain is the host
/// alone (`ignore_port_in_host_matching`, istio PR 40475). The intersection itself is
/// case-sensitive (`Name.SubsetOf`): only a server host spelled the same way binds `Example.org`.
#[rstest]
#[case::wildcard_vs("['*.org']", "[gw]", None, ["/a", "/b"])]
// Servers come in the order of their Gateways (creation, then name: `ci-gw` before `gw`).
#[case::case_insensitive("['Example.org']", "[ci-gw]", Some(gateway("ci-gw", "['Example.org']")), ["/b", "/a"])]
fn virtual_services_on_one_host_share_a_virtual_host(
    #[case] second_hosts: &str,
    #[case] second_gateways: &str,
    #[case] second_gateway: Option<String>,
    #[case] order: [&str; 2],
) {
    let mut documents = vec![
        backend("v1", 80),
        gateway("gw", "['example.org']"),
        virtual_service(
            "a-first",
            "['example.org']",
            "[gw]",
            &format!("    - match: [{{uri: {{prefix: /a}}}}]\n{TO_V1}"),
        ),
        virtual_service(
            "b-second",
            second_hosts,
            second_gateways,
            &format!("    - match: [{{uri: {{prefix: /b}}}}]\n{TO_V1}"),
        ),
    ];
    documents.extend(second_gateway);
    let plan = plan_of(&documents);
    assert_eq!(plan.virtual_hosts.len(), 1, "{:#?}", plan.virtual_hosts);
    let vh = &plan.virtual_hosts[0];
    assert_eq!(
        (vh.name.as_str(), vh.domains.clone()),
        ("example.org:80", vec!["example.org".to_string()])
    );
    let prefixes: Vec<&str> = vh
        .routes
        .iter()
        .map(|r| r["match"]["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, order);
}

#[test]
fn host_intersection_is_case_sensitive_as_istios() {
    let plan = plan_of(&[
        backend("v1", 80),
        gateway("gw", "['example.org']"),
        virtual_service(
            "vs",
            "['Example.org']",
            "[gw]",
            &TO_V1.replacen("      route", "    - route", 1),
        ),
    ]);
    assert_eq!(plan.virtual_hosts[0].name, "blackhole:80");
}

/// Merged VirtualServices in Istio's order (creation time, then name: `configCompareByCreationTime`)
/// with catch-alls moved last (route.go `SortVHostRoutes`; route_test.go `TestSortVHostRoutes`).
#[test]
fn merged_routes_keep_istios_order_with_catch_alls_last() {
    let catch_all = format!("    - {}", TO_V1.trim_start());
    let plan = plan_of(&[
        backend("v1", 80),
        gateway("gw", "['*']"),
        // Named so that the name order differs from the document order.
        virtual_service(
            "z-specific",
            "['shop.example']",
            "[gw]",
            &format!("    - match: [{{uri: {{prefix: /z}}}}]\n{TO_V1}"),
        ),
        virtual_service("a-catch-all", "['shop.example']", "[gw]", &catch_all),
        virtual_service(
            "m-specific",
            "['shop.example']",
            "[gw]",
            &format!("    - match: [{{uri: {{exact: /m}}}}]\n{TO_V1}"),
        ),
    ]);
    let vh = &plan.virtual_hosts[0];
    let paths: Vec<String> = vh
        .routes
        .iter()
        .map(|r| {
            r["match"]
                .get("path")
                .or(r["match"].get("prefix"))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(paths, ["\"/m\"", "\"/z\"", "\"/\""]);
}

/// gateway.go `collapseDuplicateRoutes`: hosts with the very same routes are one virtual host,
/// named after the most specific (`MoreSpecific`), with its domains in that order; virtual
/// hosts are sorted by name (`SortVirtualHosts`).
#[test]
fn hosts_with_the_same_routes_collapse_into_one_virtual_host() {
    let plan = plan_of(&[
        backend("v1", 80),
        gateway("gw", "['*']"),
        virtual_service(
            "both",
            "['*.example.com', 'b.example.com', 'a.example.com']",
            "[gw]",
            TO_V1.replacen("      route", "    - route", 1).as_str(),
        ),
        virtual_service(
            "other",
            "['c.example.com']",
            "[gw]",
            &format!("    - match: [{{uri: {{prefix: /c}}}}]\n{TO_V1}"),
        ),
    ]);
    let hosts: Vec<(&str, Vec<String>)> = plan
        .virtual_hosts
        .iter()
        .map(|vh| (vh.name.as_str(), vh.domains.clone()))
        .collect();
    assert_eq!(
        hosts,
        [
            (
                "a.example.com:80",
                vec![
                    "a.example.com".into(),
                    "b.example.com".into(),
                    "*.example.com".into()
                ]
            ),
            ("c.example.com:80", vec!["c.example.com".into()]),
        ]
    );
}

/// pkg/config/host `NamesForNamespace` + `Intersection`: `ns/host` server hosts apply to that
/// namespace only, `*/` and `./` (the Gateway's namespace) too; the more specific of two
/// overlapping hosts wins; a short VirtualService host is a Service name.
#[rstest]
#[case::specific_vs_under_wildcard_server("['*.example.com']", "['fft.example.com']", Some(vec!["fft.example.com"]))]
#[case::wildcard_vs_under_specific_server("['fft.example.com']", "['*']", Some(vec!["fft.example.com"]))]
#[case::narrower_wildcard_wins("['*.com']", "['*.example.com']", Some(vec!["*.example.com"]))]
#[case::same_namespace("['shop/*']", "['a.example']", Some(vec!["a.example"]))]
#[case::dot_namespace("['./*']", "['a.example']", Some(vec!["a.example"]))]
#[case::any_namespace("['*/a.example']", "['a.example']", Some(vec!["a.example"]))]
#[case::other_namespace("['other/*']", "['a.example']", None)]
#[case::no_overlap("['a.example']", "['b.example']", None)]
#[case::wildcard_needs_a_label("['*.example.com']", "['example.com']", None)]
#[case::short_name("['*']", "[fft]", Some(vec!["fft.shop.svc.cluster.local"]))]
fn host_binding_follows_names_intersection(
    #[case] server_hosts: &str,
    #[case] vs_hosts: &str,
    #[case] domains: Option<Vec<&str>>,
) {
    let plan = plan_of(&[
        backend("v1", 80),
        gateway("gw", server_hosts),
        virtual_service(
            "vs",
            vs_hosts,
            "[gw]",
            &TO_V1.replacen("      route", "    - route", 1),
        ),
    ]);
    match domains {
        Some(domains) => assert_eq!(plan.virtual_hosts[0].domains, domains),
        None => {
            assert_eq!(plan.virtual_hosts[0].name, "blackhole:80");
            assert!(
                plan.warnings.iter().any(|w| w.contains("routes nothing")),
                "{:?}",
                plan.warnings
            );
        }
    }
}

/// gateway.go: with no VirtualService bound, one virtual host `blackhole:<port>` for `*` with
/// no routes, so Envoy answers 404 to everything (gateway_test.go "404 when no services").
/// A VirtualService exported only to its own namespace is invisible to the gateway in
/// istio-system (push_context.go `initVirtualServices`).
#[rstest]
#[case::mesh_only("[mesh]", "")]
#[case::other_gateway("[elsewhere/gw]", "")]
#[case::not_exported_to_the_gateway("[gw]", "  exportTo: ['.']\n")]
fn nothing_bound_is_a_blackhole(#[case] gateways: &str, #[case] export: &str) {
    let vs = virtual_service(
        "vs",
        "['*']",
        gateways,
        &TO_V1.replacen("      route", "    - route", 1),
    )
    .replace("  hosts:", &format!("{export}  hosts:"));
    let plan = plan_of(&[backend("v1", 80), gateway("gw", "['*']"), vs]);
    assert_eq!(plan.virtual_hosts.len(), 1);
    assert_eq!(plan.virtual_hosts[0].name, "blackhole:80");
    assert_eq!(plan.virtual_hosts[0].domains, ["*"]);
    assert!(plan.virtual_hosts[0].routes.is_empty());
    assert!(plan.upstreams.is_empty());
}

/// route.go `GetDestinationCluster`: the destination's port, else the Service's only port,
/// else the listener's; a host no Service has still gets its cluster name, and Envoy answers
/// 503 for it (the plan warns).
#[rstest]
#[case::only_port("{host: v1}", V1, false)]
#[case::fqdn("{host: v1.shop.svc.cluster.local}", V1, false)]
#[case::unknown_service("{host: nothing}", "outbound|80||nothing.shop.svc.cluster.local", true)]
#[case::name_dot_namespace("{host: v1.shop}", "outbound|80||v1.shop", true)]
#[case::port_the_service_lacks(
    "{host: v1, port: {number: 9000}}",
    "outbound|9000||v1.shop.svc.cluster.local",
    true
)]
fn destinations_name_istios_clusters(
    #[case] destination: &str,
    #[case] cluster: &str,
    #[case] dangling: bool,
) {
    let plan = plan_of(&[
        backend("v1", 80),
        gateway("gw", "['*']"),
        virtual_service(
            "vs",
            "['*']",
            "[gw]",
            &format!("    - route: [{{destination: {destination}}}]"),
        ),
    ]);
    assert_eq!(plan.virtual_hosts[0].routes[0]["route"]["cluster"], cluster);
    assert_eq!(
        plan.upstreams.iter().any(|u| u.cluster == cluster),
        !dangling
    );
    assert_eq!(
        plan.warnings
            .iter()
            .any(|w| w.contains(cluster) && w.contains("503")),
        dangling,
        "{:?}",
        plan.warnings
    );
}

/// Two ports of one Service and two Services of one Deployment are separate clusters with the
/// same replicas.
#[test]
fn clusters_of_one_deployment_share_it() {
    let two_ports = backend("v1", 80).replace(
        "ports: [{name: http, port: 80, targetPort: 8080}]",
        "ports: [{name: http, port: 80, targetPort: 8080}, {name: http-alt, port: 8000, targetPort: 8080}]",
    );
    let plan = plan_of(&[
        two_ports,
        gateway("gw", "['*']"),
        virtual_service(
            "vs",
            "['*']",
            "[gw]",
            "    - route:\n      - {destination: {host: v1, port: {number: 80}}, weight: 50}\n      - {destination: {host: v1, port: {number: 8000}}, weight: 50}",
        ),
    ]);
    let deployments: Vec<(String, String)> = plan
        .upstreams
        .iter()
        .map(|u| (u.cluster.clone(), u.deployment_id()))
        .collect();
    assert_eq!(
        deployments,
        [
            (V1.to_string(), "shop/v1".to_string()),
            (
                "outbound|8000||v1.shop.svc.cluster.local".to_string(),
                "shop/v1".to_string()
            ),
        ]
    );
}

/// What Envoy cannot do without istiod is refused by name, naming the resource and field.
#[rstest]
#[case::subset(
    "    - route: [{destination: {host: v1, subset: canary}}]",
    "spec.http[0].route[0].destination.subset `canary` needs a DestinationRule"
)]
#[case::delegate(
    "    - delegate: {name: other}",
    "spec.http[0].delegate is not translated"
)]
#[case::jwt_claim(
    "    - match: [{headers: {'@request.auth.claims.group': {exact: admin}}}]\n      route: [{destination: {host: v1}}]",
    "matches a JWT claim"
)]
#[case::no_destination(
    "    - match: [{uri: {prefix: /fft}}]",
    "spec.http[0].route: a rule needs a route, a redirect or a directResponse; Istio's webhook rejects"
)]
#[case::redirect_and_route(
    "    - redirect: {uri: /x}\n      route: [{destination: {host: v1}}]",
    "cannot have both redirect and route"
)]
#[case::retry_on_with_a_space(
    "    - retries: {attempts: 2, retryOn: '5xx, reset'}\n      route: [{destination: {host: v1}}]",
    "spec.http[0].retries.retryOn"
)]
#[case::zero_total_weight(
    "    - route:\n      - {destination: {host: v1}, weight: 0}\n      - {destination: {host: v2}, weight: 0}",
    "total weight of 0"
)]
#[case::bad_redirect_code("    - redirect: {uri: /x, redirectCode: 305}", "redirectCode 305")]
#[case::bad_timeout(
    "    - timeout: soon\n      route: [{destination: {host: v1}}]",
    "spec.http[0].timeout: `soon` is not a duration"
)]
#[case::exponential_delay(
    "    - fault: {delay: {exponentialDelay: 1s}}\n      route: [{destination: {host: v1}}]",
    "exponentialDelay"
)]
#[case::http2_abort(
    "    - fault: {abort: {http2Error: CANCEL}}\n      route: [{destination: {host: v1}}]",
    "http2Error"
)]
fn untranslatable_fields_are_refused_by_name(#[case] http: &str, #[case] message: &str) {
    let err = plan_error(&[
        backend("v1", 80),
        backend("v2", 80),
        gateway("gw", "['*']"),
        virtual_service("vs", "['*']", "[gw]", http),
    ]);
    assert!(err.contains(message), "{err}");
    assert!(
        err.contains("VirtualService shop/vs"),
        "the error names the resource: {err}"
    );
}

#[rstest]
#[case::https(gateway("gw", "['*']").replace("protocol: HTTP", "protocol: HTTPS"), "protocol is HTTPS")]
#[case::tls(gateway("gw", "['*']").replace("hosts: ['*']", "hosts: ['*'], tls: {httpsRedirect: true}"), "servers[0].tls is not translated")]
#[case::other_selector(gateway("gw", "['*']").replace("istio: ingressgateway", "istio: egressgateway"), "no Gateway that selects Istio's default ingress gateway")]
fn gateways_the_local_gateway_cannot_be_are_refused(
    #[case] gateway: String,
    #[case] message: &str,
) {
    let err = plan_error(&[
        backend("v1", 80),
        gateway,
        virtual_service(
            "vs",
            "['*']",
            "[gw]",
            TO_V1.replacen("      route", "    - route", 1).as_str(),
        ),
    ]);
    assert!(err.contains(message), "{err}");
}

/// Several Gateways of the ingress gateway on one port are one route configuration
/// (`MergeGateways`). A VirtualService's routes are built once per Gateway, so the hosts of two
/// Gateways are not collapsed (their route pointers differ in `collapseDuplicateRoutes`).
/// Servers on different ports would need listeners the local target has not.
#[test]
fn servers_of_several_gateways_share_the_listener() {
    let plan = plan_of(&[
        backend("v1", 80),
        gateway("gw-a", "['a.example']"),
        gateway("gw-b", "['b.example']"),
        virtual_service(
            "vs",
            "['*']",
            "[gw-a, gw-b]",
            TO_V1.replacen("      route", "    - route", 1).as_str(),
        ),
    ]);
    let domains: Vec<Vec<String>> = plan
        .virtual_hosts
        .iter()
        .map(|vh| vh.domains.clone())
        .collect();
    assert_eq!(
        domains,
        [vec!["a.example".to_string()], vec!["b.example".to_string()]]
    );
    assert_eq!(plan.gateway, "shop/gw-a, shop/gw-b");
    let err = plan_error(&[
        backend("v1", 80),
        gateway("gw-a", "['a.example']"),
        gateway("gw-b", "['b.example']").replace("number: 80", "number: 8080"),
    ]);
    assert!(err.contains("ports {80, 8080}"), "{err}");
}

/// A Deployment scaled to 0 leaves its cluster without endpoints: Envoy answers 503 (`UH`), and
/// the plan says so. Istio kinds the local gateway does not translate are named, not ignored.
#[test]
fn what_cannot_answer_locally_is_said() {
    let plan = plan_of(&[
        backend("v1", 80).replace("replicas: 1", "replicas: 0"),
        gateway("gw", "['*']"),
        virtual_service("vs", "['*']", "[gw]", &TO_V1.replacen("      route", "    - route", 1)),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: v1-policy, namespace: shop}\nspec: {host: v1}".to_string(),
    ]);
    assert_eq!(plan.upstreams[0].replicas, 0);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("0 replicas") && w.contains("503")),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("DestinationRule v1-policy: not translated")),
        "{:?}",
        plan.warnings
    );
}
