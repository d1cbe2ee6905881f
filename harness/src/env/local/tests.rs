//! The bootstrap that Envoy itself accepts, the access log, and the fleet's model of a rollout.
//! The translation's own cases are in `translate/golden_tests.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use super::bootstrap::{RuntimeAddresses, bootstrap};
use super::endpoints::EndpointFiles;
use super::translate::plan;

/// The bootstrap for the project's own manifest, with made-up replica addresses.
fn project_bootstrap(run_dir: &Path) -> Value {
    let docs = crate::manifest::load_file(&crate::config::paths::manifests_dir().join("app.yaml"))
        .unwrap();
    bootstrap_for(&docs, run_dir)
}

/// The bootstrap for `docs`, with made-up replica addresses for every upstream.
fn bootstrap_for(docs: &[crate::manifest::Document], run_dir: &Path) -> Value {
    let plan = plan(docs).unwrap();
    let replicas: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 30000 + i)))
        .collect();
    let clusters: BTreeMap<String, Vec<SocketAddr>> = plan
        .upstreams
        .iter()
        .map(|u| (u.cluster.clone(), replicas.clone()))
        .collect();
    let files = EndpointFiles::create(&run_dir.join("eds"), clusters.clone()).unwrap();
    let runtime = RuntimeAddresses {
        listener: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        endpoints_dir: files.dir().to_path_buf(),
        endpoint_files: clusters
            .keys()
            .map(|c| (c.clone(), files.file(c).unwrap().to_path_buf()))
            .collect(),
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
    let filters: Vec<&Value> = hcm["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["name"])
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router"
        ]
    );
    assert_eq!(
        hcm["http_filters"][2]["typed_config"]["suppress_envoy_headers"],
        false
    );
    assert_eq!(hcm["route_config"]["ignore_port_in_host_matching"], true);
    assert_eq!(
        hcm["route_config"]["virtual_hosts"][0]["domains"],
        json!(["*"])
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

/// Every construct the translation knows, in one VirtualService.
const EVERY_CONSTRUCT: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: shop}
spec:
  hosts: ["*.example.com", fft.example.com]
  gateways: [gw]
  http:
    - name: matches
      match:
        - {name: m, uri: {regex: "/a/[0-9]+"}, ignoreUriCase: true, method: {exact: POST}, authority: {prefix: fft}, scheme: {exact: http}, port: 80,
           headers: {x-a: {exact: a}, x-b: {prefix: b}, x-c: {regex: "c+"}, x-d: {}}, withoutHeaders: {x-e: {exact: e}, x-f: {}},
           queryParams: {q: {exact: "1"}, r: {regex: "[a-z]+"}, s: {}}, statPrefix: matches}
      headers:
        request: {set: {x-set: "1", ":authority": rewritten.example}, add: {x-add: "2"}, remove: [x-remove]}
        response: {set: {x-resp: "1"}, remove: [server-timing]}
      rewrite: {uriRegexRewrite: {match: "^/a/(.*)$", rewrite: "/fft?n=\\1"}}
      timeout: 1.5s
      retries: {attempts: 4, perTryTimeout: 500ms, retryOn: "5xx,503,reset", retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 30ms}
      mirror: {host: fft-v2}
      mirrorPercentage: {value: 12.5}
      corsPolicy: {allowOrigins: [{prefix: "https://"}], allowMethods: [GET], allowHeaders: [x-h], exposeHeaders: [x-e], maxAge: 1h, allowCredentials: false}
      fault: {delay: {fixedDelay: 1ms, percentage: {value: 0.5}}, abort: {grpcStatus: UNAVAILABLE, percentage: {value: 0.1}}}
      route:
        - {destination: {host: fft-v1}, weight: 75, headers: {request: {set: {host: v1.example}}, response: {add: {x-v: "1"}}}}
        - {destination: {host: fft-v2, port: {number: 80}}, weight: 25}
    - match: [{uri: {prefix: /redirect}}]
      redirect: {uri: /x, authority: other.example, derivePort: FROM_REQUEST_PORT, scheme: https, redirectCode: 307}
    - match: [{uri: {prefix: /prefix-redirect}}]
      redirect: {prefixRewrite: /y, port: 8080}
    - match: [{uri: {prefix: /mirrors}}]
      mirrors: [{destination: {host: fft-v1}, percentage: {value: 1}}, {destination: {host: fft-v2}}]
      route: [{destination: {host: fft-v1}}]
    - match: [{uri: {exact: /bytes}}]
      directResponse: {status: 503, body: {bytes: aGVsbG8=}}
    - match: [{uri: {prefix: /nothing}}]
      route: [{destination: {host: no-such-service}}]
    - route: [{destination: {host: fft-v1}}]
      retries: {attempts: 0}
"#;

/// Envoy itself accepts the generated bootstrap (`--mode validate` checks every field): the
/// project's, and one with every construct the translation knows.
#[tokio::test]
async fn envoy_validates_the_bootstrap() {
    let knobs = crate::config::knobs::Knobs::from_env().unwrap();
    let runner = crate::exec::cmd::Runner::new();
    let envoy = crate::tools::envoy::find_or_install(&runner, knobs.offline)
        .await
        .expect("Envoy is needed for this test (see the error for how to get it)");
    let backends = std::fs::read_to_string(
        crate::config::paths::project_root().join("examples/canary/backends.yaml"),
    )
    .unwrap();
    let every = crate::manifest::load_str(
        Path::new("every.yaml"),
        &format!("{backends}\n---\n{EVERY_CONSTRUCT}"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in [
        ("project", project_bootstrap(dir.path())),
        (
            "every-construct",
            bootstrap_for(&every, &dir.path().join("every")),
        ),
    ] {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
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
            .unwrap_or_else(|err| panic!("Envoy rejected the {name} bootstrap: {err:#}"));
        assert!(
            output.stdout.contains("OK") || output.stderr.contains("OK"),
            "{name}: {output:?}"
        );
    }
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

#[test]
fn the_printed_curl_names_a_host_the_gateway_routes() {
    let docs = crate::manifest::load_file(&crate::config::paths::manifests_dir().join("app.yaml"))
        .unwrap();
    assert_eq!(
        super::example_host(&plan(&docs).unwrap()),
        None,
        "the tutorial takes any host"
    );
    let root = crate::config::paths::project_root().join("examples/canary");
    let mut canary = Vec::new();
    for file in ["backends.yaml", "routes.yaml"] {
        canary.extend(crate::manifest::load_file(&root.join(file)).unwrap());
    }
    assert_eq!(
        super::example_host(&plan(&canary).unwrap()).as_deref(),
        Some("fft.example.com")
    );
}
