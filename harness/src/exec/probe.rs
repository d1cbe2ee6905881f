//! The one HTTP probe: one HTTP/1.1 request to a gateway or a replica, the whole answer read;
//! and what every answer of the gateway carries (`server: istio-envoy`).
//!
//! The request target goes on the wire exactly as written (`/fft/../metrics`, `//fft`): clients
//! built on URL parsers (reqwest) resolve dot segments and so could never test the gateway's own
//! path normalisation. A fresh connection per request keeps every answer independent, which is
//! also what spreads requests over replicas the way separate clients would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::names::GATEWAY_SERVER_NAME;

/// A whole answer.
#[derive(Clone, Debug)]
pub struct ProbeResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl ProbeResponse {
    /// A header's value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[cfg(test)]
impl ProbeResponse {
    /// An answer as a test describes it.
    pub(crate) fn canned(
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        elapsed: Duration,
    ) -> Self {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        ProbeResponse {
            status,
            headers: map,
            body: body.as_bytes().to_vec(),
            elapsed,
        }
    }
}

/// One request: method, raw request target (path and query) and an optional body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    pub method: String,
    pub target: String,
    /// Headers; `host` is the address sent to unless one of them is `host`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ProbeRequest {
    pub fn new(method: &str, target: &str) -> Self {
        ProbeRequest {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// How long one request may take, connection included: FFTs of the suite's sizes take
/// milliseconds, so this only bounds a hung peer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `request` to `addr` on a new connection and reads the answer to its end.
pub async fn send(addr: SocketAddr, request: &ProbeRequest) -> Result<ProbeResponse> {
    tokio::time::timeout(REQUEST_TIMEOUT, send_unbounded(addr, request))
        .await
        .with_context(|| {
            format!(
                "{} {} to {addr}: no answer within {REQUEST_TIMEOUT:?}",
                request.method, request.target
            )
        })?
}

async fn send_unbounded(addr: SocketAddr, request: &ProbeRequest) -> Result<ProbeResponse> {
    let what = format!("{} {} to {addr}", request.method, request.target);
    if !request.target.starts_with('/') {
        bail!("{what}: a request target must start with `/`");
    }
    let start = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("{what}: connecting"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("{what}: HTTP handshake"))?;
    let driver = tokio::spawn(connection);
    let mut builder = hyper::Request::builder();
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        builder = builder.header(
            hyper::header::HOST,
            HeaderValue::from_str(&addr.to_string()).expect("a socket address is a valid header"),
        );
    }
    let http_request = builder
        .method(request.method.as_str())
        .uri(request.target.as_str())
        .body(Full::new(Bytes::from(request.body.clone())))
        .with_context(|| format!("{what}: building the request"))?;
    let response = sender
        .send_request(http_request)
        .await
        .with_context(|| format!("{what}: sending the request"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("{what}: reading the body"))?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok(ProbeResponse {
        status,
        headers,
        body,
        elapsed: start.elapsed(),
    })
}

/// Every answer of the gateway says `server: istio-envoy`, routed or not.
pub(crate) fn check_server_header(response: &ProbeResponse) -> Result<()> {
    match response.header("server") {
        Some(GATEWAY_SERVER_NAME) => Ok(()),
        other => bail!("`server` header is {other:?}, not `{GATEWAY_SERVER_NAME}`"),
    }
}

/// How many good answers in a row make a gateway's answer stable: configuration reaches Envoy
/// asynchronously, and one good answer may precede a listener or route being replaced.
pub(crate) const STABLE_ANSWERS: u32 = 3;

/// Waits until the gateway's listener answers as the gateway (`server: istio-envoy`), several
/// times in a row. Any status will do: with a static configuration the routes are complete once
/// the listener answers, and which paths are routed depends on the VirtualService (a gateway
/// bound to no VirtualService answers every path with its own 404).
pub(crate) async fn wait_until_gateway_answers(
    ingress: SocketAddr,
    timeout: Duration,
) -> Result<()> {
    crate::exec::wait::Retry::within(timeout)
        .successes_in_a_row(STABLE_ANSWERS)
        .run(
            &format!("the gateway at {ingress} to answer as istio-envoy"),
            || async {
                let response = send(ingress, &ProbeRequest::new("GET", "/")).await?;
                check_server_header(&response)
            },
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot server that records the request line it received.
    async fn echo_request_line() -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed early");
                seen.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 404 Not Found\r\nx-served-by: r0\r\ncontent-length: 9\r\n\r\nNot Found")
                .await
                .unwrap();
            let text = String::from_utf8(seen).unwrap();
            text.lines().next().unwrap().to_string()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn the_target_goes_on_the_wire_unchanged() {
        for target in ["/fft/../metrics", "//fft", "/metrics?x=1", "/fft/./real/16"] {
            let (addr, server) = echo_request_line().await;
            let response = send(addr, &ProbeRequest::new("POST", target))
                .await
                .unwrap();
            assert_eq!(server.await.unwrap(), format!("POST {target} HTTP/1.1"));
            assert_eq!(response.status, 404);
            assert_eq!(response.header("x-served-by"), Some("r0"));
            assert_eq!(response.body_text(), "Not Found");
        }
    }

    #[tokio::test]
    async fn refused_connection_names_the_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = send(addr, &ProbeRequest::new("GET", "/healthz"))
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("GET /healthz to {addr}: connecting")),
            "{text}"
        );
    }
}
