//! Reading a pod's port and forwarding to the gateway, against the contract fake of the API
//! server (`fake_api_server`): the pod proxy subresource passes the pod's answer through and
//! reports a refused port, a missing pod and a pod without an IP as the API server does; the
//! `existing` target's gateway port-forward carries request after request even though the
//! kubelet closes each websocket first.

use crate::fake_api_server;

use std::time::Duration;

use fake_api_server::{FakeApiServer, FakePod, pod_server, refused_port};
use harness::k8s::client::pod_http_get;

const NS: &str = "wty-istio";

async fn with_pod(pod: FakePod) -> FakeApiServer {
    FakeApiServer::start(vec![pod]).await
}

async fn get(api: &FakeApiServer, pod: &str, port: u16, path: &str) -> anyhow::Result<String> {
    tokio::time::timeout(
        Duration::from_secs(20),
        pod_http_get(&api.client(), NS, pod, port, path),
    )
    .await
    .expect("bounded")
}

#[tokio::test]
async fn a_pods_answer_comes_back_through_the_proxy_subresource() {
    let (metrics, _server) = pod_server(200, "fft_http_requests_total 3\n").await;
    let api = with_pod(FakePod::new(NS, "fft-0").port(15020, metrics)).await;
    let body = get(&api, "fft-0", 15020, "/stats/prometheus")
        .await
        .unwrap();
    assert_eq!(body, "fft_http_requests_total 3\n");
    assert_eq!(
        api.requests(),
        ["GET /api/v1/namespaces/wty-istio/pods/fft-0:15020/proxy/stats/prometheus"],
        "one plain GET through the API server, no websocket"
    );
}

#[tokio::test]
async fn a_pods_error_status_is_an_error_naming_it() {
    let (app, _server) = pod_server(404, "Not Found").await;
    let api = with_pod(FakePod::new(NS, "fft-0").port(8080, app)).await;
    let err = format!(
        "{:#}",
        get(&api, "fft-0", 8080, "/metricz").await.unwrap_err()
    );
    assert!(err.contains("the pod answered 404 Not Found"), "{err}");
    assert!(err.contains(": Not Found"), "the pod's body: {err}");
}

#[tokio::test]
async fn a_pods_json_error_keeps_its_status() {
    let (app, _server) = pod_server(400, r#"{"error":"numSamples must be 1..=1048576"}"#).await;
    let api = with_pod(FakePod::new(NS, "fft-0").port(8080, app)).await;
    let err = format!(
        "{:#}",
        get(&api, "fft-0", 8080, "/fft?numSamples=0")
            .await
            .unwrap_err()
    );
    assert!(err.contains("the pod answered 400 Bad Request"), "{err}");
    assert!(err.contains("numSamples must be"), "{err}");
    let seen = api.requests();
    assert_eq!(
        seen,
        ["GET /api/v1/namespaces/wty-istio/pods/fft-0:8080/proxy/fft?numSamples=0"]
    );
    assert!(err.contains("wty-istio/fft-0:8080"), "{err}");
}

#[tokio::test]
async fn a_refused_port_is_the_api_servers_503() {
    let api = with_pod(FakePod::new(NS, "fft-0").port(15020, refused_port().await)).await;
    let err = format!(
        "{:#}",
        get(&api, "fft-0", 15020, "/stats/prometheus")
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("the API server answered 503 ServiceUnavailable"),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");
}

#[tokio::test]
async fn a_missing_pod_and_a_pod_without_an_ip_are_named() {
    let mut pending = FakePod::new(NS, "fft-1");
    pending.pod_ip = None;
    let api = FakeApiServer::start(vec![pending]).await;
    let err = format!(
        "{:#}",
        get(&api, "fft-9", 8080, "/metrics").await.unwrap_err()
    );
    assert!(
        err.contains("answered 404 NotFound: pods \"fft-9\" not found"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        get(&api, "fft-1", 8080, "/metrics").await.unwrap_err()
    );
    assert!(
        err.contains("answered 400 BadRequest: address not allowed"),
        "{err}"
    );
}

/// The `existing` target's gateway forward: one websocket per connection; the kubelet closes
/// each one after the pod's side ends, and the next connection still gets its answer.
#[tokio::test]
async fn the_gateway_forward_carries_connection_after_connection() {
    use harness::config::names::GATEWAY_TARGET_PORT;
    use harness::k8s::gateway::forward_gateway;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (envoy, _server) = pod_server(200, "routed").await;
    let gateway = FakePod::new("istio-system", "istio-ingressgateway-7c9d")
        .label("istio", "ingressgateway")
        .port(GATEWAY_TARGET_PORT, envoy);
    let api = FakeApiServer::start(vec![gateway]).await;
    let (address, task) = forward_gateway(
        &api.client(),
        &harness::k8s::mesh::GatewayTarget::istioctl_default(),
    )
    .await
    .unwrap();
    for round in 0..3 {
        let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
        connection
            .write_all(b"GET /fft HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            connection.read_to_string(&mut answer),
        )
        .await
        .expect("the forward ends the connection once the gateway closed it")
        .unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 200"),
            "round {round}: {answer}"
        );
        assert!(answer.ends_with("routed"), "round {round}: {answer}");
    }
    let forwards = api
        .requests()
        .iter()
        .filter(|r| {
            r.contains("/pods/istio-ingressgateway-7c9d/portforward?") && r.ends_with("ports=8080")
        })
        .count();
    assert_eq!(forwards, 3, "{:?}", api.requests());
    task.abort();
}
