//! A contract fake of the Kubernetes API server for what the harness asks about pods and
//! Deployments, on a real loopback socket so that a real `kube::Client` talks to it exactly as to
//! a cluster, websocket upgrades included. Each behaviour follows the upstream file named beside
//! it; the pods' ports are loopback listeners the test starts, so every byte stays on 127.0.0.1.
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
//!
//! Disruptions (what `harness::k8s::disrupt` does to a Deployment):
//!
//! - `DELETE …/pods/{name}` with a `DeleteOptions` body (`application/json`; kube-rs sends
//!   `{"gracePeriodSeconds":0}` or `{}`, kube-core `request.rs` `Request::delete`) or, with no
//!   body, `?gracePeriodSeconds=` (apiserver `pkg/endpoints/handlers/delete.go`
//!   `DeleteResource`; another body type is a 415, a body that is not JSON a 400). The grace
//!   period is kubernetes `pkg/registry/core/pod/strategy.go` `CheckGracefulDelete`'s: the one
//!   asked for, else the pod's `terminationGracePeriodSeconds`, 0 for an unscheduled pod, 1 for
//!   a negative one. With 0 the object is removed at once (apiserver
//!   `pkg/registry/generic/registry/store.go` `updateForGracefulDeletionAndFinalizers`:
//!   `lastGraceful > 0` is the only graceful case); otherwise it gets `deletionTimestamp` and
//!   `deletionGracePeriodSeconds` and stays while the kubelet stops it. Either way the answer is
//!   the Pod (`pkg/registry/core/pod/storage/storage.go` sets `ReturnDeletedObject`).
//! - A pod being deleted gracefully stops as its [`StopScript`] says, counted in GETs of that pod
//!   (the only thing that looks at it): some GETs still show its containers running, then some
//!   show them `terminated` with the app container's exit code (the kubelet's status update,
//!   `pkg/kubelet/status/status_manager.go`), then it is gone: the status manager's own DELETE
//!   with grace period 0 once every container has stopped (`canBeDeleted` → `syncPod`). A script
//!   with no terminated GETs is a pod whose final delete came before any poll saw its exit.
//! - `GET /apis/apps/v1/namespaces/{ns}/deployments/{name}`; an unknown one is a 404
//!   (`deployments.apps "x" not found`).
//! - `PATCH` of it: the content types the apiserver serves for a built-in resource
//!   (`pkg/endpoints/installer.go`: json-patch, merge-patch, strategic-merge-patch, apply-patch)
//!   and a 415 `UnsupportedMediaType` for any other (`pkg/endpoints/handlers/patch.go`
//!   `PatchResource` → `negotiation.NewUnsupportedMediaTypeError`); the fake applies only
//!   `application/merge-patch+json`, as RFC 7386 says (apiserver `patch.go` `jsonPatcher` →
//!   evanphx/json-patch `MergePatch`: objects merge key by key, `null` removes, anything else
//!   replaces), and answers the other accepted types with a 500 naming the gap rather than
//!   pretending. A body that is not a JSON object is a 400; a patch that renames the object is
//!   a 400 (`pkg/endpoints/handlers/rest.go` `checkName`). The status cannot be patched here
//!   and a change of `spec` or `metadata.annotations` bumps `metadata.generation`
//!   (kubernetes `pkg/registry/apps/deployment/strategy.go` `PrepareForUpdate`). `dryRun=All`
//!   answers without storing.
//! - The controllers move one step per request the fake serves (before answering it), so a
//!   test is deterministic whatever the timing: first the kubelet (a new pod turns Ready after
//!   [`FakeDeployment::ready_after`] requests), then the Deployment controller. A new
//!   generation is observed after [`FakeDeployment::observe_delay`] requests (`None`: never);
//!   once observed, a template change rolls out one action per step as
//!   `pkg/controller/deployment/rolling.go` does with the default strategy
//!   (`pkg/apis/apps/v1/defaults.go`: `maxSurge` and `maxUnavailable` 25%, resolved by
//!   `deployment/util/deployment_util.go` `ResolveFenceposts`, surge rounded up, unavailable
//!   down: 1 and 0 for 3 replicas): scale the new ReplicaSet up while the total stays within
//!   `replicas + maxSurge`, scale an old one down (a graceful delete, the first old pod by name;
//!   upstream ranks them with `controller.ActivePodsWithRanks`, on which these pods all tie)
//!   while the available pods stay above `replicas - maxUnavailable`. Without a rollout the
//!   ReplicaSet replaces any pod that is being deleted at once, since it counts only active
//!   pods (`pkg/controller/replicaset/replica_set.go` `syncReplicaSet` →
//!   `controller.FilterActivePods`). Pods are named `{deployment}-{pod-template-hash}-{5
//!   chars}` (`pkg/controller/controller_utils.go` `ComputeHash`, an FNV-32a safe-encoded with
//!   `rand.SafeEncodeString`, here over the template's JSON; `names.SimpleNameGenerator`, here
//!   from a counter) and, when [`FakeDeployment::inject`], get what Istio's injector adds at
//!   creation: the `sidecar.istio.io/status` annotation and an `istio-proxy` container (istio
//!   `pkg/kube/inject/inject.go`).
//! - The Deployment's status is the controller's `calculateStatus`
//!   (`pkg/controller/deployment/sync.go`) over the pods as they are now: `replicas` the active
//!   pods, `updatedReplicas` those of the observed template, `availableReplicas` the ready ones
//!   (`minReadySeconds` 0), `observedGeneration` what the controller last observed. Upstream the
//!   counts lag the pods a little too; here only the generation does.
//! - `GET …/namespaces/{ns}/replicasets?labelSelector=`: each ReplicaSet the controller made,
//!   named `{deployment}-{hash}`, its template the Deployment's then with `pod-template-hash`
//!   added, controlled by the Deployment (`pkg/controller/deployment/sync.go`
//!   `getNewReplicaSet`).
//! - An evicted pod ([`FakeApiServer::evict_first_pod`]) stays listed as `Failed` with reason
//!   `Evicted` (`pkg/kubelet/eviction/eviction_manager.go` `evictPod`) and is no longer counted
//!   (`controller_utils.go` `IsPodActive`), so its ReplicaSet replaces it.
//! - Namespaces, Services, Istio's Gateway and VirtualService, MutatingWebhookConfigurations,
//!   discovery, server-side apply and deletion, a Namespace's termination and the admission of
//!   each new pod by the webhooks that select it (injection, or a refusal that becomes the
//!   Deployment's `ReplicaFailure`): `objects.rs`, each behaviour with its upstream file.

