//! The harness's Kubernetes client and its one-shot reads of pods: the pods of a Deployment, and
//! an HTTP GET on a pod's port through the API server's pod `proxy` subresource.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::Api;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

/// A client for `context` of `kubeconfig` (YAML; `None`: the default kubeconfig).
pub(crate) async fn live_client(kubeconfig: Option<String>, context: &str) -> Result<kube::Client> {
    let kubeconfig = match kubeconfig {
        Some(yaml) => Kubeconfig::from_yaml(&yaml).context("parsing the cluster's kubeconfig")?,
        None => Kubeconfig::read().context("reading the default kubeconfig")?,
    };
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("loading kube context {context}"))?;
    client_from_config(config).with_context(|| format!("building a client for context {context}"))
}

/// Whether a pod counts for its ReplicaSet, as the controller counts (`IsPodActive`,
/// kubernetes `pkg/controller/controller_utils.go`): not on its way out, and neither Succeeded nor
/// Failed (an evicted pod, or one the kubelet refused with `OutOfcpu`, stays listed as Failed).
pub(crate) fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The label the Deployment controller puts on each ReplicaSet and its pods.
pub(crate) const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The `pod-template-hash` of the Deployment's new ReplicaSet, as kubectl finds it
/// (`pkg/util/deployment/deployment.go` `listReplicaSets`, `findNewReplicaSet`): among the
/// ReplicaSets the Deployment controls, the oldest whose template is the Deployment's, ignoring
/// the hash label. `None` until the controller has made it.
pub(crate) fn new_replica_set_hash(
    deployment: &Deployment,
    replica_sets: &[ReplicaSet],
) -> Option<String> {
    let uid = deployment.metadata.uid.as_deref();
    let template = deployment.spec.as_ref().map(|s| without_hash(&s.template));
    let mut owned: Vec<&ReplicaSet> = replica_sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
        })
        .collect();
    owned.sort_by(|a, b| {
        let key = |rs: &ReplicaSet| {
            (
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
                rs.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    owned
        .into_iter()
        .find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .map(without_hash)
                == template
        })
        .and_then(|rs| {
            rs.metadata
                .labels
                .as_ref()?
                .get(TEMPLATE_HASH_LABEL)
                .cloned()
        })
}

fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut copy = template.clone();
    if let Some(metadata) = copy.metadata.as_mut()
        && let Some(labels) = metadata.labels.as_mut()
    {
        labels.remove(TEMPLATE_HASH_LABEL);
    }
    copy
}

/// [`new_replica_set_hash`] of the live Deployment.
pub(crate) async fn newest_template_hash(
    client: &kube::Client,
    deployment: &Deployment,
) -> Result<Option<String>> {
    let replica_sets: Vec<ReplicaSet> = list_selected(client, deployment, "ReplicaSets").await?;
    Ok(new_replica_set_hash(deployment, &replica_sets))
}

/// The active pods of a Deployment (see [`is_pod_active`]), by its selector.
pub(crate) async fn deployment_pods(
    client: &kube::Client,
    deployment: &Deployment,
) -> Result<Vec<Pod>> {
    let pods: Vec<Pod> = list_selected(client, deployment, "pods").await?;
    Ok(pods.into_iter().filter(is_pod_active).collect())
}

/// The objects of kind `K` in the Deployment's namespace that its `matchLabels` select.
async fn list_selected<K>(
    client: &kube::Client,
    deployment: &Deployment,
    what: &str,
) -> Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let namespace = deployment
        .metadata
        .namespace
        .as_deref()
        .unwrap_or("default");
    let selector = match_labels_selector(deployment)?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| format!("listing {what} {selector} in namespace {namespace}"))?;
    Ok(list.items)
}

fn match_labels_selector(deployment: &Deployment) -> Result<String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .context("the Deployment has no selector.matchLabels")
}

/// The harness's Kubernetes client for `config`. kube-rs retries 429, 503 and 504 by default
/// (up to 15 times, backing off to minutes); the harness turns that off: every wait here is its
/// own bounded retry that says what it waited for, and a 503 from the pod proxy (a pod port that
/// refuses) must be reported, not retried behind a call that seems to hang.
pub fn client_from_config(mut config: kube::Config) -> Result<kube::Client> {
    config.default_retry = false;
    kube::Client::try_from(config).context("building a Kubernetes client")
}

