//! Where the ingress gateway answers.
//!
//! The suite always probes a loopback address: `127.0.0.1:<hostPort>` from the kind config's
//! `extraPortMappings` (portable: Linux, Docker Desktop, rootless), or for the `existing` target
//! a local port-forward to the gateway pod. The article's discovery (`status.hostIP` of the
//! gateway pod + the `http2` nodePort) gives the kind node container's IP, reachable only from a
//! Linux host with native Docker; it is computed for `harness up` to print, never probed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

use crate::cluster::KindConfig;
use crate::deploy::{Attempt, wait_for};
use crate::istio::{INGRESS_GATEWAY, ISTIO_NAMESPACE};

/// The gateway pods' label (chart default).
pub const GATEWAY_SELECTOR: &str = "istio=ingressgateway";
/// The gateway listener port inside its pod (http2 80 → 8080).
pub const GATEWAY_TARGET_PORT: u16 = 8080;
/// A path the VirtualService routes to the app (`exact: /metrics`).
pub const ROUTED_PATH: &str = "/metrics";
/// The app's own header: a routed answer carries it, a gateway 404 does not.
pub const SERVED_BY_HEADER: &str = "x-served-by";
/// Config reaches Envoy asynchronously: one good answer is not yet a stable route.
const SUCCESSES_IN_A_ROW: u32 = 3;

/// The http2 nodePort pinned in the IstioOperator overlay.
pub fn gateway_node_port(overlay_file: &Path) -> Result<u16> {
    let text = std::fs::read_to_string(overlay_file)
        .with_context(|| format!("reading {}", overlay_file.display()))?;
    let overlay: Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("parsing {}", overlay_file.display()))?;
    overlay
        .pointer("/spec/components/ingressGateways/0/k8s/service/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("http2"))
        .and_then(|p| p.get("nodePort")?.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .with_context(|| {
            format!(
                "{}: spec.components.ingressGateways[0].k8s.service.ports has no `http2` port \
                 with a nodePort",
                overlay_file.display()
            )
        })
}

/// `127.0.0.1:<hostPort>` for the kind mapping of `node_port`.
pub fn loopback_endpoint(config: &KindConfig, node_port: u16) -> Result<SocketAddr> {
    let (listen, host_port) = config.host_mapping(node_port).with_context(|| {
        format!(
            "{}: no extraPortMappings entry with containerPort {node_port} (the gateway's http2 \
             nodePort); add one with listenAddress 127.0.0.1",
            config.path.display()
        )
    })?;
    let listen: IpAddr = listen
        .parse()
        .with_context(|| format!("{}: listenAddress `{listen}`", config.path.display()))?;
    ensure!(
        listen.is_loopback() || listen.is_unspecified(),
        "{}: the gateway mapping listens on {listen}, which is not loopback; the suite only \
         sends traffic to 127.0.0.0/8",
        config.path.display()
    );
    Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), host_port))
}

/// The `http2` nodePort of the gateway Service.
pub fn service_http2_node_port(service: &Service) -> Result<u16> {
    let port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http2"))
        .and_then(|p| p.node_port)
        .context("the ingress gateway Service has no `http2` port with a nodePort")?;
    u16::try_from(port).context("nodePort out of range")
}

pub async fn live_gateway_node_port(client: &kube::Client) -> Result<u16> {
    let services: Api<Service> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    let service = services
        .get(INGRESS_GATEWAY)
        .await
        .with_context(|| format!("reading Service {ISTIO_NAMESPACE}/{INGRESS_GATEWAY}"))?;
    service_http2_node_port(&service)
}

/// The whole path a probe takes on kind, checked before probing: the live gateway Service's
/// http2 nodePort is the containerPort the kind config maps, and the node container really
/// publishes it where the config says (`docker port NODE PORT/tcp`, or its error when it
/// publishes nothing). A cluster made from another config, or an Istio installed from another
/// overlay, otherwise shows up only as connection errors until the route wait times out.
pub fn verify_gateway_path(
    config: &KindConfig,
    overlay_file: &Path,
    live_node_port: u16,
    node_container: &str,
    docker_port: std::result::Result<&str, &str>,
) -> Result<SocketAddr> {
    let (listen, host_port) = config.host_mapping(live_node_port).with_context(|| {
        let mapped: Vec<String> = config
            .container_ports()
            .iter()
            .map(u16::to_string)
            .collect();
        format!(
            "the gateway Service's http2 nodePort is {live_node_port}, but {} maps containerPort \
             {}: make them equal (the nodePort is pinned in {}, the mapping is in {}; a reused \
             cluster keeps the Istio it was installed with)",
            config.path.display(),
            if mapped.is_empty() {
                "nothing".to_string()
            } else {
                mapped.join(", ")
            },
            overlay_file.display(),
            config.path.display()
        )
    })?;
    let address = loopback_endpoint(config, live_node_port)?;
    let published: Vec<&str> = match docker_port {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect(),
        Err(_) => Vec::new(),
    };
    let wanted = format!("{listen}:{host_port}");
    if published.contains(&wanted.as_str()) {
        return Ok(address);
    }
    let seen = match docker_port {
        Ok(_) if !published.is_empty() => published.join(", "),
        Ok(_) => "nothing".to_string(),
        Err(err) => format!("nothing ({})", err.trim()),
    };
    bail!(
        "`docker port {node_container} {live_node_port}/tcp` shows {seen}, but {} publishes \
         containerPort {live_node_port} on {wanted}: the cluster was created from another \
         config; recreate it (kind delete cluster --name {}) or make {} match",
        config.path.display(),
        node_container
            .strip_suffix("-control-plane")
            .unwrap_or(node_container),
        config.path.display()
    )
}

