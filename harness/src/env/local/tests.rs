//! The translation from manifests to Envoy routes, case by case, and the bootstrap that Envoy
//! itself accepts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use rstest::rstest;
use serde_json::{Value, json};

use super::bootstrap::{RuntimeAddresses, bootstrap};
use super::endpoints::EndpointFiles;
use super::translate::{GatewayPlan, default_retry_policy, plan};
use crate::manifest::hosts::intersect_hosts;
use crate::manifest::load_str;

const SERVICE_AND_DEPLOYMENT: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: wtyfft-svc, namespace: wty-istio}
spec:
  selector: {app: wtyfft-app}
  ports: [{name: http, protocol: TCP, port: 8000, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: wtyfft-deploy, namespace: wty-istio}
spec:
  replicas: 3
  selector: {matchLabels: {app: wtyfft-app}}
  template:
    metadata: {labels: {app: wtyfft-app}}
    spec:
      containers:
        - name: app
          image: fft-service:0.1.0
          ports: [{containerPort: 8080, name: http}]
"#;

const HTTP_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: wtyfft-gateway, namespace: wty-istio}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: ["*"]
"#;

const CLUSTER: &str = "outbound|8000||wtyfft-svc.wty-istio.svc.cluster.local";

fn virtual_service(hosts: &str, http: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: wtyfft-vs, namespace: wty-istio}}
spec:
  hosts: {hosts}
  gateways: [wtyfft-gateway]
  http:
{http}
"#
    )
}

const TO_SERVICE: &str = "      route: [{destination: {host: wtyfft-svc, port: {number: 8000}}}]";

fn rule(matches: &str) -> String {
    format!("    - match: {matches}\n{TO_SERVICE}")
}

fn plan_for(gateway: &str, vs: &str) -> anyhow::Result<GatewayPlan> {
    let text = format!("{SERVICE_AND_DEPLOYMENT}---{gateway}---{vs}");
    let docs = load_str(Path::new("case.yaml"), &text)?;
    plan(&docs)
}

fn route(envoy_match: Value) -> Value {
    json!({
        "match": envoy_match,
        "route": {
            "cluster": CLUSTER,
            "timeout": "0s",
            "retry_policy": default_retry_policy(),
            "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"},
        },
        "decorator": {"operation": "wtyfft-svc.wty-istio.svc.cluster.local:8000/*"},
    })
}

/// Istio ≥ 1.27's `DefaultPolicy` (pilot/pkg/networking/core/route/retry/retry.go, the
/// `cachedDefaultPolicy` of release-1.31): no retriable status code, so an app's 503 reaches the
/// client.
#[test]
fn the_default_retry_policy_is_istios_and_retries_no_status() {
    let policy = default_retry_policy();
    assert_eq!(
        policy["retry_on"],
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
    assert_eq!(policy["num_retries"], 2);
    assert_eq!(policy["host_selection_retry_max_attempts"], "5");
    assert!(policy.get("retriable_status_codes").is_none(), "{policy}");
}

#[rstest]
#[case::article(
    rule("[{uri: {prefix: /fft}}, {uri: {exact: /metrics}}]"),
    vec![json!({"prefix": "/fft"}), json!({"path": "/metrics"})]
)]
#[case::regex_is_full_match_re2(
    rule("[{uri: {regex: '/fft/real/[0-9]+'}}]"),
    vec![json!({"safe_regex": {"regex": "/fft/real/[0-9]+"}})]
)]
#[case::ignore_uri_case_prefix(
    rule("[{uri: {prefix: /fft}, ignoreUriCase: true}]"),
    vec![json!({"prefix": "/fft", "case_sensitive": false})]
)]
#[case::ignore_uri_case_exact(
    rule("[{uri: {exact: /metrics}, ignoreUriCase: true}]"),
    vec![json!({"path": "/metrics", "case_sensitive": false})]
)]
#[case::ignore_uri_case_regex(
    rule("[{uri: {regex: '/fft.*'}, ignoreUriCase: true}]"),
    vec![json!({"safe_regex": {"regex": "/fft.*"}, "case_sensitive": false})]
)]
#[case::no_match_list_matches_everything(
    format!("    - {}", TO_SERVICE.trim_start()),
    vec![json!({"prefix": "/"})]
)]
#[case::match_without_uri(rule("[{ignoreUriCase: false}]"), vec![json!({"prefix": "/"})])]
#[case::empty_uri_match(rule("[{uri: {}}]"), vec![json!({"prefix": "/"})])]
#[case::order_is_kept_across_rules(
    format!("{}\n{}", rule("[{uri: {exact: /metrics}}]"), rule("[{uri: {prefix: /}}]")),
    vec![json!({"path": "/metrics"}), json!({"prefix": "/"})]
)]
fn routes_follow_the_virtual_service(#[case] http: String, #[case] expected: Vec<Value>) {
    let plan = plan_for(HTTP_GATEWAY, &virtual_service("['*']", &http)).unwrap();
    assert_eq!(plan.virtual_hosts.len(), 1);
    let vh = &plan.virtual_hosts[0];
    assert_eq!(
        (vh.name.as_str(), vh.domains.clone()),
        ("*:80", vec!["*".to_string()])
    );
    let expected: Vec<Value> = expected.into_iter().map(route).collect();
    assert_eq!(vh.routes, expected);
    assert_eq!(plan.upstreams.len(), 1);
    let upstream = &plan.upstreams[0];
    assert_eq!(upstream.cluster, CLUSTER);
    assert_eq!(
        (upstream.replicas, upstream.target_port.as_str()),
        (3, "8080")
    );
}

