//! Waiting for workloads: a Deployment's availability (istiod, the gateway), and the app's
//! rollout with every pod ready and injected, stopping at once on pod states that waiting
//! cannot fix.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

use crate::config::names::{INGRESS_GATEWAY, ISTIO_NAMESPACE, ISTIOD};
use crate::exec::wait::{Attempt, wait_for};
use crate::k8s::pods;

/// A Deployment is available: its current generation observed and `Available=True`.
pub(crate) fn deployment_available(deployment: &Deployment) -> Attempt<()> {
    let name = deployment.metadata.name.as_deref().unwrap_or("<unnamed>");
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Attempt::NotYet(format!(
            "Deployment {name}: generation {generation} not observed yet"
        ));
    }
    let available = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Available");
    match available {
        Some(c) if c.status == "True" => Attempt::Done(()),
        Some(c) => Attempt::NotYet(format!(
            "Deployment {name}: Available={} ({}), {}/{} replicas available",
            c.status,
            c.message.as_deref().unwrap_or("no message"),
            status.available_replicas.unwrap_or(0),
            status.replicas.unwrap_or(0)
        )),
        None => Attempt::NotYet(format!("Deployment {name}: no Available condition yet")),
    }
}

/// Waits until `namespace/name` is available.
pub(crate) async fn wait_available(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("Deployment {namespace}/{name} to be Available"),
        timeout,
        Duration::from_secs(2),
        || async {
            Ok(match api.get_opt(name).await {
                Ok(Some(d)) => deployment_available(&d),
                Ok(None) => Attempt::NotYet(format!("Deployment {namespace}/{name} not found")),
                Err(err) => Attempt::NotYet(format!("API error: {err}")),
            })
        },
    )
    .await
}

/// istiod, then the ingress gateway, both within one `timeout`.
pub(crate) async fn wait_control_plane(client: &kube::Client, timeout: Duration) -> Result<()> {
    let started = std::time::Instant::now();
    wait_available(client, ISTIO_NAMESPACE, ISTIOD, timeout).await?;
    // The gateway usually becomes available with istiod: a short floor, not a second full wait.
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(15));
    wait_available(client, ISTIO_NAMESPACE, INGRESS_GATEWAY, left).await
}

/// What the rollout wait knows about the app's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppPods {
    /// The container that runs our image.
    pub container: String,
    /// Our image was copied into every node (`kind load`): the kubelet never needs to pull it,
    /// so a pull of it failing can only mean the pod asks for another image or insists on
    /// pulling. Elsewhere the kubelet retries pulls, and so does the wait.
    pub image_preloaded: bool,
}

/// How many polls in a row a pod must show `CreateContainerConfigError` before the wait gives up
/// on it. The kubelet reports it while a ConfigMap or Secret the container reads is not there yet
/// and retries the pod's sync every 10-15 s (`backOffPeriod` with jitter, kubernetes
/// `pkg/kubelet/kubelet.go`, `pod_workers.go`), so a config created a moment later heals it;
/// a `runAsNonRoot` violation never does. The rollout wait polls with a backoff growing to 8 s:
/// eight polls span at least 46 s, three of the kubelet's retries.
pub(crate) const CONFIG_ERROR_POLLS: u32 = 8;

/// One rollout wait's memory across polls: how long each pod has shown a state that is fatal
/// only when it persists, and whether a pod found without its sidecar may still be cured by
/// recreating the pods.
#[derive(Debug, Default)]
pub(crate) struct RolloutWatch {
    persisting: BTreeMap<String, u32>,
    restart: Restart,
}

/// The one rollout restart a wait may do for pods created without their sidecar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Restart {
    /// An uninjected pod is fatal at once.
    #[default]
    Spent,
    /// The next uninjected pod asks for a restart instead.
    Allowed,
    /// Asked for; the caller does it.
    Requested,
}

#[cfg(test)]
/// Whether a Deployment's rollout is complete with every pod ready and injected, from one look;
/// see [`RolloutWatch::observe`].
pub(crate) fn rollout_state(
    deployment: &Deployment,
    pods: &[Pod],
    app: &AppPods,
) -> Result<Attempt<()>> {
    RolloutWatch::default().observe(deployment, pods, None, app)
}

