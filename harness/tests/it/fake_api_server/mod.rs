//! A contract fake of the Kubernetes API server for what the harness asks about pods, on a real
//! loopback socket so that a real `kube::Client` talks to it exactly as to a cluster, websocket
//! upgrades included. Each behaviour follows the upstream file named beside it; the pods' ports
//! are loopback listeners the test starts, so every byte stays on 127.0.0.1.
//!
//! - `GET /api/v1/namespaces/{ns}/pods?labelSelector=k=v` and `GET …/pods/{name}`: a PodList or
//!   the Pod; an unknown pod is a 404 `Status` (`NotFound`, `pods "x" not found`), as
//!   `staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go` `NewNotFound` writes it.
//! - `GET …/pods/{name}:{port}/proxy/{path}` (kubernetes `pkg/registry/core/pod/rest/subresources.go`
//!   `ProxyREST.Connect`, `pkg/registry/core/pod/strategy.go` `ResourceLocation`): the pod's
//!   answer passed through, status, headers and body (`apimachinery/pkg/util/proxy/upgradeaware.go`
//!   serves it with `httputil.ReverseProxy`); a port that refuses is a 503 `Status`
//!   `ServiceUnavailable` whose message is `error trying to reach service: dial tcp …: connect:
//!   connection refused` (`apimachinery/pkg/util/proxy/transport.go` `RoundTrip` →
//!   `errors.NewServiceUnavailable`); a pod without an IP yet is a 400 `BadRequest` with the
//!   message `address not allowed` (`ResourceLocation` → `proxyutil.IsProxyableIP`).
//! - `GET …/pods/{name}/portforward?ports=P` upgraded to a websocket with subprotocol
//!   `v4.channel.k8s.io` (`pkg/kubelet/cri/streaming/portforward/websocket.go`
//!   `handleWebSocketStreams`): every message is binary with a channel byte (data `2i`, error
//!   `2i+1`); each channel first carries the port as two little-endian bytes. The bytes of the
//!   pod connection flow on the data channel. When the pod closes its side, the runtime waits up
//!   to one second for the other direction (containerd `internal/cri/server/sandbox_portforward_linux.go`
//!   `portForward`), then the stream pair is closed and the connection with it: a websocket
//!   Close frame (`apimachinery/pkg/util/httpstream/wsstream/conn.go` `Conn.Close` →
//!   golang.org/x/net/websocket `Conn.Close`, which writes the Close frame and closes the TCP
//!   connection without waiting for the peer's). A port that refuses gets the runtime's message
//!   on the error channel, then the same Close.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The only subprotocol kube-rs offers for a port-forward.
pub const PORT_FORWARD_PROTOCOL: &str = "v4.channel.k8s.io";

/// A pod the fake knows: its labels, readiness, the IP it reports (never dialled) and, for each
/// container port that listens, the loopback address standing in for `podIP:port`.
#[derive(Clone, Debug)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub pod_ip: Option<String>,
    pub ports: BTreeMap<u16, SocketAddr>,
}

impl FakePod {
    pub fn new(namespace: &str, name: &str) -> Self {
        FakePod {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            ready: true,
            pod_ip: Some("10.244.0.7".into()),
            ports: BTreeMap::new(),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// `port` in the pod is served by the loopback listener at `at`.
    pub fn port(mut self, port: u16, at: SocketAddr) -> Self {
        self.ports.insert(port, at);
        self
    }

    fn json(&self) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels,
                         "uid": format!("uid-{}", self.name)},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            "status": {
                "phase": "Running",
                "podIP": self.pod_ip,
                "conditions": [{"type": "Ready", "status": if self.ready { "True" } else { "False" }}]
            }
        })
    }
}

#[derive(Default)]
struct State {
    pods: Vec<FakePod>,
    requests: Vec<String>,
}