#[test]
fn route_names_come_from_rule_and_match() {
    let http = format!(
        "    - name: fft\n      match: [{{name: prefix, uri: {{prefix: /fft}}}}, {{uri: {{exact: /metrics}}}}]\n{TO_SERVICE}"
    );
    let plan = plan_for(HTTP_GATEWAY, &virtual_service("['*']", &http)).unwrap();
    let names: Vec<&Value> = plan.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| &r["name"])
        .collect();
    assert_eq!(names, [&json!("fft.prefix"), &json!("fft")]);
}

#[rstest]
#[case::fqdn("wtyfft-svc.wty-istio.svc.cluster.local")]
#[case::short("wtyfft-svc")]
fn destination_host_forms_that_resolve(#[case] host: &str) {
    let http = format!("    - route: [{{destination: {{host: {host}, port: {{number: 8000}}}}}}]");
    let plan = plan_for(HTTP_GATEWAY, &virtual_service("['*']", &http)).unwrap();
    assert_eq!(plan.upstreams[0].cluster, CLUSTER);
}

#[test]
fn port_may_be_omitted_when_the_service_has_one() {
    let http = "    - route: [{destination: {host: wtyfft-svc}}]";
    let plan = plan_for(HTTP_GATEWAY, &virtual_service("['*']", http)).unwrap();
    assert_eq!(plan.upstreams[0].cluster, CLUSTER);
}