#![allow(dead_code)]

mod objects;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The only subprotocol kube-rs offers for a port-forward.
pub const PORT_FORWARD_PROTOCOL: &str = "v4.channel.k8s.io";

/// The sidecar container Istio's injector adds.
pub const SIDECAR: &str = "istio-proxy";
const SIDECAR_IMAGE: &str = "docker.io/istio/proxyv2:1.27.1";
/// What the injector writes in `sidecar.istio.io/status` (istio `pkg/kube/inject/inject.go`
/// `SidecarInjectionStatus`).
const SIDECAR_STATUS: &str = r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#;
/// `pkg/apis/core/v1/defaults.go`: `DefaultTerminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The label the Deployment controller adds to each ReplicaSet's pods.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// `apimachinery/pkg/util/rand` `alphanums`: the letters of generated names and hashes.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// What the apiserver accepts as a patch of a built-in resource (`pkg/endpoints/installer.go`).
const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];
/// What `NegotiateInputSerializer` accepts for a `DeleteOptions` body.
const BODY_TYPES: [&str; 3] = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

/// How a pod's containers stop once it is deleted with a grace period, counted in GETs of the
/// pod: `running_gets` GETs still show them running (with `deletionTimestamp`), then
/// `terminated_gets` GETs show them `terminated` (the app's exit code `exit_code`, the proxy's
/// 0), then the pod is gone (404).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopScript {
    pub running_gets: u32,
    pub terminated_gets: u32,
    pub exit_code: i32,
}

impl Default for StopScript {
    fn default() -> Self {
        StopScript {
            running_gets: 1,
            terminated_gets: 1,
            exit_code: 0,
        }
    }
}

#[derive(Clone, Debug)]
struct Deletion {
    timestamp: String,
    grace_seconds: i64,
}

/// A pod the fake knows: its labels, readiness, the IP it reports (never dialled) and, for each
/// container port that listens, the loopback address standing in for `podIP:port`.
#[derive(Clone, Debug)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.containers` as (name, image).
    pub containers: Vec<(String, String)>,
    pub ready: bool,
    pub pod_ip: Option<String>,
    pub ports: BTreeMap<u16, SocketAddr>,
    /// `spec.nodeName`: an unscheduled pod (`None`) is deleted at once whatever the grace period.
    pub node_name: Option<String>,
    pub termination_grace_period_seconds: i64,
    /// How it stops when deleted with a grace period.
    pub stop: StopScript,
    /// The ReplicaSet that owns it.
    pub owner: Option<String>,
    /// Requests until the kubelet reports it Ready; `None` with `ready` false: never.
    ready_in: Option<u32>,
    deletion: Option<Deletion>,
    terminated: bool,
    /// The kubelet evicted it: `Failed`, reason `Evicted`, and it stays listed.
    evicted: bool,
}

impl FakePod {
    pub fn new(namespace: &str, name: &str) -> Self {
        FakePod {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            containers: vec![("app".into(), "app:1".into())],
            ready: true,
            pod_ip: Some("10.244.0.7".into()),
            ports: BTreeMap::new(),
            node_name: Some("kind-control-plane".into()),
            termination_grace_period_seconds: DEFAULT_GRACE_SECONDS,
            stop: StopScript::default(),
            owner: None,
            ready_in: None,
            deletion: None,
            terminated: false,
            evicted: false,
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

    /// Whether the API server has it marked for deletion.
    pub fn deleting(&self) -> bool {
        self.deletion.is_some()
    }

    /// Whether its ReplicaSet counts it (kubernetes `pkg/controller/controller_utils.go`
    /// `IsPodActive`): not being deleted, not Failed (evicted) or Succeeded.
    fn active(&self) -> bool {
        !self.deleting() && !self.evicted
    }

    fn json(&self) -> Value {
        let running = !self.terminated && !self.evicted;
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|(name, image)| {
                let state = if running {
                    json!({"running": {"startedAt": "2025-01-01T00:00:00Z"}})
                } else {
                    let code = if name == SIDECAR {
                        0
                    } else {
                        self.stop.exit_code
                    };
                    json!({"terminated": {
                        "exitCode": code,
                        "reason": if code == 0 { "Completed" } else { "Error" },
                        "startedAt": "2025-01-01T00:00:00Z",
                        "finishedAt": "2025-01-01T00:10:00Z"
                    }})
                };
                json!({"name": name, "image": image, "imageID": "", "restartCount": 0,
                       "ready": self.ready && running, "started": running, "state": state})
            })
            .collect();
        let mut metadata = json!({"name": self.name, "namespace": self.namespace,
                                  "labels": self.labels, "uid": format!("uid-{}", self.name)});
        if !self.annotations.is_empty() {
            metadata["annotations"] = json!(self.annotations);
        }
        if let Some(owner) = &self.owner {
            metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": owner, "uid": format!("uid-{owner}"), "controller": true,
                "blockOwnerDeletion": true}]);
        }
        if let Some(deletion) = &self.deletion {
            metadata["deletionTimestamp"] = json!(deletion.timestamp);
            metadata["deletionGracePeriodSeconds"] = json!(deletion.grace_seconds);
        }
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|(name, image)| json!({"name": name, "image": image}))
            .collect();
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": metadata,
            "spec": {"containers": containers, "nodeName": self.node_name,
                     "terminationGracePeriodSeconds": self.termination_grace_period_seconds},
            "status": {
                "phase": if self.evicted { "Failed" } else { "Running" },
                "podIP": self.pod_ip,
                "conditions": [{"type": "Ready",
                                "status": if self.ready && running { "True" } else { "False" }}],
                "containerStatuses": statuses
            }
        });
        if self.evicted {
            pod["status"]["reason"] = json!("Evicted");
            pod["status"]["message"] = json!("The node was low on resource: memory.");
        }
        pod
    }
}