impl RolloutWatch {
    /// A watch that answers the first pod found without its sidecar with one rollout restart
    /// rather than an error: a pod created before its namespace was labelled, or while the
    /// injector was not answering, gets its sidecar when it is created again.
    pub(crate) fn with_one_restart() -> Self {
        RolloutWatch {
            restart: Restart::Allowed,
            ..RolloutWatch::default()
        }
    }

    /// Whether the last observation asked for the pods to be recreated (once; the caller
    /// restarts the rollout).
    pub(crate) fn take_restart_request(&mut self) -> bool {
        if self.restart == Restart::Requested {
            self.restart = Restart::Spent;
            return true;
        }
        false
    }

    /// Whether a Deployment's rollout is complete with every pod ready and injected; the state in
    /// words when not. `Err` for states that never recover by waiting, seen on pods of the
    /// current template (pods of an older template are on their way out), and for
    /// `CreateContainerConfigError` once it has persisted [`CONFIG_ERROR_POLLS`] polls in a row.
    pub(crate) fn observe(
        &mut self,
        deployment: &Deployment,
        pods: &[Pod],
        newest: Option<&str>,
        app: &AppPods,
    ) -> Result<Attempt<()>> {
        let persisting = std::mem::take(&mut self.persisting);
        for pod in pods.iter().filter(|p| is_current(deployment, newest, p)) {
            let pod_name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
            if let Some((container, message)) = config_error(pod) {
                let key = format!("{pod_name}/{container}");
                let seen = persisting.get(&key).copied().unwrap_or(0) + 1;
                if seen >= CONFIG_ERROR_POLLS {
                    bail!(
                        "pod {pod_name}: container {container} is waiting with \
                         CreateContainerConfigError ({message}) for {seen} polls in a row: its \
                         configuration cannot be created (a ConfigMap, Secret or key it reads is \
                         missing, or its runAsNonRoot/runAsUser does not fit the image's user)"
                    );
                }
                self.persisting.insert(key, seen);
            }
        }
        self.look(deployment, pods, newest, app)
    }

    fn look(
        &mut self,
        deployment: &Deployment,
        pods: &[Pod],
        newest: Option<&str>,
        app: &AppPods,
    ) -> Result<Attempt<()>> {
        let name = deployment.metadata.name.as_deref().unwrap_or("<unnamed>");
        let wanted = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        let generation = deployment.metadata.generation.unwrap_or(0);
        let observed = status.observed_generation.unwrap_or(0);
        if observed < generation {
            return Ok(Attempt::NotYet(format!(
                "Deployment {name}: generation {generation} not yet observed (observed {observed})"
            )));
        }
        // Before the counts: a pod that can never start keeps them short forever.
        let current: Vec<Pod> = pods
            .iter()
            .filter(|p| is_current(deployment, newest, p))
            .cloned()
            .collect();
        for pod in &current {
            let pod_name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
            if let Some(reason) = never_recovers(pod, app) {
                bail!("pod {pod_name}: {reason}");
            }
            if let Some(reason) = never_injected(pod) {
                if self.restart == Restart::Allowed {
                    self.restart = Restart::Requested;
                    return Ok(Attempt::NotYet(format!(
                        "pod {pod_name} has no sidecar: restarting the rollout once, so that its \
                         pods are created again through the injector"
                    )));
                }
                let restarted = if self.restart == Restart::Spent && newest.is_some() {
                    " A rollout restart did not cure it."
                } else {
                    ""
                };
                bail!("pod {pod_name}: {reason}{restarted}");
            }
        }
        let older = pods.len() - current.len();
        if older > 0 && newest.is_some() {
            return Ok(Attempt::NotYet(format!(
                "Deployment {name}: {older} pod(s) of an older ReplicaSet still running{}",
                describe_pods(pods)
            )));
        }
        rollout_counts(&status, wanted, name, &current)
    }
}