#[rstest]
#[case::header_match(
    rule("[{headers: {x-user: {exact: a}}}]"),
    "spec.http[0].match[0].headers is not translated"
)]
#[case::method_match(rule("[{method: {exact: GET}}]"), "match[0].method is not translated")]
#[case::query_match(
    rule("[{queryParams: {a: {exact: b}}}]"),
    "match[0].queryParams is not translated"
)]
#[case::match_gateways(rule("[{gateways: [mesh]}]"), "match[0].gateways is not translated")]
#[case::stat_prefix(
    rule("[{uri: {prefix: /fft}, statPrefix: fft}]"),
    "match[0].statPrefix is not translated"
)]
#[case::timeout(format!("{}\n      timeout: 5s", rule("[{uri: {prefix: /fft}}]")), "spec.http[0].timeout is not translated")]
#[case::retries(format!("{}\n      retries: {{attempts: 3}}", rule("[{uri: {prefix: /fft}}]")), "spec.http[0].retries is not translated")]
#[case::rewrite(format!("{}\n      rewrite: {{uri: /}}", rule("[{uri: {prefix: /fft}}]")), "spec.http[0].rewrite is not translated")]
#[case::fault(format!("{}\n      fault: {{abort: {{httpStatus: 500}}}}", rule("[{uri: {prefix: /fft}}]")), "spec.http[0].fault is not translated")]
#[case::redirect("    - redirect: {uri: /x}\n      match: [{uri: {prefix: /a}}]".to_string(), "spec.http[0].redirect is not translated")]
#[case::weighted_split(
    "    - route:\n      - {destination: {host: wtyfft-svc}, weight: 50}\n      - {destination: {host: wtyfft-svc}, weight: 50}".to_string(),
    "2 destinations"
)]
#[case::partial_weight("    - route: [{destination: {host: wtyfft-svc}, weight: 30}]".to_string(), "weight is 30")]
#[case::subset("    - route: [{destination: {host: wtyfft-svc, subset: v1}}]".to_string(), "subset `v1` needs a DestinationRule")]
#[case::name_dot_namespace("    - route: [{destination: {host: wtyfft-svc.wty-istio}}]".to_string(), "Istio takes a host with a dot as fully qualified")]
#[case::unknown_service("    - route: [{destination: {host: nothing-here}}]".to_string(), "no Service wty-istio/nothing-here")]
#[case::unknown_port("    - route: [{destination: {host: wtyfft-svc, port: {number: 9000}}}]".to_string(), "port.number 9000 is not a port of Service wty-istio/wtyfft-svc")]
#[case::no_destination("    - match: [{uri: {prefix: /fft}}]".to_string(), "spec.http[0].route is empty")]
fn untranslated_fields_are_errors(#[case] http: String, #[case] message: &str) {
    let err = plan_for(HTTP_GATEWAY, &virtual_service("['*']", &http)).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(message), "{text}");
    assert!(
        text.contains("wty-istio/wtyfft-vs"),
        "the error names the resource: {text}"
    );
}

#[rstest]
#[case::https(HTTP_GATEWAY.replace("protocol: HTTP", "protocol: HTTPS"), "protocol is HTTPS")]
#[case::tls(HTTP_GATEWAY.replace("hosts: [\"*\"]", "hosts: [\"*\"]\n      tls: {httpsRedirect: true}"), "servers[0].tls is not translated")]
#[case::other_selector(HTTP_GATEWAY.replace("istio: ingressgateway", "istio: egressgateway"), "does not select Istio's default ingress gateway")]
fn gateway_fields_that_are_errors(#[case] gateway: String, #[case] message: &str) {
    let vs = virtual_service("['*']", &rule("[{uri: {prefix: /fft}}]"));
    let err = plan_for(&gateway, &vs).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(message), "{text}");
    assert!(text.contains("Gateway wty-istio/wtyfft-gateway"), "{text}");
}

#[test]
fn virtual_service_fields_that_are_errors() {
    let vs = virtual_service("['*']", &rule("[{uri: {prefix: /fft}}]"))
        .replace("  gateways:", "  tcp: [{route: []}]\n  gateways:");
    let err = plan_for(HTTP_GATEWAY, &vs).unwrap_err();
    assert!(
        format!("{err:#}").contains("spec.tcp is not translated"),
        "{err:#}"
    );
}

#[rstest]
#[case::numeric(
    "targetPort: 8080",
    "targetPort: 9999",
    "sends traffic to targetPort 9999"
)]
#[case::named("targetPort: 8080", "targetPort: metrics", "the named port `metrics`")]
fn a_target_port_where_the_app_does_not_listen_is_an_error(
    #[case] from: &str,
    #[case] to: &str,
    #[case] message: &str,
) {
    let text = format!(
        "{}---{HTTP_GATEWAY}---{}",
        SERVICE_AND_DEPLOYMENT.replace(from, to),
        virtual_service("['*']", &rule("[{uri: {prefix: /fft}}]"))
    );
    let docs = load_str(Path::new("case.yaml"), &text).unwrap();
    let err = format!("{:#}", plan(&docs).unwrap_err());
    assert!(err.contains(message), "{err}");
    assert!(err.contains("Service wty-istio/wtyfft-svc"), "{err}");
}

#[test]
fn an_unbound_gateway_is_a_blackhole() {
    let vs = virtual_service("['*']", &rule("[{uri: {prefix: /fft}}]"))
        .replace("gateways: [wtyfft-gateway]", "gateways: [mesh]");
    let plan = plan_for(HTTP_GATEWAY, &vs).unwrap();
    assert_eq!(plan.virtual_hosts.len(), 1);
    assert_eq!(plan.virtual_hosts[0].name, "blackhole:80");
    assert!(plan.virtual_hosts[0].routes.is_empty());
    assert!(plan.upstreams.is_empty());
}