/// The running fake; dropping it stops it.
pub struct FakeApiServer {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    pub async fn start(pods: Vec<FakePod>) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            pods,
            requests: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeApiServer {
            address,
            state,
            task,
        }
    }

    /// A real kube-rs client for this server, configured as the harness configures its own.
    pub fn client(&self) -> kube::Client {
        let url: hyper::Uri = format!("http://{}", self.address).parse().unwrap();
        harness::k8s::client::client_from_config(kube::Config::new(url)).unwrap()
    }

    /// `METHOD path?query` of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn set_pods(&self, pods: Vec<FakePod>) {
        self.state.lock().unwrap().pods = pods;
    }
}

type FakeBody = Full<Bytes>;

fn status(code: StatusCode, reason: &str, message: &str) -> Response<FakeBody> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn ok_json(body: Value) -> Response<FakeBody> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn not_found(name: &str) -> Response<FakeBody> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("pods \"{name}\" not found"),
    )
}

fn selector_matches(selector: &str, pod: &FakePod) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|pair| match pair.split_once('=') {
            Some((k, v)) => pod.labels.get(k).map(String::as_str) == Some(v),
            None => false,
        })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3D", "=")
                .replace("%3d", "=")
                .replace("%2C", ",")
                .replace("%2c", ",")
        })
    })
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Response<FakeBody> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    state.lock().unwrap().requests.push(format!(
        "{} {path}{}",
        request.method(),
        if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        }
    ));
    let Some(rest) = path.strip_prefix("/api/v1/namespaces/") else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    };
    let parts: Vec<&str> = rest.splitn(4, '/').collect();
    let namespace = parts[0];
    let find = |name: &str| {
        state
            .lock()
            .unwrap()
            .pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .cloned()
    };
    match parts.as_slice() {
        [_, "pods"] => {
            let selector = query_param(&query, "labelSelector").unwrap_or_default();
            let items: Vec<Value> = state
                .lock()
                .unwrap()
                .pods
                .iter()
                .filter(|p| p.namespace == namespace && selector_matches(&selector, p))
                .map(FakePod::json)
                .collect();
            ok_json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}))
        }
        [_, "pods", name] => match find(name) {
            Some(pod) => ok_json(pod.json()),
            None => not_found(name),
        },
        [_, "pods", name_port, "proxy"] => proxy(find, name_port, "", &query).await,
        [_, "pods", name_port, sub] if sub.starts_with("proxy/") => {
            proxy(find, name_port, &sub["proxy/".len()..], &query).await
        }
        [_, "pods", name, "portforward"] => match find(name) {
            None => not_found(name),
            Some(pod) => port_forward(pod, &query, request),
        },
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the fake serves no {path}"),
        ),
    }
}

/// The pod `proxy` subresource: `name`, `name:port` or `scheme:name:port`.
async fn proxy(
    find: impl Fn(&str) -> Option<FakePod>,
    name_port: &str,
    path: &str,
    query: &str,
) -> Response<FakeBody> {
    let fields: Vec<&str> = name_port.split(':').collect();
    let (name, port) = match fields.as_slice() {
        [name] => (*name, None),
        [name, port] | [_, name, port] => (*name, port.parse::<u16>().ok()),
        _ => return status(StatusCode::BAD_REQUEST, "BadRequest", "invalid request"),
    };
    let Some(pod) = find(name) else {
        return not_found(name);
    };
    let Some(pod_ip) = pod.pod_ip.clone() else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "address not allowed");
    };
    // Without a port, `ResourceLocation` takes the pod's first declared containerPort.
    let Some(port) = port.or_else(|| pod.ports.keys().next().copied()) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "invalid request");
    };
    let refused = || {
        status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &format!(
                "error trying to reach service: dial tcp {pod_ip}:{port}: connect: connection refused"
            ),
        )
    };
    let Some(address) = pod.ports.get(&port).copied() else {
        return refused();
    };
    let Ok(stream) = TcpStream::connect(address).await else {
        return refused();
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, FakeBody>(TokioIo::new(stream)).await
    else {
        return refused();
    };
    tokio::spawn(connection);
    let target = if query.is_empty() {
        format!("/{path}")
    } else {
        format!("/{path}?{query}")
    };
    let upstream = Request::get(target)
        .header("host", format!("{pod_ip}:{port}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let Ok(answer) = sender.send_request(upstream).await else {
        // The pod accepted and closed without an answer: the proxy transport's RoundTrip wraps
        // every transport error the same way (apimachinery pkg/util/proxy/transport.go).
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "error trying to reach service: EOF",
        );
    };
    let (parts, body) = answer.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut response = Response::builder().status(parts.status);
    for (name, value) in &parts.headers {
        response = response.header(name, value);
    }
    response.body(Full::new(bytes)).unwrap()
}