/// The container of `pod` waiting with `CreateContainerConfigError`, with the kubelet's message.
fn config_error(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    let statuses = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten());
    for container in statuses {
        let waiting = container.state.as_ref().and_then(|s| s.waiting.as_ref());
        if waiting.and_then(|w| w.reason.as_deref()) == Some("CreateContainerConfigError") {
            let message = waiting
                .and_then(|w| w.message.clone())
                .unwrap_or_else(|| "no message".into());
            return Some((container.name.clone(), message));
        }
    }
    None
}

/// `; ReplicaFailure (FailedCreate): admission webhook … denied the request` when the API refused
/// to create a pod (a webhook, a quota): such a pod never appears, and the Deployment's condition,
/// copied from its ReplicaSets' (`getReplicaFailures`, kubernetes `pkg/controller/deployment/progress.go`), is the only
/// trace of why.
fn replica_failure(status: &k8s_openapi::api::apps::v1::DeploymentStatus) -> String {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        .map(|c| {
            format!(
                "; ReplicaFailure ({}): {}",
                c.reason.as_deref().unwrap_or("no reason"),
                c.message.as_deref().unwrap_or("no message")
            )
        })
        .unwrap_or_default()
}

/// The replica counts and every pod's readiness, once no pod is stuck.
fn rollout_counts(
    status: &k8s_openapi::api::apps::v1::DeploymentStatus,
    wanted: i32,
    name: &str,
    pods: &[Pod],
) -> Result<Attempt<()>> {
    let counts = (
        status.replicas.unwrap_or(0),
        status.updated_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    );
    if counts != (wanted, wanted, wanted) {
        return Ok(Attempt::NotYet(format!(
            "Deployment {name}: {} replicas, {} updated, {} available of {wanted}{}{}",
            counts.0,
            counts.1,
            counts.2,
            replica_failure(status),
            describe_pods(pods)
        )));
    }
    if pods.len() != usize::try_from(wanted).unwrap_or(0) {
        return Ok(Attempt::NotYet(format!(
            "Deployment {name}: {} pods, {wanted} wanted{}",
            pods.len(),
            describe_pods(pods)
        )));
    }
    for pod in pods {
        let pod_name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
        if let Err(err) = pods::sidecar_injected(pod) {
            return Ok(Attempt::NotYet(format!("{err:#}")));
        }
        if !pod_ready(pod) || !pods::sidecar_ready(pod) {
            return Ok(Attempt::NotYet(format!(
                "pod {pod_name} not ready yet{}",
                describe_pods(std::slice::from_ref(pod))
            )));
        }
    }
    Ok(Attempt::Done(()))
}

/// Whether the pod belongs to the Deployment's newest ReplicaSet: its `pod-template-hash` is
/// `newest`'s. Without the ReplicaSet (a look at pods alone), whether every container of the
/// template is in the pod with the same image, which a restart does not change.
fn is_current(deployment: &Deployment, newest: Option<&str>, pod: &Pod) -> bool {
    match newest {
        Some(hash) => {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::k8s::client::TEMPLATE_HASH_LABEL))
                .map(String::as_str)
                == Some(hash)
        }
        None => runs_current_template(deployment, pod),
    }
}

