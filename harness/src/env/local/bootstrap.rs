//! The Envoy bootstrap for the local gateway: a [`GatewayPlan`] plus the addresses that exist
//! only at run time (the listener, the replicas).
//!
//! The connection manager is set up the way Istio sets up its ingress gateway: `server:
//! istio-envoy` on every answer, paths normalised but slashes not merged, the router's debug
//! headers on (so routed answers carry `x-envoy-upstream-service-time`). Routes come only from
//! the plan; there is no catch-all, so an unmatched request gets Envoy's own empty 404.

use crate::config::names::{GATEWAY_SERVER_NAME, INGRESS_GATEWAY, LOAD_REQUEST_ID_HEADER};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::endpoints;
use super::translate::GatewayPlan;

/// Istio's default upstream connect timeout.
const CONNECT_TIMEOUT: &str = "10s";
/// Istio lifts Envoy's circuit-breaker defaults to "unlimited" unless a DestinationRule sets them.
const UNLIMITED: u32 = u32::MAX;

/// Where the gateway listens and where it learns each upstream's replicas.
#[derive(Clone, Debug)]
pub(crate) struct RuntimeAddresses {
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    /// The folder of the endpoint files, which Envoy watches.
    pub endpoints_dir: PathBuf,
    /// Cluster name → its endpoint file (see [`super::endpoints`]).
    pub endpoint_files: BTreeMap<String, PathBuf>,
    /// Envoy's access log file: one JSON line per request, with the response flags that say why
    /// a request failed and the load's request id ([`LOAD_REQUEST_ID_HEADER`]).
    pub access_log: PathBuf,
}

/// The fields of each access log line.
fn access_log_format() -> Value {
    json!({
        "start_time": "%START_TIME(%s.%3f)%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "response_code": "%RESPONSE_CODE%",
        "response_flags": "%RESPONSE_FLAGS%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "upstream_host": "%UPSTREAM_HOST%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_failure": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "duration_ms": "%DURATION%",
        "request_id": format!("%REQ({})%", LOAD_REQUEST_ID_HEADER.to_uppercase()),
    })
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

/// The whole bootstrap as JSON (Envoy reads JSON as YAML).
pub(crate) fn bootstrap(plan: &GatewayPlan, runtime: &RuntimeAddresses) -> Result<Value> {
    for addr in [runtime.listener, runtime.admin] {
        if !addr.ip().is_loopback() {
            bail!("the local gateway binds loopback addresses only, not {addr}");
        }
    }
    let virtual_hosts: Vec<Value> = plan
        .virtual_hosts
        .iter()
        .map(|vh| {
            json!({
                "name": vh.name,
                "domains": vh.domains,
                "routes": vh.routes,
                "include_request_attempt_count": true,
            })
        })
        .collect();
    let mut clusters = Vec::new();
    for upstream in &plan.upstreams {
        let Some(file) = runtime.endpoint_files.get(&upstream.cluster) else {
            bail!("no endpoint file for {}", upstream.cluster);
        };
        clusters.push(json!({
            "name": upstream.cluster,
            // Istio's clusters for Kubernetes Services are EDS clusters too.
            "type": "EDS",
            "eds_cluster_config": endpoints::eds_cluster_config(
                &upstream.cluster,
                file,
                &runtime.endpoints_dir,
            ),
            "connect_timeout": CONNECT_TIMEOUT,
            // Istio's default load balancer when no DestinationRule says otherwise.
            "lb_policy": "LEAST_REQUEST",
            "circuit_breakers": {"thresholds": [{
                "max_connections": UNLIMITED,
                "max_pending_requests": UNLIMITED,
                "max_requests": UNLIMITED,
                "max_retries": UNLIMITED,
            }]},
        }));
    }
    let connection_manager = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": format!("outbound_0.0.0.0_{}", plan.listen_port),
        // As `buildGatewayHTTPRouteConfig` (pilot/pkg/networking/core/gateway.go): a Host
        // header's port plays no part in choosing the virtual host, and a direct response
        // may carry up to 1 MiB.
        "route_config": {
            "name": format!("http.{}", plan.listen_port),
            "virtual_hosts": virtual_hosts,
            "validate_clusters": false,
            "ignore_port_in_host_matching": true,
            "max_direct_response_body_size_bytes": 1024 * 1024,
        },
        "server_name": GATEWAY_SERVER_NAME,
        "server_header_transformation": "OVERWRITE",
        "normalize_path": true,
        // As `buildGatewayConnectionManager` and `buildHTTPConnectionManager`
        // (pilot/pkg/networking/core/gateway.go, listener_builder.go): `Expect: 100-continue`
        // passes to the app (ENABLE_100_CONTINUE_HEADERS defaults to true), and an idle stream
        // is never cut.
        "proxy_100_continue": true,
        "stream_idle_timeout": "0s",
        "merge_slashes": false,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "use_remote_address": true,
        "forward_client_cert_details": "SANITIZE_SET",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "access_log": [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": runtime.access_log.to_string_lossy(),
                "log_format": {"json_format": access_log_format()},
            }
        }],
        // Istio's gateway filter chain ends with fault injection, CORS and the router
        // (`buildHTTPConnectionManager`, pilot/pkg/networking/core/listener_builder.go); routes
        // configure the first two per route.
        "http_filters": [{
            "name": "envoy.filters.http.fault",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            }
        }, {
            "name": "envoy.filters.http.cors",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
            }
        }, {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                // Istio keeps the router's x-envoy-* response headers on (its default).
                "suppress_envoy_headers": false,
            }
        }],
    });
    Ok(json!({
        "node": {
            "id": format!("router~{}~local-ingressgateway~{}", runtime.listener.ip(), plan.gateway.replace('/', ".")),
            "cluster": INGRESS_GATEWAY,
        },
        "admin": {"address": socket_address(runtime.admin)},
        "static_resources": {
            "listeners": [{
                "name": format!("0.0.0.0_{}", plan.listen_port),
                "address": socket_address(runtime.listener),
                // Envoy shares ports by default (SO_REUSEPORT): a second gateway on a taken
                // `--port` would silently take half the traffic instead of failing.
                "enable_reuse_port": false,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": connection_manager,
                }]}],
            }],
            "clusters": clusters,
        },
    }))
}