/// A Deployment the fake runs, with the pace of its controller and of the kubelet.
#[derive(Clone, Debug)]
pub struct FakeDeployment {
    pub namespace: String,
    pub name: String,
    pub replicas: i32,
    /// Its selector's `matchLabels`, also the template's labels.
    pub labels: BTreeMap<String, String>,
    pub template_annotations: BTreeMap<String, String>,
    /// The template's containers as (name, image).
    pub containers: Vec<(String, String)>,
    pub termination_grace_period_seconds: i64,
    /// Requests the controller lets pass before it observes a new generation (0: the first
    /// request after the change); `None`: it never does.
    pub observe_delay: Option<u32>,
    /// Requests after its creation before a new pod is Ready (0: at once); `None`: never.
    pub ready_after: Option<u32>,
    /// Whether the injector adds the sidecar to the pods (the namespace is labelled).
    pub inject: bool,
    /// How its pods stop when deleted with a grace period.
    pub stop: StopScript,
}

impl FakeDeployment {
    pub fn new(namespace: &str, name: &str, replicas: i32) -> Self {
        FakeDeployment {
            namespace: namespace.into(),
            name: name.into(),
            replicas,
            labels: BTreeMap::new(),
            template_annotations: BTreeMap::new(),
            containers: Vec::new(),
            termination_grace_period_seconds: DEFAULT_GRACE_SECONDS,
            observe_delay: Some(1),
            ready_after: Some(1),
            inject: true,
            stop: StopScript::default(),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn template_annotation(mut self, key: &str, value: &str) -> Self {
        self.template_annotations.insert(key.into(), value.into());
        self
    }

    pub fn container(mut self, name: &str, image: &str) -> Self {
        self.containers.push((name.into(), image.into()));
        self
    }

    pub fn stop(mut self, stop: StopScript) -> Self {
        self.stop = stop;
        self
    }

    /// The pods it creates from now on never turn Ready (a readiness probe that keeps failing).
    pub fn never_ready(mut self) -> Self {
        self.ready_after = None;
        self
    }

    /// The controller never observes a new generation (it is down, or wedged).
    pub fn never_observed(mut self) -> Self {
        self.observe_delay = None;
        self
    }

    fn object(&self) -> Value {
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|(name, image)| json!({"name": name, "image": image}))
            .collect();
        let mut template_metadata = json!({"labels": self.labels});
        if !self.template_annotations.is_empty() {
            template_metadata["annotations"] = json!(self.template_annotations);
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "uid": format!("uid-{}", self.name), "generation": 1,
                         "resourceVersion": "1", "labels": self.labels},
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": self.labels},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "template": {
                    "metadata": template_metadata,
                    "spec": {"containers": containers,
                             "terminationGracePeriodSeconds": self.termination_grace_period_seconds}
                }
            }
        })
    }
}

struct DeploymentState {
    config: FakeDeployment,
    /// The object as stored, without its status (computed when read).
    object: Value,
    observed_generation: i64,
    observed_hash: String,
    /// Requests left before the controller observes the current generation.
    observe_wait: Option<u32>,
    /// Each ReplicaSet the controller made, oldest first: its hash and the template it copied.
    replica_sets: Vec<(String, Value)>,
    /// Why the API refused the last pod its ReplicaSet tried to create, if it did.
    failure: Option<String>,
}

impl DeploymentState {
    fn namespace(&self) -> &str {
        &self.config.namespace
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn generation(&self) -> i64 {
        self.object["metadata"]["generation"].as_i64().unwrap_or(1)
    }

    fn replicas(&self) -> i64 {
        self.object["spec"]["replicas"].as_i64().unwrap_or(1)
    }

    fn selector(&self) -> BTreeMap<String, String> {
        serde_json::from_value(self.object["spec"]["selector"]["matchLabels"].clone())
            .unwrap_or_default()
    }

    fn owns(&self, pod: &FakePod) -> bool {
        pod.namespace == self.namespace()
            && self
                .selector()
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
    }

    /// `ResolveFenceposts` for the RollingUpdate strategy's `maxSurge` and `maxUnavailable`.
    fn fenceposts(&self) -> (i64, i64) {
        let replicas = self.replicas();
        let rolling = &self.object["spec"]["strategy"]["rollingUpdate"];
        let resolve = |value: &Value, round_up: bool| match value {
            Value::Number(n) => n.as_i64().unwrap_or(0),
            Value::String(s) => {
                let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
                let scaled = percent * replicas;
                if round_up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                }
            }
            _ => {
                if round_up {
                    (25 * replicas + 99) / 100
                } else {
                    25 * replicas / 100
                }
            }
        };
        let surge = resolve(&rolling["maxSurge"], true);
        let unavailable = resolve(&rolling["maxUnavailable"], false);
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }

