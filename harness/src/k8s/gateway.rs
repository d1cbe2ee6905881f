//! Where the ingress gateway answers.
//!
//! The suite always probes a loopback address: `127.0.0.1:<hostPort>` from the kind config's
//! `extraPortMappings` (portable: Linux, Docker Desktop, rootless), or for the `existing` target
//! a local port-forward to the gateway pod. The article's discovery (`status.hostIP` of the
//! gateway pod + the `http2` nodePort) gives the kind node container's IP, reachable only from a
//! Linux host with native Docker; it is computed for `harness up` to print, never probed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::ListParams;

use crate::config::names::{
    GATEWAY_SELECTOR, INGRESS_GATEWAY, ISTIO_NAMESPACE, SERVED_BY_HEADER, UPSTREAM_SERVICE_TIME,
};
use crate::exec::probe::{self, ProbeRequest};
use crate::exec::wait::{Attempt, Retry};
use crate::k8s::mesh::GatewayTarget;
use crate::manifest::install::InstallOverlay;
use crate::manifest::kind_config::KindConfig;

/// A path the VirtualService routes to the app (`exact: /metrics`).
pub(crate) const ROUTED_PATH: &str = crate::config::names::METRICS_PATH;
use crate::exec::probe::STABLE_ANSWERS as SUCCESSES_IN_A_ROW;

/// The http2 nodePort pinned in the IstioOperator overlay.
pub(crate) fn gateway_node_port(overlay_file: &Path) -> Result<u16> {
    InstallOverlay::load(overlay_file)?.http2_node_port()
}

