//! Applying `manifests/app.yaml` with kube-rs server-side apply, waiting for the rollout, and
//! deleting exactly what was created.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checks::kubernetes;
use crate::exec::wait::{GiveUp, Retry};
use crate::manifest::{Document, Resource};

/// The one field manager every apply uses, so a re-apply owns the same fields.
pub const FIELD_MANAGER: &str = "istio-fft-e2e";
/// The repository part of the placeholder image in app.yaml that is rewritten to the built tag.
pub use crate::tools::image::IMAGE_REPOSITORY;

/// What one poll of a wait saw.
#[derive(Debug)]
pub enum Attempt<T> {
    Done(T),
    /// Not there yet: the state seen, for the timeout message.
    NotYet(String),
}

/// Polls `attempt` (with the project's retry primitive, backing off from `interval`) until it is
/// done, fails, or `timeout` passes. The timeout error says what was awaited, how many polls
/// were made and the last state seen; an `Err` from `attempt` ends the wait at once (a state
/// that waiting cannot fix).
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>>>,
{
    let value = Retry::within(timeout)
        .backoff(interval, interval * 4)
        .run(what, || {
            let poll = attempt();
            async move {
                match poll.await {
                    Ok(Attempt::Done(value)) => Ok(value),
                    Ok(Attempt::NotYet(state)) => Err(anyhow::anyhow!(state)),
                    Err(err) => Err(GiveUp(err).into()),
                }
            }
        })
        .await?;
    Ok(value)
}

/// The documents to apply, as JSON: Namespaces first (the injector only acts on pods created
/// after their namespace is labelled), then the file's order; every container whose image is
/// `fft-service:*` rewritten to `image`.
pub fn prepare(documents: &[Document], image: &str) -> Result<Vec<Value>> {
    let (namespaces, rest): (Vec<&Document>, Vec<&Document>) = documents
        .iter()
        .partition(|d| matches!(d.resource, Resource::Namespace(_)));
    let mut rewritten = 0;
    let mut prepared = Vec::new();
    for document in namespaces.into_iter().chain(rest) {
        let mut raw = document.raw.clone();
        if matches!(document.resource, Resource::Deployment(_))
            && let Some(containers) = raw
                .pointer_mut("/spec/template/spec/containers")
                .and_then(Value::as_array_mut)
        {
            for container in containers {
                let is_ours = container
                    .get("image")
                    .and_then(Value::as_str)
                    .is_some_and(|current| image_repository(current) == IMAGE_REPOSITORY);
                if is_ours {
                    container["image"] = Value::String(image.to_string());
                    // The kubelet's default termination message is empty; the log tail makes
                    // a start failure such as `exec /fft-service: exec format error` visible
                    // in the pod status, so the rollout wait can stop at once.
                    if container.get("terminationMessagePolicy").is_none() {
                        container["terminationMessagePolicy"] =
                            Value::String("FallbackToLogsOnError".into());
                    }
                    rewritten += 1;
                }
            }
        }
        prepared.push(raw);
    }
    if rewritten == 0 {
        bail!(
            "no Deployment container in {} uses an `{IMAGE_REPOSITORY}:<tag>` image to replace \
             with {image}",
            documents
                .first()
                .map(|d| d.file.display().to_string())
                .unwrap_or_else(|| "the manifests".into())
        );
    }
    Ok(prepared)
}

/// `registry.example/team/fft-service:tag@sha256:…` → `fft-service`.
fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// One applied object, remembered so that teardown deletes only what the suite created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    /// False when the object existed before the apply: it is then left in place.
    pub created: bool,
}