    fn json(&self, pods: &[FakePod]) -> Value {
        let active: Vec<&FakePod> = pods.iter().filter(|p| self.owns(p) && p.active()).collect();
        let updated = active
            .iter()
            .filter(|p| p.labels.get(TEMPLATE_HASH_LABEL) == Some(&self.observed_hash))
            .count() as i64;
        let ready = active.iter().filter(|p| p.ready && !p.terminated).count() as i64;
        let total = active.len() as i64;
        let (_, unavailable) = self.fenceposts();
        let available = ready >= self.replicas() - unavailable;
        let mut object = self.object.clone();
        let mut conditions = vec![
            json!({"type": "Available", "status": if available { "True" } else { "False" },
                   "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }}),
            json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}),
        ];
        if let Some(failure) = &self.failure {
            conditions.push(json!({"type": "ReplicaFailure", "status": "True",
                                   "reason": "FailedCreate", "message": failure}));
        }
        object["status"] = json!({
            "observedGeneration": self.observed_generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": (total - ready).max(0),
            "conditions": conditions
        });
        object
    }
}

impl DeploymentState {
    /// Its ReplicaSets as the controller writes them (kubernetes
    /// `pkg/controller/deployment/sync.go` `getNewReplicaSet`): named `{deployment}-{hash}`, the
    /// template copied with the `pod-template-hash` label added to it, to the labels and to the
    /// selector, controlled by the Deployment; `status.replicas` its active pods.
    fn replica_set_json(&self, pods: &[FakePod]) -> Vec<Value> {
        self.replica_sets
            .iter()
            .enumerate()
            .map(|(index, (hash, template))| {
                let mut template = template.clone();
                template["metadata"]["labels"][TEMPLATE_HASH_LABEL] = json!(hash);
                let mut selector = self.object["spec"]["selector"].clone();
                selector["matchLabels"][TEMPLATE_HASH_LABEL] = json!(hash);
                let active = pods
                    .iter()
                    .filter(|p| {
                        self.owns(p)
                            && p.active()
                            && p.labels.get(TEMPLATE_HASH_LABEL) == Some(hash)
                    })
                    .count();
                json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {
                        "name": format!("{}-{hash}", self.name()),
                        "namespace": self.namespace(),
                        "uid": format!("uid-{}-{hash}", self.name()),
                        "labels": template["metadata"]["labels"],
                        "creationTimestamp": format!("2025-01-01T00:{:02}:00Z", index.min(59)),
                        "annotations": {"deployment.kubernetes.io/revision": (index + 1).to_string()},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                            "name": self.name(), "uid": format!("uid-{}", self.name()),
                            "controller": true, "blockOwnerDeletion": true}]
                    },
                    "spec": {"replicas": active, "selector": selector, "template": template},
                    "status": {"replicas": active, "observedGeneration": 1}
                })
            })
            .collect()
    }
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    /// The body of a PATCH, PUT, POST or DELETE.
    pub body: Option<String>,
}

impl Call {
    /// `METHOD path?query`, as [`FakeApiServer::requests`] lists it.
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }

    /// The body as JSON (`Null` when absent or not JSON).
    pub fn json(&self) -> Value {
        self.body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null)
    }

    /// A query parameter, decoded.
    pub fn param(&self, key: &str) -> Option<String> {
        query_param(&self.query, key)
    }
}