/// `127.0.0.1:<hostPort>` for the kind mapping of `node_port`.
pub(crate) fn loopback_endpoint(config: &KindConfig, node_port: u16) -> Result<SocketAddr> {
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
pub(crate) fn service_http2_node_port(service: &Service) -> Result<u16> {
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

pub(crate) async fn live_gateway_node_port(client: &kube::Client) -> Result<u16> {
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
pub(crate) fn verify_gateway_path(
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
pub(crate) fn article_endpoint(gateway_pods: &[Pod], service: &Service) -> Result<(String, u16)> {
    let host = gateway_pods
        .iter()
        .find_map(|p| p.status.as_ref()?.host_ip.clone())
        .context("no ingress gateway pod has a status.hostIP yet")?;
    Ok((host, service_http2_node_port(service)?))
}

/// The article's export lines, for a person to paste.
pub(crate) fn export_lines(host: &str, port: u16) -> String {
    format!(
        "# the article's discovery (reachable from a Linux host with native Docker only):\n\
         export INGRESS_HOST={host}\nexport INGRESS_PORT={port}\n\
         curl -s \"http://$INGRESS_HOST:$INGRESS_PORT/fft/real/1024\""
    )
}

pub(crate) async fn live_article_endpoint(client: &kube::Client) -> Result<(String, u16)> {
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
pub(crate) fn classify_answer(
    status: u16,
    served_by: Option<&str>,
    upstream_time: bool,
) -> Attempt<()> {
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
    let what = format!(
        "the route http://{ingress}{ROUTED_PATH} through the gateway to answer from the app \
         {SUCCESSES_IN_A_ROW} times in a row"
    );
    let request = ProbeRequest::new("GET", ROUTED_PATH);
    Retry::within(timeout)
        .backoff(Duration::from_millis(500), Duration::from_secs(2))
        .successes_in_a_row(SUCCESSES_IN_A_ROW)
        .run(&what, || async {
            // Before the Gateway reaches Envoy nothing listens on its port: the probe's error.
            let response = probe::send(ingress, &request).await?;
            match classify_answer(
                response.status,
                response.header(SERVED_BY_HEADER),
                response.header(UPSTREAM_SERVICE_TIME).is_some(),
            ) {
                Attempt::Done(()) => Ok(()),
                Attempt::NotYet(state) => Err(anyhow::anyhow!(state)),
            }
        })
        .await?;
    Ok(())
}

/// The gateway pod to forward to: one that is Ready (its Envoy has its listeners; Running alone
/// says only that the containers started) and not being deleted.
pub(crate) fn ready_gateway_pod(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .and_then(|p| p.metadata.name.clone())
}

/// A Ready pod of `gateway` and the port its Envoy listens on there.
async fn pick_gateway_pod(pods: &Api<Pod>, gateway: &GatewayTarget) -> Result<(String, u16)> {
    let listed = pods
        .list(&ListParams::default().labels(&gateway.pod_selector))
        .await
        .context("listing the ingress gateway pods")?
        .items;
    let ready = ready_gateway_pod(&listed).with_context(|| {
        let seen: Vec<String> = listed
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.metadata.name.as_deref().unwrap_or("?"),
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .unwrap_or("Unknown")
                )
            })
            .collect();
        format!(
            "no Ready pod labelled {} in {} (pods: {seen:?})",
            gateway.pod_selector, gateway.namespace
        )
    })?;
    let pod = listed
        .iter()
        .find(|p| p.metadata.name.as_ref() == Some(&ready))
        .context("the Ready gateway pod")?;
    Ok((ready.clone(), gateway.port_on(pod)?))
}

/// Connects to the remembered pod; when that fails (the pod was replaced or deleted), picks a
/// Ready pod again, remembers it and connects to that one.
pub(crate) async fn connect_with_repick<T, K, C, CF, P, PF>(
    current: &std::sync::Mutex<K>,
    mut connect: C,
    pick: P,
) -> Result<T>
where
    K: Clone + std::fmt::Debug,
    C: FnMut(K) -> CF,
    CF: std::future::Future<Output = Result<T>>,
    P: FnOnce() -> PF,
    PF: std::future::Future<Output = Result<K>>,
{
    let pod = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let first = match connect(pod.clone()).await {
        Ok(connected) => return Ok(connected),
        Err(err) => err,
    };
    let replacement = pick().await.with_context(|| {
        format!("port-forwarding to gateway pod {pod:?} failed ({first:#}), and picking another")
    })?;
    *current.lock().unwrap_or_else(|p| p.into_inner()) = replacement.clone();
    connect(replacement.clone())
        .await
        .with_context(|| format!("port-forwarding to gateway pod {replacement:?}"))
}

/// For the `existing` target: a loopback listener whose every connection is port-forwarded to
/// a Ready pod of `gateway`, on the port its Envoy listens on (the Service's `http2`
/// targetPort), so the suite's traffic stays on 127.0.0.1 whatever the cluster. A pod that goes
/// away is replaced by another Ready one at the next connection.
pub async fn forward_gateway(
    client: &kube::Client,
    gateway: &GatewayTarget,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &gateway.namespace);
    let current = std::sync::Arc::new(std::sync::Mutex::new(
        pick_gateway_pod(&pods, gateway).await?,
    ));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding a loopback port for the gateway port-forward")?;
    let address = listener.local_addr()?;
    let gateway = std::sync::Arc::new(gateway.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut local, _)) = listener.accept().await {
            let pods = pods.clone();
            let current = std::sync::Arc::clone(&current);
            let gateway = std::sync::Arc::clone(&gateway);
            tokio::spawn(async move {
                let connect = |(pod, port): (String, u16)| {
                    let pods = pods.clone();
                    async move {
                        let mut forwarder = pods.portforward(&pod, &[port]).await?;
                        let stream = forwarder
                            .take_stream(port)
                            .context("the port-forward gave no stream")?;
                        anyhow::Ok((forwarder, stream))
                    }
                };
                let picked =
                    connect_with_repick(&current, connect, || pick_gateway_pod(&pods, &gateway));
                match picked.await {
                    Ok((forwarder, mut remote)) => {
                        let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                        drop(remote);
                        let _ = forwarder.join().await;
                    }
                    Err(err) => eprintln!("warning: gateway port-forward: {err:#}"),
                }
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
        let node_port = gateway_node_port(&crate::tools::istioctl::install_overlay()).unwrap();
        assert_eq!(node_port, 30001);
        let config = KindConfig::load_default().unwrap();
        assert_eq!(
            loopback_endpoint(&config, node_port).unwrap(),
            "127.0.0.1:30001".parse().unwrap()
        );
    }

    #[test]
    fn a_non_loopback_mapping_is_refused() {
        let config = KindConfig::from_value(
            Path::new("k.yaml"),
            serde_yaml_ng::from_str(
                "kind: Cluster\nnodes:\n- role: control-plane\n  extraPortMappings:\n  - \
             containerPort: 30001\n    hostPort: 8080\n    listenAddress: 192.168.1.4\n",
            )
            .unwrap(),
        )
        .unwrap();
        let err = loopback_endpoint(&config, 30001).unwrap_err().to_string();
        assert!(err.contains("not loopback"), "{err}");
        let err = loopback_endpoint(&config, 30002).unwrap_err().to_string();
        assert!(err.contains("containerPort 30002"), "{err}");
    }

    fn overlay() -> std::path::PathBuf {
        crate::tools::istioctl::install_overlay()
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

    fn gateway_pod(name: &str, ready: bool, deleting: bool) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"istio": "ingressgateway"}},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap();
        if deleting {
            pod.metadata.deletion_timestamp =
                Some(serde_json::from_value(serde_json::json!("2025-11-26T09:30:00Z")).unwrap());
        }
        pod
    }

    #[test]
    fn the_forward_goes_to_a_ready_pod_that_is_not_going_away() {
        let running_not_ready = gateway_pod("gw-starting", false, false);
        let going = gateway_pod("gw-old", true, true);
        let ready = gateway_pod("gw-ready", true, false);
        assert_eq!(
            ready_gateway_pod(&[running_not_ready.clone(), going.clone(), ready]),
            Some("gw-ready".into())
        );
        assert_eq!(ready_gateway_pod(&[running_not_ready, going]), None);
    }

    #[tokio::test]
    async fn a_pod_that_went_away_is_replaced_by_a_new_pick() {
        let current = std::sync::Mutex::new("gw-old".to_string());
        let tried = std::sync::Mutex::new(Vec::new());
        let connected = connect_with_repick(
            &current,
            |pod: String| {
                tried.lock().unwrap().push(pod.clone());
                async move {
                    if pod == "gw-old" {
                        anyhow::bail!("pods \"gw-old\" not found")
                    }
                    Ok(pod)
                }
            },
            || async { Ok("gw-new".to_string()) },
        )
        .await
        .unwrap();
        assert_eq!(connected, "gw-new");
        assert_eq!(*tried.lock().unwrap(), ["gw-old", "gw-new"]);
        assert_eq!(
            *current.lock().unwrap(),
            "gw-new",
            "later connections use it"
        );

        // A healthy pod is used without listing pods again.
        let picks = std::sync::atomic::AtomicUsize::new(0);
        let again = connect_with_repick(
            &current,
            |pod: String| async move { Ok(pod) },
            || async {
                picks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok("unused".to_string())
            },
        )
        .await
        .unwrap();
        assert_eq!(again, "gw-new");
        assert_eq!(picks.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn no_ready_replacement_is_an_error_naming_the_lost_pod() {
        let current = std::sync::Mutex::new("gw-old".to_string());
        let err = connect_with_repick(
            &current,
            |_pod: String| async { anyhow::bail!("pods \"gw-old\" not found") as Result<()> },
            || async { anyhow::bail!("no Ready pod labelled istio=ingressgateway") },
        )
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("gw-old") && text.contains("no Ready pod"),
            "{text}"
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