#[test]
fn a_gateway_in_another_namespace_needs_the_namespace() {
    let vs = virtual_service("['*']", &rule("[{uri: {prefix: /fft}}]")).replace(
        "gateways: [wtyfft-gateway]",
        "gateways: [other/wtyfft-gateway]",
    );
    assert_eq!(
        plan_for(HTTP_GATEWAY, &vs).unwrap().virtual_hosts[0].name,
        "blackhole:80"
    );
    let vs = vs.replace("other/", "wty-istio/");
    assert_eq!(
        plan_for(HTTP_GATEWAY, &vs).unwrap().virtual_hosts[0].name,
        "*:80"
    );
}

#[rstest]
#[case::named_host("['fft.example.com']", "['*']", vec!["fft.example.com", "fft.example.com:*"])]
#[case::short_name_is_a_service_fqdn("[wtyfft]", "['*']", vec!["wtyfft.wty-istio.svc.cluster.local", "wtyfft.wty-istio.svc.cluster.local:*"])]
#[case::gateway_narrows_a_wildcard_vs("['*']", "['fft.example.com']", vec!["fft.example.com", "fft.example.com:*"])]
#[case::wildcard_server("['a.example.com']", "['*.example.com']", vec!["a.example.com", "a.example.com:*"])]
#[case::namespaced_server_host("['*']", "['wty-istio/*']", vec!["*"])]
fn virtual_host_domains(
    #[case] vs_hosts: &str,
    #[case] server_hosts: &str,
    #[case] domains: Vec<&str>,
) {
    let gateway = HTTP_GATEWAY.replace("hosts: [\"*\"]", &format!("hosts: {server_hosts}"));
    let vs = virtual_service(vs_hosts, &rule("[{uri: {prefix: /fft}}]"));
    let plan = plan_for(&gateway, &vs).unwrap();
    assert_eq!(plan.virtual_hosts[0].domains, domains);
}

#[test]
fn hosts_the_server_does_not_expose_are_not_bound() {
    let gateway = HTTP_GATEWAY.replace("hosts: [\"*\"]", "hosts: ['other-ns/*']");
    let vs = virtual_service("['*']", &rule("[{uri: {prefix: /fft}}]"));
    assert_eq!(
        plan_for(&gateway, &vs).unwrap().virtual_hosts[0].name,
        "blackhole:80"
    );
    assert_eq!(intersect_hosts("a.com", "b.com"), None);
    assert_eq!(intersect_hosts("*.a.com", "a.com"), None);
}

/// The bootstrap for the project's own manifest, with made-up replica addresses.
fn project_bootstrap(run_dir: &Path) -> Value {
    let docs = crate::manifest::load_file(&crate::config::paths::manifests_dir().join("app.yaml"))
        .unwrap();
    let plan = plan(&docs).unwrap();
    let replicas: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 30000 + i)))
        .collect();
    let files = EndpointFiles::create(
        &run_dir.join("eds"),
        BTreeMap::from([(CLUSTER.to_string(), replicas)]),
    )
    .unwrap();
    let runtime = RuntimeAddresses {
        listener: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        endpoints_dir: files.dir().to_path_buf(),
        endpoint_files: BTreeMap::from([(
            CLUSTER.to_string(),
            files.file(CLUSTER).unwrap().to_path_buf(),
        )]),
        access_log: run_dir.join("access.log"),
    };
    bootstrap(&plan, &runtime).unwrap()
}