#[derive(Default)]
struct State {
    pods: Vec<FakePod>,
    deployments: Vec<DeploymentState>,
    /// Namespaces, Services, Gateways, VirtualServices, MutatingWebhookConfigurations.
    objects: Vec<Value>,
    /// MutatingWebhookConfigurations whose webhooks deny every pod they select, with the message.
    denials: BTreeMap<String, String>,
    /// Names whose next create by server-side apply is answered with a timeout although the
    /// object is created (see [`FakeApiServer::time_out_after_creating`]).
    late_answers: Vec<String>,
    calls: Vec<Call>,
    resource_version: u64,
    created: u32,
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
        Self::start_with(Vec::new(), pods).await
    }

    /// The Deployments, each already rolled out: its replicas created from its template, ready
    /// and (when it injects) with their sidecars; then `pods`.
    pub async fn start_with(deployments: Vec<FakeDeployment>, pods: Vec<FakePod>) -> Self {
        let mut state = State {
            resource_version: 1,
            ..State::default()
        };
        for config in deployments {
            let object = config.object();
            let hash = template_hash(&object["spec"]["template"]);
            state.deployments.push(DeploymentState {
                config,
                object: object.clone(),
                observed_generation: 1,
                observed_hash: hash.clone(),
                observe_wait: None,
                replica_sets: vec![(hash, object["spec"]["template"].clone())],
                failure: None,
            });
            let index = state.deployments.len() - 1;
            for _ in 0..state.deployments[index].replicas() {
                let pod = create_pod(&mut state, index).expect("admitted");
                let pod = state.pods.iter_mut().find(|p| p.name == pod).unwrap();
                pod.ready = true;
                pod.ready_in = None;
            }
        }
        state.pods.extend(pods);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(state));
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
        self.calls().iter().map(Call::line).collect()
    }

    /// Every request, in order, with its content type and body.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn set_pods(&self, pods: Vec<FakePod>) {
        self.state.lock().unwrap().pods = pods;
    }

    /// The pods as stored now (those being deleted included), by name.
    pub fn pods(&self) -> Vec<FakePod> {
        let mut pods = self.state.lock().unwrap().pods.clone();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        pods
    }

    /// The names of the pods stored now, sorted.
    pub fn pod_names(&self) -> Vec<String> {
        self.pods().into_iter().map(|p| p.name).collect()
    }

    /// Adds objects as they are before the run (an Istio install's Services and webhooks, a
    /// namespace the user made), each with the metadata the API server sets.
    pub fn add_objects(&self, objects: Vec<Value>) {
        let mut state = self.state.lock().unwrap();
        for mut object in objects {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            // Unique, as real uids are: an object added again is another object.
            state.resource_version += 1;
            object["metadata"]["uid"] =
                json!(format!("uid-preexisting-{name}-{}", state.resource_version));
            if object["kind"] == "Namespace" {
                object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
                object["status"] = json!({"phase": "Active"});
            }
            state.objects.push(object);
        }
    }

    /// The webhooks of MutatingWebhookConfiguration `configuration` deny every pod they select.
    /// The next server-side apply that creates an object named `name` creates it and then
    /// answers 504 Timeout, as the apiserver does when a request outlives its deadline while
    /// the storage write goes on ("the server was unable to return a response in the time
    /// allotted, but may still be processing the request": apiserver
    /// `pkg/endpoints/handlers/finisher/finisher.go`).
    pub fn time_out_after_creating(&self, name: &str) {
        self.state.lock().unwrap().late_answers.push(name.into());
    }

    pub fn deny_pods(&self, configuration: &str, message: &str) {
        self.state
            .lock()
            .unwrap()
            .denials
            .insert(configuration.into(), message.into());
    }

    /// Every object stored now, one line each (`Kind namespace/name`, Namespaces with their
    /// labels), sorted: what is left on the cluster.
    pub fn inventory(&self) -> Vec<String> {
        objects::inventory(&self.state.lock().unwrap())
    }

    /// The kubelet evicts the first pod (by name) of Deployment `namespace/name` under memory
    /// pressure (kubernetes `pkg/kubelet/eviction/eviction_manager.go` `evictPod`): the pod
    /// stays listed as `Failed` with reason `Evicted`, and the ReplicaSet, which no longer
    /// counts it, creates a replacement. Returns the evicted pod's name.
    pub fn evict_first_pod(&self, namespace: &str, name: &str) -> String {
        let mut state = self.state.lock().unwrap();
        let deployment = state
            .deployments
            .iter()
            .position(|d| d.namespace() == namespace && d.name() == name)
            .expect("the Deployment");
        let mut owned: Vec<usize> = (0..state.pods.len())
            .filter(|&i| {
                state.deployments[deployment].owns(&state.pods[i]) && state.pods[i].active()
            })
            .collect();
        owned.sort_by(|a, b| state.pods[*a].name.cmp(&state.pods[*b].name));
        let pod = &mut state.pods[owned[0]];
        pod.evicted = true;
        pod.ready = false;
        pod.name.clone()
    }

    /// A Deployment as a GET would answer it now (without moving the controllers).
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        state
            .deployments
            .iter()
            .find(|d| d.namespace() == namespace && d.name() == name)
            .map(|d| d.json(&state.pods))
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

/// A `DELETE` whose `DeleteOptions` carry `preconditions.uid` that is not the object's: 409
/// Conflict (apiserver `pkg/storage/interfaces.go` `Preconditions.Check`, turned into a
/// Conflict by `pkg/registry/generic/registry/store.go`).
fn delete_precondition_failed(
    body: Option<&str>,
    object: &Value,
    resource: &str,
    name: &str,
) -> Option<Response<FakeBody>> {
    let options: Value = serde_json::from_str(body?).ok()?;
    let wanted = options.pointer("/preconditions/uid")?.as_str()?;
    let actual = object["metadata"]["uid"].as_str().unwrap_or_default();
    (wanted != actual).then(|| {
        status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": Precondition failed: \
                 UID in precondition: {wanted}, UID in object meta: {actual}"
            ),
        )
    })
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

fn bad_request(message: &str) -> Response<FakeBody> {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn method_not_allowed() -> Response<FakeBody> {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
}

fn unsupported_media_type(accepted: &[&str]) -> Response<FakeBody> {
    status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        ),
    )
}

fn selector_matches(selector: &str, pod: &FakePod) -> bool {
    labels_match(selector, &json!(pod.labels))
}

/// A label selector of equalities and bare keys (`k=v,k2`: `k2` exists), as
/// apimachinery `labels.Parse` reads them, against a JSON map of labels.
fn labels_match(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => {
                let v = v.strip_prefix('=').unwrap_or(v);
                labels[k].as_str() == Some(v)
            }
            None => labels.get(term).is_some(),
        })
}