/// The article's `INGRESS_HOST` (`status.hostIP` of a gateway pod) and `INGRESS_PORT` (the
/// Service's `http2` nodePort).
pub fn article_endpoint(gateway_pods: &[Pod], service: &Service) -> Result<(String, u16)> {
    let host = gateway_pods
        .iter()
        .find_map(|p| p.status.as_ref()?.host_ip.clone())
        .context("no ingress gateway pod has a status.hostIP yet")?;
    Ok((host, service_http2_node_port(service)?))
}

/// The article's export lines, for a person to paste.
pub fn export_lines(host: &str, port: u16) -> String {
    format!(
        "# the article's discovery (reachable from a Linux host with native Docker only):\n\
         export INGRESS_HOST={host}\nexport INGRESS_PORT={port}\n\
         curl -s \"http://$INGRESS_HOST:$INGRESS_PORT/fft/real/1024\""
    )
}

pub async fn live_article_endpoint(client: &kube::Client) -> Result<(String, u16)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    let gateway_pods = pods
        .list(&ListParams::default().labels(GATEWAY_SELECTOR))
        .await
        .context("listing the ingress gateway pods")?;
    let services: Api<Service> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    let service = services
        .get(INGRESS_GATEWAY)
        .await
        .with_context(|| format!("reading Service {ISTIO_NAMESPACE}/{INGRESS_GATEWAY}"))?;
    article_endpoint(&gateway_pods.items, &service)
}

/// What one answer through the gateway says about the route.
pub fn classify_answer(status: u16, served_by: Option<&str>, upstream_time: bool) -> Attempt<()> {
    if status == 200 && served_by.is_some() && upstream_time {
        Attempt::Done(())
    } else if status == 404 && served_by.is_none() {
        Attempt::NotYet("404 from the gateway itself: the route is not configured yet".into())
    } else {
        Attempt::NotYet(format!(
            "status {status}, x-served-by {}, x-envoy-upstream-service-time {}",
            served_by.unwrap_or("absent"),
            if upstream_time { "present" } else { "absent" }
        ))
    }
}