/// `GET path` on a pod's port through the API server's pod `proxy` subresource
/// (`/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy{path}`): one plain HTTP exchange with the
/// API server, which dials the pod IP and passes the pod's answer back. Returns the body of a
/// 2xx answer; any other answer is an error naming the pod, the port and the status.
///
/// Chosen over a port-forward: a forward is a websocket through the kubelet whose shutdown
/// reports an error after a complete answer (kube-rs sends its own Close after the kubelet's,
/// which tungstenite refuses), and it needs a hand-written HTTP exchange over the stream.
pub async fn pod_http_get(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> Result<String> {
    let what =
        format!("GET {path} on pod {namespace}/{pod}:{port} through the API server's pod proxy");
    let exchange = async {
        let request = hyper::Request::get(pod_proxy_path(namespace, pod, port, path))
            .body(kube::client::Body::empty())?;
        // `send`, not `request_text`: kube-rs reads any JSON error body as a `Status`, and a pod's
        // own JSON error would lose its status code.
        let response = client.send(request).await?;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await?
            .to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 30s"))
        .and_then(|r| r)
        .with_context(|| what.clone())?;
    ensure!(
        status.is_success(),
        "{what}: {}",
        describe_proxy_answer(status, &body)
    );
    Ok(body)
}

/// The pod proxy subresource's path for `path` on `pod:port`.
pub(crate) fn pod_proxy_path(namespace: &str, pod: &str, port: u16, path: &str) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path}")
}

/// A non-2xx answer in words: the API server's own `Status` (the pod is gone, has no IP yet, or
/// its port refused: 503 `error trying to reach service`), or the pod's answer passed through.
fn describe_proxy_answer(status: hyper::StatusCode, body: &str) -> String {
    #[derive(Deserialize)]
    struct ApiStatus {
        kind: String,
        #[serde(default)]
        reason: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(api) = serde_json::from_str::<ApiStatus>(body)
        && api.kind == "Status"
    {
        return format!(
            "the API server answered {} {}: {}",
            status.as_u16(),
            api.reason,
            api.message
        );
    }
    // A pod's own error page can be long: its start says enough.
    let mut start: String = body.trim().chars().take(300).collect();
    if start.len() < body.trim().len() {
        start.push('…');
    }
    format!("the pod answered {status}: {start}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart changes only an annotation: the old ReplicaSet runs the same containers and
    /// images, and only the template (and so the hash) tells its pods apart.
    #[test]
    fn the_new_replica_set_is_the_one_with_the_deployments_template() {
        let template = |restarted: Option<&str>, hash: Option<&str>| {
            let mut metadata = serde_json::json!({"labels": {"app": "a"}});
            if let Some(at) = restarted {
                metadata["annotations"] =
                    serde_json::json!({"kubectl.kubernetes.io/restartedAt": at});
            }
            if let Some(hash) = hash {
                metadata["labels"]["pod-template-hash"] = serde_json::json!(hash);
            }
            serde_json::json!({"metadata": metadata,
                               "spec": {"containers": [{"name": "c", "image": "i:1"}]}})
        };
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "namespace": "n", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                     "template": template(Some("2026-01-01T00:00:00Z"), None)}
        }))
        .unwrap();
        let rs = |name: &str, hash: &str, restarted: Option<&str>, owner: &str| -> ReplicaSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "n",
                    "labels": {"app": "a", "pod-template-hash": hash},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                        "name": "d", "uid": owner, "controller": true}]},
                "spec": {"selector": {"matchLabels": {"app": "a"}},
                         "template": template(restarted, Some(hash))}
            }))
            .unwrap()
        };
        let old = rs("d-aaa", "aaa", None, "u1");
        let new = rs("d-bbb", "bbb", Some("2026-01-01T00:00:00Z"), "u1");
        let foreign = rs("x-ccc", "ccc", Some("2026-01-01T00:00:00Z"), "u2");
        assert_eq!(
            new_replica_set_hash(&deployment, &[foreign.clone(), old.clone(), new]),
            Some("bbb".to_string())
        );
        assert_eq!(new_replica_set_hash(&deployment, &[foreign, old]), None);
    }

    #[test]
    fn evicted_finished_and_deleted_pods_do_not_count() {
        let pod = |status: serde_json::Value, deleting: bool| -> Pod {
            let mut pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"}, "status": status
            }))
            .unwrap();
            if deleting {
                pod.metadata.deletion_timestamp = Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
                );
            }
            pod
        };
        assert!(is_pod_active(&pod(
            serde_json::json!({"phase": "Running"}),
            false
        )));
        assert!(is_pod_active(&pod(
            serde_json::json!({"phase": "Pending"}),
            false
        )));
        assert!(is_pod_active(&pod(serde_json::json!({}), false)));
        let evicted = serde_json::json!({"phase": "Failed", "reason": "Evicted"});
        assert!(!is_pod_active(&pod(evicted, false)));
        assert!(!is_pod_active(&pod(
            serde_json::json!({"phase": "Succeeded"}),
            false
        )));
        assert!(!is_pod_active(&pod(
            serde_json::json!({"phase": "Running"}),
            true
        )));
    }
}