/// Whether the pod was made from the Deployment's current template: every container of the
/// template is in the pod with the same image (the injector adds containers, never changes
/// these).
fn runs_current_template(deployment: &Deployment, pod: &Pod) -> bool {
    let Some(template) = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
    else {
        return false;
    };
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    template.containers.iter().all(|wanted| {
        spec.containers
            .iter()
            .any(|c| c.name == wanted.name && c.image == wanted.image)
    })
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The injector mutates a pod only when it is created: a pod that exists without any mark of
/// injection keeps running without a sidecar until it is replaced.
fn never_injected(pod: &Pod) -> Option<String> {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(pods::SIDECAR_STATUS_ANNOTATION));
    if annotated || pods::sidecar_container(pod).is_some() {
        return None;
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("<namespace>");
    Some(format!(
        "it was created without a sidecar (no `{}` annotation, no `{}` container), and the \
         injector acts only when a pod is created: namespace {namespace} must carry a label an \
         injector webhook selects before the pod is created (`istio-injection=enabled` when \
         Istio has a default revision, else `istio.io/rev=<revision or tag>`: `kubectl get \
         mutatingwebhookconfigurations` lists them), and that webhook's istiod must be reachable \
         then. Fix that, then recreate the pods (`kubectl -n {namespace} rollout restart \
         deployment`)",
        pods::SIDECAR_STATUS_ANNOTATION,
        pods::SIDECAR_CONTAINER
    ))
}

/// Container states that no amount of waiting fixes, with what to do.
fn never_recovers(pod: &Pod, app: &AppPods) -> Option<String> {
    let status = pod.status.as_ref()?;
    let app_containers = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| (c, true));
    let init_containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| (c, false));
    for (container, regular) in app_containers.chain(init_containers) {
        let is_ours = regular && container.name == app.container;
        let state = container.state.as_ref();
        let waiting = state.and_then(|s| s.waiting.as_ref());
        let reason = waiting.and_then(|w| w.reason.as_deref()).unwrap_or("");
        let fix = match reason {
            "ErrImageNeverPull" => Some(
                "the image is not on the node and its pull policy is Never: was it loaded with \
                 `kind load docker-image`?"
                    .to_string(),
            ),
            "InvalidImageName" => Some("the image reference is malformed".to_string()),
            "ErrImagePull" | "ImagePullBackOff" if is_ours && app.image_preloaded => Some(
                "our image was loaded into the nodes with `kind load docker-image` and must \
                 never be pulled: the pod names another image than the one loaded, or forces a \
                 pull (`imagePullPolicy: Always`, or a `:latest` tag)"
                    .to_string(),
            ),
            _ => None,
        };
        if let Some(fix) = fix {
            return Some(format!(
                "container {} is waiting with {reason} ({}): {fix}",
                container.name,
                waiting
                    .and_then(|w| w.message.as_deref())
                    .unwrap_or("no message")
            ));
        }
        // A start failure repeats identically on every restart: judge by the last one.
        let crash_looping = reason == "CrashLoopBackOff";
        let terminated = state.and_then(|s| s.terminated.as_ref()).or_else(|| {
            crash_looping
                .then(|| container.last_state.as_ref()?.terminated.as_ref())
                .flatten()
        });
        if let Some(terminated) = terminated
            && let Some(cause) = cannot_execute(terminated, crash_looping)
        {
            return Some(format!(
                "container {} cannot start its program: {cause}",
                container.name
            ));
        }
    }
    None
}

/// Why a termination means the container's program cannot run at all, if it does.
fn cannot_execute(
    terminated: &k8s_openapi::api::core::v1::ContainerStateTerminated,
    crash_looping: bool,
) -> Option<String> {
    let message = terminated.message.as_deref().unwrap_or("");
    let reason = terminated.reason.as_deref().unwrap_or("");
    if message.contains("exec format error") || reason.contains("exec format error") {
        return Some(format!(
            "exec format error ({}): the binary is not a Linux executable for the node's CPU (a \
             macOS or other-architecture binary in the image); rebuild the image so its binary \
             targets Linux on the Docker daemon's architecture",
            message.trim()
        ));
    }
    // A shell's "found but not executable" and "not found": the image lacks its entrypoint.
    // Only once it repeats, since an app may exit with these codes for its own reasons.
    if crash_looping {
        let cause = match terminated.exit_code {
            126 => "exit code 126: the entrypoint is not executable",
            127 => "exit code 127: the entrypoint was not found in the image",
            _ => return None,
        };
        return Some(format!("{cause} (restarting in a loop)"));
    }
    None
}

fn describe_pods(pods: &[Pod]) -> String {
    let mut parts = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Unknown");
        let waiting: Vec<String> = pod
            .status
            .iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .chain(s.init_container_statuses.iter())
            })
            .flatten()
            .filter_map(|c| {
                let w = c.state.as_ref()?.waiting.as_ref()?;
                Some(format!(
                    "{} {}",
                    c.name,
                    w.reason.as_deref().unwrap_or("waiting")
                ))
            })
            .collect();
        if waiting.is_empty() {
            parts.push(format!("{name} {phase}"));
        } else {
            parts.push(format!("{name} {phase} ({})", waiting.join(", ")));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; pods: {}", parts.join("; "))
    }
}