#[test]
fn the_connection_manager_is_istios() {
    let dir = tempfile::tempdir().unwrap();
    let config = project_bootstrap(dir.path());
    let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["server_name"], "istio-envoy");
    assert_eq!(hcm["server_header_transformation"], "OVERWRITE");
    assert_eq!(hcm["normalize_path"], true);
    assert_eq!(hcm["merge_slashes"], false);
    assert_eq!(
        config["static_resources"]["listeners"][0]["enable_reuse_port"],
        false
    );
    assert_eq!(
        hcm["http_filters"][0]["typed_config"]["suppress_envoy_headers"],
        false
    );
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    assert_eq!(routes.len(), 2, "no catch-all route may be added");
    assert_eq!(
        config["admin"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
    let cluster = &config["static_resources"]["clusters"][0];
    assert_eq!(cluster["type"], "EDS");
    let source = &cluster["eds_cluster_config"]["eds_config"]["path_config_source"];
    let eds: Value =
        serde_json::from_slice(&std::fs::read(source["path"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(
        eds["resources"][0]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        source["watched_directory"]["path"].as_str().unwrap(),
        dir.path().join("eds").to_string_lossy()
    );
}

#[test]
fn a_non_loopback_listener_is_refused() {
    let docs = crate::manifest::load_file(&crate::config::paths::manifests_dir().join("app.yaml"))
        .unwrap();
    let runtime = RuntimeAddresses {
        listener: "0.0.0.0:8080".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        endpoints_dir: "/nonexistent".into(),
        endpoint_files: BTreeMap::new(),
        access_log: "/dev/null".into(),
    };
    let err = bootstrap(&plan(&docs).unwrap(), &runtime).unwrap_err();
    assert!(err.to_string().contains("loopback addresses only"), "{err}");
}

/// Envoy itself accepts the generated bootstrap (`--mode validate` checks every field).
#[tokio::test]
async fn envoy_validates_the_bootstrap() {
    let knobs = crate::config::knobs::Knobs::from_env().unwrap();
    let runner = crate::exec::cmd::Runner::new();
    let envoy = crate::tools::envoy::find_or_install(&runner, knobs.offline)
        .await
        .expect("Envoy is needed for this test (see the error for how to get it)");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&project_bootstrap(dir.path())).unwrap(),
    )
    .unwrap();
    let validate = crate::exec::cmd::Cmd::new(&envoy.path)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "--config-path",
        ])
        .arg(&path);
    let output = runner
        .run(&validate)
        .await
        .expect("Envoy rejected the bootstrap");
    assert!(
        output.stdout.contains("OK") || output.stderr.contains("OK"),
        "{output:?}"
    );
}

#[test]
fn access_log_lines_explain_the_requests_asked_for() {
    let log = concat!(
        r#"{"request_id":"7","response_code":503,"response_flags":"UC","upstream_host":"127.0.0.1:4001","attempts":1,"response_code_details":"upstream_reset_before_response_started{connection_termination}","upstream_failure":null}"#,
        "\n",
        r#"{"request_id":"8","response_code":200,"response_flags":"-","upstream_host":"127.0.0.1:4002","attempts":1,"response_code_details":"via_upstream","upstream_failure":null}"#,
        "\nnot json\n",
    );
    let records = super::access_log_records(log, &["7".to_string()]);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records["7"],
        "503 flags=UC upstream=127.0.0.1:4001 attempts=1 \
         details=upstream_reset_before_response_started{connection_termination} -"
    );
}

/// The resilience model can fail: without a drain delay, the propagation lag makes a rolling
/// restart lose requests (the old replica's sidecar answers 503 once its app stops accepting,
/// and the gateway does not retry a 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_drain_delay_a_rolling_restart_loses_requests() {
    use crate::env::{Disruption, Environment};
    let knobs = crate::config::knobs::Knobs::from_env().unwrap();
    let options = super::LocalOptions {
        drain_delay: std::time::Duration::ZERO,
        ..super::LocalOptions::from_knobs(&knobs)
    };
    let mut env = super::LocalEnvironment::start(
        &options,
        &crate::exec::cmd::Runner::new(),
        &mut crate::env::timings::Timings::default(),
    )
    .await
    .expect("the local target starts (Envoy is needed; see the error for how to get it)");
    let result = crate::checks::resilience::run(&env, Disruption::RollingRestart).await;
    env.teardown(false).await.unwrap();
    let err = result.expect_err("a rolling restart without a drain delay lost nothing");
    let text = format!("{err:#}");
    assert!(
        text.contains("requests failed during the rolling restart") && text.contains("503"),
        "{text}"
    );
    eprintln!("as expected: {}", &text[..text.len().min(400)]);
}