/// `application/x-www-form-urlencoded` decoding, as Go's `url.ParseQuery`.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (byte, None) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// FNV-32a of the template, safe-encoded (`controller.ComputeHash`, `rand.SafeEncodeString`).
fn template_hash(template: &Value) -> String {
    let text = template.to_string();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// Five letters of `ALPHANUMS` for the `n`th generated name.
fn name_suffix(n: u32) -> String {
    let mut x = n.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    (0..5)
        .map(|_| {
            let c = ALPHANUMS[(x % ALPHANUMS.len() as u32) as usize] as char;
            x /= ALPHANUMS.len() as u32;
            c
        })
        .collect()
}

fn now_plus(seconds: i64) -> String {
    let at = SystemTime::now() + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The ReplicaSet of the Deployment's observed template creates a pod from it; admission may
/// refuse it, and the injector mutates it on its way in. Returns its name, `None` when refused.
fn create_pod(state: &mut State, index: usize) -> Option<String> {
    let deployment = &state.deployments[index];
    let hash = deployment.observed_hash.clone();
    let template = deployment.object["spec"]["template"].clone();
    let config = deployment.config.clone();
    let owner = format!("{}-{hash}", config.name);
    let name = loop {
        let candidate = format!("{owner}-{}", name_suffix(state.created));
        state.created += 1;
        if !state.pods.iter().any(|p| p.name == candidate) {
            break candidate;
        }
    };
    let mut pod = FakePod::new(&config.namespace, &name);
    pod.labels = serde_json::from_value(template["metadata"]["labels"].clone()).unwrap_or_default();
    pod.labels.insert(TEMPLATE_HASH_LABEL.into(), hash);
    pod.annotations =
        serde_json::from_value(template["metadata"]["annotations"].clone()).unwrap_or_default();
    pod.containers = template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["image"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let inject = match objects::admit(state, &config.namespace, &pod.labels) {
        None => config.inject,
        Some(objects::Admission::Created { injected }) => injected,
        Some(objects::Admission::Denied(message)) => {
            state.deployments[index].failure = Some(message);
            return None;
        }
    };
    state.deployments[index].failure = None;
    if inject {
        pod.annotations
            .insert("sidecar.istio.io/status".into(), SIDECAR_STATUS.into());
        pod.containers.push((SIDECAR.into(), SIDECAR_IMAGE.into()));
    }
    pod.termination_grace_period_seconds = template["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    pod.pod_ip = Some(format!("10.244.0.{}", 10 + state.created % 240));
    pod.stop = config.stop;
    pod.owner = Some(owner);
    match config.ready_after {
        Some(0) => pod.ready = true,
        later => {
            pod.ready = false;
            pod.ready_in = later;
        }
    }
    state.pods.push(pod);
    Some(name)
}

/// `CheckGracefulDelete`: the grace period a delete of `pod` gets.
fn grace_period(pod: &FakePod, asked: Option<i64>) -> i64 {
    let mut period = asked.unwrap_or(pod.termination_grace_period_seconds);
    if pod.node_name.as_deref().unwrap_or("").is_empty() {
        period = 0;
    }
    if period < 0 {
        period = 1;
    }
    period
}

/// Deletes pod `name` (`BeforeDelete`, then the store): with a grace period of 0 it is removed
/// at once, otherwise it is marked. Returns the object as the DELETE answers it.
fn delete_pod(state: &mut State, index: usize, asked: Option<i64>) -> Value {
    let period = grace_period(&state.pods[index], asked);
    let pod = &mut state.pods[index];
    match &pod.deletion {
        // A deletion is pending: only a shorter grace period changes anything; 0 ends it.
        Some(_) if period > 0 => return pod.json(),
        _ => {}
    }
    pod.deletion = Some(Deletion {
        timestamp: now_plus(period),
        grace_seconds: period,
    });
    let answer = pod.json();
    if period == 0 {
        state.pods.remove(index);
    }
    answer
}

/// One step of the cluster: the kubelet, then each Deployment's controller.
fn tick(state: &mut State) {
    for pod in &mut state.pods {
        if pod.ready || pod.deleting() {
            continue;
        }
        if let Some(left) = pod.ready_in {
            let left = left.saturating_sub(1);
            if left == 0 {
                pod.ready = true;
                pod.ready_in = None;
            } else {
                pod.ready_in = Some(left);
            }
        }
    }
    for index in 0..state.deployments.len() {
        controller_step(state, index);
    }
    objects::namespace_controller_step(state);
}

/// One action of the Deployment controller (and the ReplicaSet controller under it).
fn controller_step(state: &mut State, index: usize) {
    let deployment = &mut state.deployments[index];
    let generation = deployment.generation();
    if deployment.observed_generation < generation {
        match deployment.observe_wait {
            None => {}
            Some(0) => {
                deployment.observed_generation = generation;
                let template = deployment.object["spec"]["template"].clone();
                let hash = template_hash(&template);
                // `getNewReplicaSet` makes the ReplicaSet of a template not seen before.
                if !deployment.replica_sets.iter().any(|(h, _)| *h == hash) {
                    deployment.replica_sets.push((hash.clone(), template));
                }
                deployment.observed_hash = hash;
                deployment.observe_wait = None;
            }
            Some(n) => deployment.observe_wait = Some(n - 1),
        }
        return;
    }
    let deployment = &state.deployments[index];
    let replicas = deployment.replicas();
    let (surge, unavailable) = deployment.fenceposts();
    let active: Vec<&FakePod> = state
        .pods
        .iter()
        .filter(|p| deployment.owns(p) && p.active())
        .collect();
    let new = active
        .iter()
        .filter(|p| p.labels.get(TEMPLATE_HASH_LABEL) == Some(&deployment.observed_hash))
        .count() as i64;
    let mut old: Vec<String> = active
        .iter()
        .filter(|p| p.labels.get(TEMPLATE_HASH_LABEL) != Some(&deployment.observed_hash))
        .map(|p| p.name.clone())
        .collect();
    old.sort();
    let total = active.len() as i64;
    let available = active.iter().filter(|p| p.ready).count() as i64;
    if old.is_empty() {
        if new < replicas {
            create_pod(state, index);
        }
        return;
    }
    if new < replicas && total < replicas + surge {
        create_pod(state, index);
        return;
    }
    if available > replicas - unavailable {
        let victim = state.pods.iter().position(|p| p.name == old[0]).unwrap();
        delete_pod(state, victim, None);
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().unwrap();
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Response<FakeBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // A body is read for the methods that carry one; a GET keeps its request for an upgrade.
    let (request, body) =
        if [Method::PATCH, Method::PUT, Method::POST, Method::DELETE].contains(&method) {
            let bytes = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (None, Some(String::from_utf8_lossy(&bytes).into_owned()))
        } else {
            (Some(request), None)
        };
    {
        let mut state = state.lock().unwrap();
        state.calls.push(Call {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        tick(&mut state);
    }
    if let Some(routed) = objects::route(&path) {
        return match routed {
            Err(discovery) => ok_json(discovery),
            Ok(target) => objects::handle(
                &state,
                &method,
                target,
                &query,
                content_type.as_deref(),
                body,
            ),
        };
    }
    if let Some(rest) = path.strip_prefix("/apis/apps/v1/namespaces/")
        && let [namespace, "replicasets"] = rest.split('/').collect::<Vec<_>>().as_slice()
    {
        if method != Method::GET {
            return method_not_allowed();
        }
        let selector = query_param(&query, "labelSelector").unwrap_or_default();
        let state = state.lock().unwrap();
        let items: Vec<Value> = state
            .deployments
            .iter()
            .filter(|d| d.namespace() == *namespace)
            .flat_map(|d| d.replica_set_json(&state.pods))
            .filter(|rs| labels_match(&selector, &rs["metadata"]["labels"]))
            .collect();
        return ok_json(json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList",
                              "metadata": {"resourceVersion": state.resource_version.to_string()},
                              "items": items}));
    }
    if let Some(rest) = path.strip_prefix("/apis/apps/v1/namespaces/") {
        return deployments(&state, &method, rest, &query, content_type.as_deref(), body);
    }
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
        [_, "pods"] if method == Method::GET => {
            let selector = query_param(&query, "labelSelector").unwrap_or_default();
            let state = state.lock().unwrap();
            let items: Vec<Value> = state
                .pods
                .iter()
                .filter(|p| p.namespace == namespace && selector_matches(&selector, p))
                .map(FakePod::json)
                .collect();
            ok_json(json!({"apiVersion": "v1", "kind": "PodList",
                           "metadata": {"resourceVersion": state.resource_version.to_string()},
                           "items": items}))
        }
        [_, "pods"] => method_not_allowed(),
        [_, "pods", name] if method == Method::GET => get_pod(&state, namespace, name),
        [_, "pods", name] if method == Method::DELETE => delete_pod_request(
            &state,
            namespace,
            name,
            &query,
            content_type.as_deref(),
            body.unwrap_or_default(),
        ),
        [_, "pods", _] => method_not_allowed(),
        [_, "pods", name_port, "proxy"] => proxy(find, name_port, "", &query).await,
        [_, "pods", name_port, sub] if sub.starts_with("proxy/") => {
            proxy(find, name_port, &sub["proxy/".len()..], &query).await
        }
        [_, "pods", name, "portforward"] => match (find(name), request) {
            (None, _) => not_found(name),
            (Some(pod), Some(request)) => port_forward(pod, &query, request),
            (Some(_), None) => method_not_allowed(),
        },
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the fake serves no {path}"),
        ),
    }
}

/// A GET of a pod: one step of its stop when it is being deleted.
fn get_pod(state: &Mutex<State>, namespace: &str, name: &str) -> Response<FakeBody> {
    let mut state = state.lock().unwrap();
    let Some(index) = state
        .pods
        .iter()
        .position(|p| p.namespace == namespace && p.name == name)
    else {
        return not_found(name);
    };
    let pod = &mut state.pods[index];
    if pod.deleting() {
        if pod.stop.running_gets > 0 {
            pod.stop.running_gets -= 1;
        } else if pod.stop.terminated_gets > 0 {
            pod.stop.terminated_gets -= 1;
            pod.terminated = true;
            pod.ready = false;
        } else {
            // Every container has stopped: the kubelet's final DELETE came first.
            state.pods.remove(index);
            return not_found(name);
        }
    }
    ok_json(state.pods[index].json())
}

fn delete_pod_request(
    state: &Mutex<State>,
    namespace: &str,
    name: &str,
    query: &str,
    content_type: Option<&str>,
    body: String,
) -> Response<FakeBody> {
    let options: Value = if body.trim().is_empty() {
        let mut options = Map::new();
        if let Some(grace) = query_param(query, "gracePeriodSeconds") {
            match grace.parse::<i64>() {
                Ok(g) => {
                    options.insert("gracePeriodSeconds".into(), json!(g));
                }
                Err(_) => return bad_request(&format!("invalid gracePeriodSeconds {grace:?}")),
            }
        }
        if let Some(dry_run) = query_param(query, "dryRun") {
            options.insert("dryRun".into(), json!([dry_run]));
        }
        Value::Object(options)
    } else {
        if !BODY_TYPES.contains(&media_type(content_type).as_str()) {
            return unsupported_media_type(&BODY_TYPES);
        }
        match serde_json::from_str::<Value>(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return bad_request("the body must be a DeleteOptions object"),
            Err(err) => return bad_request(&format!("couldn't decode DeleteOptions: {err}")),
        }
    };
    if let Some(kind) = options.get("kind").and_then(Value::as_str)
        && kind != "DeleteOptions"
    {
        return bad_request(&format!("the body is a {kind}, not DeleteOptions"));
    }
    let asked = match options.get("gracePeriodSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(g) => Some(g),
            None => return bad_request(&format!("gracePeriodSeconds must be an integer: {v}")),
        },
    };
    let dry_run = options["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    let mut state = state.lock().unwrap();
    let Some(index) = state
        .pods
        .iter()
        .position(|p| p.namespace == namespace && p.name == name)
    else {
        return not_found(name);
    };
    if let Some(uid) = options["preconditions"]["uid"].as_str() {
        let actual = format!("uid-{name}");
        if uid != actual {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on pods \"{name}\": Precondition failed: UID \
                     in precondition: {uid}, UID in object meta: {actual}"
                ),
            );
        }
    }
    if dry_run {
        return ok_json(state.pods[index].json());
    }
    state.resource_version += 1;
    ok_json(delete_pod(&mut state, index, asked))
}

/// `…/deployments/{name}`: GET and PATCH.
fn deployments(
    state: &Mutex<State>,
    method: &Method,
    rest: &str,
    query: &str,
    content_type: Option<&str>,
    body: Option<String>,
) -> Response<FakeBody> {
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, "deployments", name] = parts.as_slice() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the fake serves no /apis/apps/v1/namespaces/{rest}"),
        );
    };
    let missing = || {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("deployments.apps \"{name}\" not found"),
        )
    };
    let mut state = state.lock().unwrap();
    if *method == Method::PATCH && media_type(content_type) == "application/apply-patch+yaml" {
        let applied: Value = match serde_json::from_str(body.as_deref().unwrap_or("")) {
            Ok(v @ Value::Object(_)) => v,
            _ => return bad_request("the applied configuration is not a JSON object"),
        };
        let (code, answer) = objects::apply_deployment(&mut state, namespace, name, applied);
        return Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer.to_string())))
            .unwrap();
    }
    let Some(index) = state
        .deployments
        .iter()
        .position(|d| d.namespace() == *namespace && d.name() == *name)
    else {
        return missing();
    };
    if *method == Method::DELETE {
        let current = state.deployments[index].json(&state.pods);
        if let Some(conflict) =
            delete_precondition_failed(body.as_deref(), &current, "deployments.apps", name)
        {
            return conflict;
        }
        // Background propagation: the garbage collector deletes its pods after it.
        state.resource_version += 1;
        let removed = state.deployments.remove(index);
        let answer = removed.json(&state.pods);
        state.pods.retain(|p| !removed.owns(p));
        return ok_json(answer);
    }
    if *method == Method::GET {
        return ok_json(state.deployments[index].json(&state.pods));
    }
    if *method != Method::PATCH {
        return method_not_allowed();
    }
    let media = media_type(content_type);
    if !PATCH_TYPES.contains(&media.as_str()) {
        return unsupported_media_type(&PATCH_TYPES);
    }
    if media != "application/merge-patch+json" {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("the fake API server applies only merge patches, not {media}"),
        );
    }
    let patch: Value = match serde_json::from_str(body.as_deref().unwrap_or("")) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("the merge patch is not a JSON object"),
        Err(err) => return bad_request(&format!("invalid JSON in the merge patch: {err}")),
    };
    let deployment = &state.deployments[index];
    let mut patched = deployment.object.clone();
    merge_patch(&mut patched, &patch);
    if let Some(object) = patched.as_object_mut() {
        // The status is the controller's (PrepareForUpdate keeps the old one).
        object.remove("status");
    }
    if patched["metadata"]["name"] != json!(name) {
        return bad_request(&format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            patched["metadata"]["name"]
        ));
    }
    let changed = patched["spec"] != deployment.object["spec"]
        || patched["metadata"]["annotations"] != deployment.object["metadata"]["annotations"];
    let generation = deployment.generation();
    if query_param(query, "dryRun").as_deref() == Some("All") {
        if changed {
            patched["metadata"]["generation"] = json!(generation + 1);
        }
        let mut preview = state.deployments[index].json(&state.pods);
        preview["metadata"] = patched["metadata"].clone();
        preview["spec"] = patched["spec"].clone();
        return ok_json(preview);
    }
    state.resource_version += 1;
    patched["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
    patched["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
    let deployment = &mut state.deployments[index];
    if changed {
        deployment.observe_wait = deployment.config.observe_delay;
    }
    deployment.object = patched;
    ok_json(state.deployments[index].json(&state.pods))
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

/// A loopback HTTP server standing in for the gateway pod's Envoy once the app's Gateway and
/// VirtualService reached it: every request is answered as a routed one, with what Envoy adds
/// (`server: istio-envoy`, `x-envoy-upstream-service-time`, istio `pilot/pkg/networking/util/
/// proxy_headers.go`) and the app's `x-served-by`.
pub async fn gateway_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/plain")
                            .header("server", "istio-envoy")
                            .header("x-envoy-upstream-service-time", "1")
                            .header("x-served-by", "wtyfft-deploy-0")
                            .body(Full::new(Bytes::from_static(
                                b"fft_http_requests_total 1\n",
                            )))
                            .unwrap(),
                    )
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