/// Waits until the Deployment has all replicas available and every pod of its newest
/// ReplicaSet is ready with its sidecar. A pod of it found without its sidecar gets one rollout
/// restart (its pods are created again, through the injector) before that is fatal.
pub(crate) async fn wait_rollout(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    app: &AppPods,
    timeout: Duration,
) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let watch = std::sync::Mutex::new(RolloutWatch::with_one_restart());
    wait_for(
        &format!("Deployment {namespace}/{name}: every replica available, ready and injected"),
        timeout,
        Duration::from_secs(2),
        || async {
            let deployment = match deployments.get_opt(name).await {
                Ok(Some(d)) => d,
                Ok(None) => return Ok(Attempt::NotYet(format!("Deployment {name} not found"))),
                Err(err) => return Ok(Attempt::NotYet(format!("API error: {err}"))),
            };
            let newest = match crate::k8s::client::newest_template_hash(client, &deployment).await {
                Ok(Some(hash)) => hash,
                Ok(None) => {
                    return Ok(Attempt::NotYet(format!(
                        "Deployment {name}: its ReplicaSet for the current template does not \
                         exist yet"
                    )));
                }
                Err(err) => return Ok(Attempt::NotYet(format!("{err:#}"))),
            };
            let pods = match crate::k8s::client::deployment_pods(client, &deployment).await {
                Ok(p) => p,
                Err(err) => return Ok(Attempt::NotYet(format!("{err:#}"))),
            };
            let (seen, restart) = {
                let mut watch = watch.lock().unwrap_or_else(|p| p.into_inner());
                let seen = watch.observe(&deployment, &pods, Some(&newest), app);
                (seen, watch.take_restart_request())
            };
            if restart {
                eprintln!(
                    "warning: Deployment {namespace}/{name}: {}",
                    match &seen {
                        Ok(Attempt::NotYet(state)) => state.as_str(),
                        _ => "a pod has no sidecar",
                    }
                );
                rollout_restart(client, namespace, name).await?;
            }
            seen
        },
    )
    .await
}

/// What `kubectl rollout restart` does: a new `kubectl.kubernetes.io/restartedAt` on the pod
/// template, so the Deployment replaces every pod.
pub(crate) async fn rollout_restart(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let now = rfc3339_now();
    let patch = serde_json::json!({"spec": {"template": {"metadata": {
        "annotations": {RESTARTED_AT: now}
    }}}});
    deployments
        .patch(
            name,
            &PatchParams {
                field_manager: Some(crate::k8s::apply::FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("setting {RESTARTED_AT} on Deployment {namespace}/{name}"))?;
    Ok(())
}

/// Now in RFC 3339 (UTC, seconds), as kubectl writes `restartedAt`.
fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The pod-template annotation whose change makes a rollout (`kubectl rollout restart`,
/// kubectl `pkg/polymorphichelpers/objectrestarter.go`).
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarted_at_is_rfc3339() {
        let value = rfc3339_now();
        assert!(humantime::parse_rfc3339(&value).is_ok(), "{value}");
        assert!(value.ends_with('Z'), "{value}");
    }

    #[test]
    fn availability_needs_the_condition_and_the_current_generation() {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "istiod", "generation": 2},
            "status": {"observedGeneration": 2, "replicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Available", "status": "True"}]}
        }))
        .unwrap();
        assert!(matches!(deployment_available(&d), Attempt::Done(())));
        d.metadata.generation = Some(3);
        assert!(matches!(deployment_available(&d), Attempt::NotYet(_)));
        d.metadata.generation = Some(2);
        d.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        let Attempt::NotYet(state) = deployment_available(&d) else {
            panic!("a False condition is not available")
        };
        assert!(state.contains("Available=False"), "{state}");
    }
}
