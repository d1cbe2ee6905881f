//! The gateway probe talks to loopback only, so a proxy configured in the environment (as on
//! many corporate machines and some CI runners) must not take its requests. Alone in its own
//! test binary: it sets the proxy variables for the whole process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Accepts connections and answers each with `response`, counting them.
async fn serve(response: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (address, connections)
}

#[tokio::test]
async fn the_gateway_probe_ignores_proxies_from_the_environment() {
    let (proxy, proxied) =
        serve("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
    let (gateway, _) = serve(
        "HTTP/1.1 200 OK\r\nserver: istio-envoy\r\nx-served-by: wtyfft-deploy-abc\r\n\
         x-envoy-upstream-service-time: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    )
    .await;
    let proxy_url = format!("http://{proxy}");
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        // SAFETY: this binary has this one test, which sets the variables before any client
        // reads them; nothing else in the process reads or writes the environment meanwhile.
        unsafe { std::env::set_var(name, &proxy_url) };
    }
    for name in ["NO_PROXY", "no_proxy"] {
        // SAFETY: as above.
        unsafe { std::env::remove_var(name) };
    }
    harness::k8s::gateway::wait_for_route(gateway, Duration::from_secs(3))
        .await
        .expect("the probe reaches the gateway on loopback directly");
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "the probe went through the proxy"
    );
}