fn port_forward(pod: FakePod, query: &str, mut request: Request<Incoming>) -> Response<FakeBody> {
    let Some(port) = query_param(query, "ports").and_then(|p| p.parse::<u16>().ok()) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "at least 1 port must be specified",
        );
    };
    let headers = request.headers();
    let offered = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !offered
        .split(',')
        .any(|p| p.trim() == PORT_FORWARD_PROTOCOL)
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("unsupported subprotocol {offered:?}"),
        );
    }
    let Some(key) = headers.get("sec-websocket-key") else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "not a websocket upgrade",
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        serve_port_forward(ws, pod, port).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", PORT_FORWARD_PROTOCOL)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn serve_port_forward<S>(mut ws: WebSocketStream<S>, pod: FakePod, port: u16)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let port_bytes = port.to_le_bytes();
    for channel in [0u8, 1] {
        let frame = vec![channel, port_bytes[0], port_bytes[1]];
        if ws.send(Message::binary(frame)).await.is_err() {
            return;
        }
    }
    let connected = match pod.ports.get(&port) {
        Some(address) => TcpStream::connect(*address).await.ok(),
        None => None,
    };
    let Some(mut upstream) = connected else {
        let mut message = vec![1u8];
        message.extend_from_slice(
            format!(
                "error forwarding port {port} to pod {}, uid : failed to execute portforward in \
                 network namespace \"/var/run/netns/cni-0\": failed to connect to localhost:{port} \
                 inside namespace, IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused",
                pod.name
            )
            .as_bytes(),
        );
        let _ = ws.send(Message::binary(message)).await;
        let _ = ws.close(None).await;
        return;
    };
    let mut buffer = vec![0u8; 16 * 1024];
    // Copy both ways until the pod closes its side.
    loop {
        tokio::select! {
            read = upstream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = vec![0u8];
                    frame.extend_from_slice(&buffer[..n]);
                    if ws.send(Message::binary(frame)).await.is_err() {
                        return;
                    }
                }
            },
            message = ws.next() => match message {
                Some(Ok(Message::Binary(bytes))) if bytes.len() > 1 && bytes[0] == 0 => {
                    if upstream.write_all(&bytes[1..]).await.is_err() {
                        break;
                    }
                }
                // The client closed the websocket: the kubelet ends the forward.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    // The pod's side ended: the runtime gives the other direction up to a second, then closes.
    let grace = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = &mut grace => break,
            message = ws.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    // x/net/websocket's Close: the Close frame, then the TCP connection is closed at once.
    let _ = ws.send(Message::Close(None)).await;
    drop(ws);
}

/// A loopback HTTP server standing in for a container port: every request gets `status` with
/// `body`; an HTTP/1.0 request without keep-alive gets its connection closed after the answer,
/// as any HTTP/1.1 server does.
pub async fn pod_server(
    status: u16,
    body: &'static str,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let path = request.uri().path().to_string();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "text/plain")
                                .header("x-served-by", "pod-0")
                                .header("x-path", path)
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, task)
}

/// A loopback port where nothing listens (bound, then released).
pub async fn refused_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    address
}