impl Applied {
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

async fn dynamic_api(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Result<Api<DynamicObject>> {
    let gvk = gvk_of(api_version, kind);
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discovering {kind} ({api_version}): is its CRD installed?"))?;
    Ok(match (capabilities.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    })
}

/// How long a Namespace (or any object) that is being deleted may take to go: its pods get
/// their termination grace period (30 s by default) before the namespace's finalizer ends.
pub const TERMINATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `look` (which reports the object's state while it still exists) with the project's
/// retry primitive until it finds nothing, or `timeout` passes; the error names what was
/// awaited and the last state seen.
pub async fn wait_until_gone<F, Fut>(what: &str, timeout: Duration, mut look: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<String>>>,
{
    Retry::within(timeout)
        .backoff(Duration::from_millis(250), Duration::from_secs(2))
        .run(what, || {
            let seen = look();
            async move {
                match seen.await {
                    Ok(None) => Ok(()),
                    Ok(Some(state)) => Err(state),
                    Err(err) => Err(format!("{err:#}")),
                }
            }
        })
        .await?;
    Ok(())
}

/// The state of an object that is still there, in words.
fn presence(object: &DynamicObject) -> String {
    match &object.metadata.deletion_timestamp {
        Some(since) => format!("still Terminating (deletion requested at {})", since.0),
        None => "still present".to_string(),
    }
}

/// Server-side applies each document in order (force: the suite owns these fields). An object
/// still being deleted (a Namespace left Terminating by the previous run's teardown) is waited
/// for first: applying into it would be refused or vanish with it.
pub async fn apply(client: &kube::Client, documents: &[Value]) -> Result<Vec<Applied>> {
    let mut applied = Vec::new();
    for raw in documents {
        let field = |name: &str| raw.get(name).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let name = raw
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let namespace = raw.pointer("/metadata/namespace").and_then(Value::as_str);
        let api = dynamic_api(client, api_version, kind, namespace).await?;
        let what = format!(
            "{kind} {}{name}",
            namespace.map(|n| format!("{n}/")).unwrap_or_default()
        );
        let current = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading {what}"))?;
        let terminating = current
            .as_ref()
            .is_some_and(|o| o.metadata.deletion_timestamp.is_some());
        if terminating {
            eprintln!(
                "==> {what} is being deleted (left by an earlier teardown): waiting up to \
                 {TERMINATION_TIMEOUT:?} for it to be gone before applying it again"
            );
            wait_until_gone(
                &format!("{what} to finish terminating before it is applied again"),
                TERMINATION_TIMEOUT,
                || async { Ok(api.get_opt(name).await?.as_ref().map(presence)) },
            )
            .await?;
        }
        let existed = current.is_some() && !terminating;
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(raw),
        )
        .await
        .with_context(|| format!("server-side apply of {what}"))?;
        applied.push(Applied {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            created: !existed,
        });
    }
    Ok(applied)
}

/// Deletes, newest first, the objects the apply created; objects that existed before are left.
pub async fn delete_created(client: &kube::Client, applied: &[Applied]) -> Result<()> {
    let mut failures = Vec::new();
    for object in applied.iter().rev() {
        if !object.created {
            eprintln!(
                "leaving {}: it existed before the suite applied it",
                object.describe()
            );
            continue;
        }
        let result: Result<()> = async {
            let api = dynamic_api(
                client,
                &object.api_version,
                &object.kind,
                object.namespace.as_deref(),
            )
            .await?;
            match api.delete(&object.name, &DeleteParams::background()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(err) => Err(err.into()),
            }
        }
        .await;
        if let Err(err) = result {
            failures.push(format!("{}: {err:#}", object.describe()));
        }
    }
    // A Namespace goes only after everything in it: wait, so that a rerun does not apply into
    // a Terminating namespace.
    for namespace in applied
        .iter()
        .filter(|o| o.created && o.kind == "Namespace" && o.namespace.is_none())
    {
        let result = async {
            let api = dynamic_api(client, &namespace.api_version, &namespace.kind, None).await?;
            wait_until_gone(
                &format!("{} to be deleted", namespace.describe()),
                TERMINATION_TIMEOUT,
                || async { Ok(api.get_opt(&namespace.name).await?.as_ref().map(presence)) },
            )
            .await
        }
        .await;
        if let Err(err) = result {
            failures.push(format!("{}: {err:#}", namespace.describe()));
        }
    }
    if !failures.is_empty() {
        bail!(
            "deleting what the suite applied:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
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
pub const CONFIG_ERROR_POLLS: u32 = 8;

/// One rollout wait's memory across polls: how long each pod has shown a state that is fatal
/// only when it persists.
#[derive(Debug, Default)]
pub struct RolloutWatch {
    persisting: BTreeMap<String, u32>,
}

/// Whether a Deployment's rollout is complete with every pod ready and injected, from one look;
/// see [`RolloutWatch::observe`].
pub fn rollout_state(deployment: &Deployment, pods: &[Pod], app: &AppPods) -> Result<Attempt<()>> {
    RolloutWatch::default().observe(deployment, pods, app)
}

impl RolloutWatch {
    /// Whether a Deployment's rollout is complete with every pod ready and injected; the state in
    /// words when not. `Err` for states that never recover by waiting, seen on pods of the
    /// current template (pods of an older template are on their way out), and for
    /// `CreateContainerConfigError` once it has persisted [`CONFIG_ERROR_POLLS`] polls in a row.
    pub fn observe(
        &mut self,
        deployment: &Deployment,
        pods: &[Pod],
        app: &AppPods,
    ) -> Result<Attempt<()>> {
        let persisting = std::mem::take(&mut self.persisting);
        for pod in pods.iter().filter(|p| runs_current_template(deployment, p)) {
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
        self.look(deployment, pods, app)
    }

    fn look(&self, deployment: &Deployment, pods: &[Pod], app: &AppPods) -> Result<Attempt<()>> {
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
        for pod in pods.iter().filter(|p| runs_current_template(deployment, p)) {
            let pod_name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
            if let Some(reason) = never_recovers(pod, app) {
                bail!("pod {pod_name}: {reason}");
            }
            if let Some(reason) = never_injected(pod) {
                bail!("pod {pod_name}: {reason}");
            }
        }
        rollout_counts(&status, wanted, name, pods)
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
            "Deployment {name}: {} replicas, {} updated, {} available of {wanted}{}",
            counts.0,
            counts.1,
            counts.2,
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
        if let Err(err) = kubernetes::sidecar_injected(pod) {
            return Ok(Attempt::NotYet(format!("{err:#}")));
        }
        if !pod_ready(pod) || !kubernetes::sidecar_ready(pod) {
            return Ok(Attempt::NotYet(format!(
                "pod {pod_name} not ready yet{}",
                describe_pods(std::slice::from_ref(pod))
            )));
        }
    }
    Ok(Attempt::Done(()))
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
        .is_some_and(|a| a.contains_key(kubernetes::SIDECAR_STATUS_ANNOTATION));
    if annotated || kubernetes::sidecar_container(pod).is_some() {
        return None;
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("<namespace>");
    Some(format!(
        "it was created without a sidecar (no `{}` annotation, no `{}` container), and the \
         injector acts only when a pod is created: the namespace label `istio-injection=enabled` \
         must be on namespace {namespace} before the pod is created, and the injector webhook \
         (istiod in istio-system) must be reachable then. Fix that, then recreate the pods \
         (`kubectl -n {namespace} rollout restart deployment`)",
        kubernetes::SIDECAR_STATUS_ANNOTATION,
        kubernetes::SIDECAR_CONTAINER
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

/// Waits until the Deployment has all replicas available and every pod is ready with its
/// sidecar.
pub async fn wait_rollout(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    app: &AppPods,
    timeout: Duration,
) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let watch = std::sync::Mutex::new(RolloutWatch::default());
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
            let pods = match kubernetes::deployment_pods(client, &deployment).await {
                Ok(p) => p,
                Err(err) => return Ok(Attempt::NotYet(format!("{err:#}"))),
            };
            watch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(&deployment, &pods, app)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repository_ignores_registry_tag_and_digest() {
        assert_eq!(image_repository("fft-service:0.1.0"), "fft-service");
        assert_eq!(
            image_repository("ghcr.io/team/fft-service:abc@sha256:01"),
            "fft-service"
        );
        assert_eq!(image_repository("localhost:5000/other:1"), "other");
    }

    #[test]
    fn app_manifest_is_prepared_namespace_first_with_the_built_image() {
        let file = crate::config::paths::manifests_dir().join("app.yaml");
        let documents = crate::manifest::load_file(&file).unwrap();
        let prepared = prepare(&documents, "fft-service:3f2a9c01").unwrap();
        let kinds: Vec<&str> = prepared
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "Service",
                "Deployment",
                "Gateway",
                "VirtualService"
            ]
        );
        let image = prepared[2]
            .pointer("/spec/template/spec/containers/0/image")
            .unwrap();
        assert_eq!(image, "fft-service:3f2a9c01");
        // Everything else is applied as written.
        assert_eq!(prepared[0], documents[0].raw);
    }

    #[test]
    fn nothing_to_rewrite_is_an_error_naming_the_file() {
        let file = std::path::Path::new("x.yaml");
        let documents = crate::manifest::load_str(
            file,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
        )
        .unwrap();
        let err = prepare(&documents, "fft-service:1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.yaml") && err.contains("fft-service"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn wait_for_reports_the_last_state_and_the_polls() {
        let err = wait_for(
            "the thing",
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { Ok(Attempt::<()>::NotYet("still cold".into())) },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for the thing"), "{err}");
        assert!(err.contains("last error: still cold"), "{err}");
        assert!(err.contains("attempts"), "{err}");
    }

    #[tokio::test]
    async fn wait_for_stops_at_once_on_a_state_that_never_recovers() {
        let mut polls = 0;
        let err = wait_for(
            "n",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                polls += 1;
                async { Err::<Attempt<()>, _>(anyhow::anyhow!("ErrImageNeverPull")) }
            },
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("ErrImageNeverPull"));
        assert_eq!(polls, 1);
    }

    #[tokio::test]
    async fn waiting_until_gone_ends_when_the_object_is_not_found() {
        let mut looks = 0;
        wait_until_gone(
            "Namespace wty-istio to be deleted",
            Duration::from_secs(5),
            || {
                looks += 1;
                let gone = looks >= 3;
                async move {
                    Ok((!gone).then(|| "still Terminating (deletion requested at …)".to_string()))
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(looks, 3);
    }

    #[tokio::test]
    async fn waiting_until_gone_is_bounded_and_says_what_it_saw() {
        let err = wait_until_gone(
            "Namespace wty-istio to be deleted",
            Duration::from_millis(300),
            || async {
                Ok(Some(
                    "still Terminating (deletion requested at 12:00)".to_string(),
                ))
            },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("Namespace wty-istio to be deleted"), "{err}");
        assert!(err.contains("still Terminating"), "{err}");
        assert!(err.contains("attempts"), "{err}");
    }

    #[test]
    fn a_terminating_object_says_since_when() {
        let mut object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "wty-istio"}
        }))
        .unwrap();
        assert_eq!(presence(&object), "still present");
        object.metadata.deletion_timestamp =
            Some(serde_json::from_value(serde_json::json!("2025-11-26T09:30:00Z")).unwrap());
        assert!(
            presence(&object).starts_with("still Terminating"),
            "{}",
            presence(&object)
        );
    }

    #[tokio::test]
    async fn wait_for_returns_once_done() {
        let mut polls = 0;
        let value = wait_for(
            "n",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                polls += 1;
                let done = polls >= 3;
                async move {
                    Ok(if done {
                        Attempt::Done(7)
                    } else {
                        Attempt::NotYet("no".into())
                    })
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(value, 7);
    }
}