/// Polls `GET /metrics` through the gateway until the app answers it several times in a row.
pub async fn wait_for_route(ingress: SocketAddr, timeout: Duration) -> Result<()> {
    if !ingress.ip().is_loopback() {
        bail!("refusing to probe {ingress}: the suite only sends traffic to 127.0.0.0/8");
    }
    // The probe goes to loopback: an HTTP(S)_PROXY of the environment must not take it.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    let url = format!("http://{ingress}{ROUTED_PATH}");
    let in_a_row = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    wait_for(
        &format!("the route {url} through the gateway to answer from the app {SUCCESSES_IN_A_ROW} times in a row"),
        timeout,
        Duration::from_millis(500),
        || {
            let request = client.get(&url).send();
            let streak = in_a_row.clone();
            async move {
                let attempt = match request.await {
                    Ok(response) => {
                        let headers = response.headers();
                        let served_by = headers
                            .get(SERVED_BY_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        classify_answer(
                            response.status().as_u16(),
                            served_by.as_deref(),
                            headers.contains_key("x-envoy-upstream-service-time"),
                        )
                    }
                    // Before the Gateway reaches Envoy nothing listens on 8080: resets.
                    Err(err) => Attempt::NotYet(format!("{err}")),
                };
                Ok(match attempt {
                    Attempt::Done(()) => {
                        let good = streak.fetch_add(1, Ordering::SeqCst) + 1;
                        if good >= SUCCESSES_IN_A_ROW {
                            Attempt::Done(())
                        } else {
                            Attempt::NotYet(format!("{good} good answer(s) in a row"))
                        }
                    }
                    not_yet => {
                        streak.store(0, Ordering::SeqCst);
                        not_yet
                    }
                })
            }
        },
    )
    .await
}

/// For the `existing` target: a loopback listener whose every connection is port-forwarded to
/// the gateway pod's listener, so the suite's traffic stays on 127.0.0.1 whatever the cluster.
pub async fn forward_gateway(
    client: &kube::Client,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    let gateway = pods
        .list(&ListParams::default().labels(GATEWAY_SELECTOR))
        .await
        .context("listing the ingress gateway pods")?
        .items
        .into_iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .and_then(|p| p.metadata.name)
        .with_context(|| {
            format!("no running pod labelled {GATEWAY_SELECTOR} in {ISTIO_NAMESPACE}")
        })?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding a loopback port for the gateway port-forward")?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut local, _)) = listener.accept().await {
            let pods = pods.clone();
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let Ok(mut forwarder) = pods.portforward(&gateway, &[GATEWAY_TARGET_PORT]).await
                else {
                    return;
                };
                if let Some(mut remote) = forwarder.take_stream(GATEWAY_TARGET_PORT) {
                    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                }
                let _ = forwarder.join().await;
            });
        }
    });
    Ok((address, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_pins_the_nodeport_the_kind_config_publishes() {
        let node_port = gateway_node_port(&crate::istio::install_overlay()).unwrap();
        assert_eq!(node_port, 30001);
        let config = KindConfig::load_default().unwrap();
        assert_eq!(
            loopback_endpoint(&config, node_port).unwrap(),
            "127.0.0.1:30001".parse().unwrap()
        );
    }

    #[test]
    fn a_non_loopback_mapping_is_refused() {
        let config = KindConfig::parse(
            Path::new("k.yaml"),
            "kind: Cluster\nnodes:\n- role: control-plane\n  extraPortMappings:\n  - \
             containerPort: 30001\n    hostPort: 8080\n    listenAddress: 192.168.1.4\n",
        )
        .unwrap();
        let err = loopback_endpoint(&config, 30001).unwrap_err().to_string();
        assert!(err.contains("not loopback"), "{err}");
        let err = loopback_endpoint(&config, 30002).unwrap_err().to_string();
        assert!(err.contains("containerPort 30002"), "{err}");
    }

    fn overlay() -> std::path::PathBuf {
        crate::istio::install_overlay()
    }

    const NODE: &str = "istio-fft-e2e-1-abcd-control-plane";

    #[test]
    fn a_consistent_path_gives_the_loopback_address() {
        let config = KindConfig::load_default().unwrap();
        assert_eq!(
            verify_gateway_path(&config, &overlay(), 30001, NODE, Ok("127.0.0.1:30001\n")).unwrap(),
            "127.0.0.1:30001".parse().unwrap()
        );
    }

    #[test]
    fn a_gateway_on_another_nodeport_names_both_values_and_both_files() {
        let config = KindConfig::load_default().unwrap();
        let err = verify_gateway_path(&config, &overlay(), 31380, NODE, Ok("127.0.0.1:30001\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http2 nodePort is 31380"), "{err}");
        assert!(err.contains("maps containerPort 30001"), "{err}");
        assert!(
            err.contains("manifests/istio-install.yaml")
                && err.contains("manifests/kind-cluster.yaml"),
            "{err}"
        );
    }

    #[test]
    fn a_node_published_elsewhere_names_both_values_and_the_config() {
        let config = KindConfig::load_default().unwrap();
        let err = verify_gateway_path(&config, &overlay(), 30001, NODE, Ok("0.0.0.0:30080\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shows 0.0.0.0:30080"), "{err}");
        assert!(err.contains("127.0.0.1:30001"), "{err}");
        assert!(err.contains("manifests/kind-cluster.yaml"), "{err}");
        assert!(
            err.contains("kind delete cluster --name istio-fft-e2e-1-abcd"),
            "{err}"
        );
        let err = verify_gateway_path(
            &config,
            &overlay(),
            30001,
            NODE,
            Err("Error: No public port '30001/tcp' published for istio-fft-e2e-1-abcd-control-plane"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("shows nothing (Error: No public port"),
            "{err}"
        );
    }

    #[test]
    fn answers_are_classified_by_who_answered() {
        assert!(matches!(
            classify_answer(200, Some("wtyfft-deploy-abc"), true),
            Attempt::Done(())
        ));
        let Attempt::NotYet(why) = classify_answer(404, None, false) else {
            panic!("a gateway 404 is not a route")
        };
        assert!(why.contains("gateway itself"));
        assert!(matches!(
            classify_answer(200, None, false),
            Attempt::NotYet(_)
        ));
        assert!(matches!(
            classify_answer(503, Some("x"), true),
            Attempt::NotYet(_)
        ));
    }

    #[tokio::test]
    async fn probing_a_non_loopback_address_is_refused() {
        let err = wait_for_route("172.18.0.2:30001".parse().unwrap(), Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing to probe"), "{err}");
    }

    #[test]
    fn export_lines_follow_the_article() {
        let lines = export_lines("172.18.0.2", 30001);
        assert!(lines.contains("export INGRESS_HOST=172.18.0.2\n"));
        assert!(lines.contains("export INGRESS_PORT=30001\n"));
    }
}
