//! Each local replica's sidecar: a real Envoy in front of the app, configured as Istio configures
//! a sidecar's inbound HTTP route, so that the gateway reaches a replica the way it reaches a
//! pod.
//!
//! What it changes is what a stopping replica looks like from the gateway. The sidecar outlives
//! the app (a native sidecar stops after the pod's main containers), so a request the gateway
//! still sends to a replica whose app no longer accepts is *answered* — with the sidecar's 503 —
//! rather than refused; the gateway's default retry policy retries a refused connection on
//! another host but not a 503 (see `translate::default_retry_policy`). That is the 503 of a
//! rollout without a drain delay.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::config::names::APP_PORT;

/// Istio's inbound cluster name for the app's port (`inbound|<port>||`).
fn inbound_cluster() -> String {
    format!("inbound|{APP_PORT}||")
}

/// The sidecar's bootstrap: a listener on a free loopback port whose every request goes to
/// `app`, with the retry policy of Istio's default inbound route (`BuildDefaultHTTPInboundRoute`,
/// pilot/pkg/networking/core/route/route.go: `reset-before-request`, two retries, no timeout).
pub(crate) fn bootstrap(replica: &str, app: SocketAddr) -> Value {
    let cluster = inbound_cluster();
    let socket = |addr: SocketAddr| json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}});
    let any_port = SocketAddr::new(app.ip(), 0);
    let connection_manager = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": format!("inbound_0.0.0.0_{APP_PORT}"),
        "route_config": {
            "name": format!("inbound|{APP_PORT}||"),
            "virtual_hosts": [{
                "name": format!("inbound|http|{APP_PORT}"),
                "domains": ["*"],
                "routes": [{
                    "name": "default",
                    "match": {"prefix": "/"},
                    "route": {
                        "cluster": cluster,
                        "timeout": "0s",
                        "max_stream_duration": {
                            "max_stream_duration": "0s",
                            "grpc_timeout_header_max": "0s",
                        },
                        "retry_policy": {"retry_on": "reset-before-request", "num_retries": 2},
                    },
                }],
            }],
            "validate_clusters": false,
        },
        "normalize_path": true,
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            },
        }],
    });
    json!({
        "node": {"id": format!("sidecar~{}~{replica}.local~local", app.ip()), "cluster": replica},
        "admin": {"address": socket(any_port)},
        "static_resources": {
            "listeners": [{
                "name": format!("inbound_{replica}"),
                "address": socket(any_port),
                "enable_reuse_port": false,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": connection_manager,
                }]}],
            }],
            "clusters": [{
                "name": cluster,
                "type": "STATIC",
                "connect_timeout": "10s",
                "load_assignment": {
                    "cluster_name": cluster,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(app)}}]}],
                },
            }],
        },
    })
}

/// The sidecar's process name for a replica.
pub(crate) fn process_name(replica: &str) -> String {
    format!("{replica}-sidecar")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbound_route_retries_only_resets_before_the_request() {
        let app: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let config = bootstrap("r-0", app);
        let listener = &config["static_resources"]["listeners"][0];
        assert_eq!(
            listener["address"]["socket_address"]["address"],
            "127.0.0.1"
        );
        assert_eq!(listener["address"]["socket_address"]["port_value"], 0);
        let route = &listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
            [0]["routes"][0]["route"];
        assert_eq!(route["cluster"], "inbound|8080||");
        assert_eq!(
            route["retry_policy"],
            json!({"retry_on": "reset-before-request", "num_retries": 2})
        );
        let endpoint = &config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"]
            [0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!(endpoint["port_value"], 4001);
    }
}
