//! Applying `manifests/app.yaml` with kube-rs server-side apply, waiting for the rollout, and
//! deleting exactly what was created.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exec::wait::Retry;
use crate::manifest::{Document, Resource};

/// The one field manager every apply uses, so a re-apply owns the same fields.
pub const FIELD_MANAGER: &str = "istio-fft-e2e";
/// The repository part of the placeholder image in app.yaml that is rewritten to the built tag.
use crate::config::names::{IMAGE_REPOSITORY, is_service_image};

/// The documents to apply, as JSON: Namespaces first (the injector only acts on pods created
/// after their namespace is labelled), then the file's order; every container whose image is
/// `fft-service:*` rewritten to `image`.
pub(crate) fn prepare(documents: &[Document], image: &str) -> Result<Vec<Value>> {
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
                    .is_some_and(is_service_image);
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

/// Fits the prepared documents to the mesh an existing cluster has: the app's Namespace gets
/// the labels its injector honours (`labels`), and each Istio Gateway selects the gateway pods
/// by `selector`. Returns each change in words.
pub(crate) fn fit_to_mesh(
    prepared: &mut [Value],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    selector: &[(String, String)],
) -> Vec<String> {
    let mut changes = Vec::new();
    let words = |map: &serde_json::Map<String, Value>| {
        map.iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(",")
    };
    for document in prepared.iter_mut() {
        let kind = document["kind"].as_str().unwrap_or("").to_string();
        let name = document
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let api_version = document["apiVersion"].as_str().unwrap_or("");
        if kind == "Namespace" && name == namespace {
            let wanted: serde_json::Map<String, Value> = labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let before = document
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if before != wanted {
                changes.push(format!(
                    "Namespace {name} labelled {} instead of {} (what this cluster's injector \
                     honours)",
                    words(&wanted),
                    words(&before)
                ));
                document["metadata"]["labels"] = Value::Object(wanted);
            }
        } else if kind == "Gateway" && api_version.starts_with("networking.istio.io/") {
            let wanted: serde_json::Map<String, Value> = selector
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let before = document
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if before != wanted {
                changes.push(format!(
                    "Gateway {name} selects {} instead of {} (E2E_GATEWAY_SELECTOR)",
                    words(&wanted),
                    words(&before)
                ));
                document["spec"]["selector"] = Value::Object(wanted);
            }
        }
    }
    changes
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
    /// On an object that existed: the labels the apply changed, each with its value before
    /// (`None`: it had none). Teardown puts them back, so a namespace the suite only labelled is
    /// left as it was found.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restore_labels: BTreeMap<String, Option<String>>,
    /// The object's `metadata.uid` after the apply. Deletes are conditional on it, so an object
    /// of the same name that someone else made after ours was deleted (or one in another
    /// cluster behind a context of the same name) is never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl Applied {
    /// Whether teardown has something to undo: the object was created, or relabelled.
    pub(crate) fn is_ours(&self) -> bool {
        self.created || !self.restore_labels.is_empty()
    }

    /// The merge patch that puts the changed labels back.
    pub(crate) fn restore_patch(&self) -> Value {
        let labels: serde_json::Map<String, Value> = self
            .restore_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
            .collect();
        let mut patch = serde_json::json!({"metadata": {"labels": labels}});
        // A uid in a patch must be the object's (uid is immutable): the API refuses the patch
        // on another object of the same name.
        if let Some(uid) = &self.uid {
            patch["metadata"]["uid"] = Value::String(uid.clone());
        }
        patch
    }

    pub(crate) fn describe(&self) -> String {
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
pub(crate) const TERMINATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `look` (which reports the object's state while it still exists) with the project's
/// retry primitive until it finds nothing, or `timeout` passes; the error names what was
/// awaited and the last state seen.
pub(crate) async fn wait_until_gone<F, Fut>(
    what: &str,
    timeout: Duration,
    mut look: F,
) -> Result<()>
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
        let restore_labels = match (&current, existed) {
            (Some(current), true) => changed_labels(current, raw),
            _ => BTreeMap::new(),
        };
        let after = match api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(raw),
            )
            .await
        {
            Ok(after) => after,
            Err(err) => {
                // The answer can be lost after the server applied the object (a timeout, a
                // reset connection). An object that was not there before and is there now is
                // the suite's: it is recorded as created, so that it is deleted like the others.
                let now = if existed {
                    None
                } else {
                    api.get_opt(name).await.ok().flatten()
                };
                match now {
                    Some(now) if now.metadata.deletion_timestamp.is_none() => {
                        eprintln!("{what}: the apply's answer was lost ({err}), but it exists now");
                        now
                    }
                    _ => return Err(err).with_context(|| format!("server-side apply of {what}")),
                }
            }
        };
        applied.push(Applied {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            created: !existed,
            restore_labels,
            uid: after.metadata.uid,
        });
    }
    Ok(applied)
}

/// The uid of each document's object, if one exists now (a Terminating one counts as gone).
pub async fn present_uids(
    client: &kube::Client,
    documents: &[Value],
) -> Result<Vec<Option<String>>> {
    let mut uids = Vec::new();
    for raw in documents {
        let field = |name: &str| raw.get(name).and_then(Value::as_str).unwrap_or("");
        let name = raw
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let namespace = raw.pointer("/metadata/namespace").and_then(Value::as_str);
        let api = dynamic_api(client, field("apiVersion"), field("kind"), namespace).await?;
        let current = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading {} {name}", field("kind")))?;
        uids.push(
            current
                .filter(|o| o.metadata.deletion_timestamp.is_none())
                .map(|o| o.metadata.uid.unwrap_or_default()),
        );
    }
    Ok(uids)
}

/// The labels of `raw` that applying it changes on `current`, each with its value before.
fn changed_labels(current: &DynamicObject, raw: &Value) -> BTreeMap<String, Option<String>> {
    let before = current.metadata.labels.clone().unwrap_or_default();
    raw.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(key, value)| before.get(*key).map(String::as_str) != value.as_str())
        .map(|(key, _)| (key.clone(), before.get(key).cloned()))
        .collect()
}

/// Deletes, newest first, the objects the apply created, and puts back the labels it changed on
/// objects that existed before; anything else is left.
pub async fn delete_created(client: &kube::Client, applied: &[Applied]) -> Result<()> {
    let mut failures = Vec::new();
    // Objects not deleted (left, or failed): their namespace is not waited for.
    let mut not_deleted: Vec<&Applied> = Vec::new();
    for object in applied.iter().rev() {
        if !object.is_ours() {
            eprintln!(
                "leaving {}: it existed before the suite applied it",
                object.describe()
            );
            continue;
        }
        // Ok(true): undone; Ok(false): left, since the object there is not the suite's.
        let result: Result<bool> = async {
            let api = dynamic_api(
                client,
                &object.api_version,
                &object.kind,
                object.namespace.as_deref(),
            )
            .await?;
            if !object.created {
                eprintln!(
                    "leaving {}: it existed before; putting back the labels the suite changed",
                    object.describe()
                );
                // The patch names the uid: on another object of the name the API refuses it
                // (uid is immutable: 422), and its labels are left alone.
                return match api
                    .patch(
                        &object.name,
                        &PatchParams {
                            field_manager: Some(FIELD_MANAGER.to_string()),
                            ..PatchParams::default()
                        },
                        &Patch::Merge(object.restore_patch()),
                    )
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 422 || status.code == 409 => {
                        eprintln!(
                            "leaving the labels of {}: it is not the object the suite relabelled \
                             (its uid differs)",
                            object.describe()
                        );
                        Ok(false)
                    }
                    Err(err) => Err(err.into()),
                };
            }
            // Only the object the suite created: the API answers 409 if the uid differs.
            let params = DeleteParams {
                preconditions: object.uid.clone().map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(&object.name, &params).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
                Err(kube::Error::Api(status))
                    if status.code == 409 && status.message.contains("Precondition failed") =>
                {
                    eprintln!(
                        "leaving {}: an object of that name exists, but not the one the suite \
                         created (its uid differs)",
                        object.describe()
                    );
                    Ok(false)
                }
                // A Namespace already being deleted: the deletion the suite asks for is under
                // way (`pkg/registry/core/namespace/storage/storage.go`).
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(true),
                Err(err) => Err(err.into()),
            }
        }
        .await;
        match result {
            Ok(true) => {}
            Ok(false) => not_deleted.push(object),
            Err(err) => {
                failures.push(format!("{}: {err:#}", object.describe()));
                not_deleted.push(object);
            }
        }
    }
    // A Namespace goes only after everything in it: wait, so that a rerun does not apply into
    // a Terminating namespace.
    for namespace in applied.iter().filter(|o| {
        o.created
            && o.kind == "Namespace"
            && o.namespace.is_none()
            && !not_deleted.iter().any(|left| left == o)
    }) {
        let result = async {
            let api = dynamic_api(client, &namespace.api_version, &namespace.kind, None).await?;
            wait_until_gone(
                &format!("{} to be deleted", namespace.describe()),
                TERMINATION_TIMEOUT,
                // Ours is gone once no object of its uid is there (another of the same name is
                // not ours to wait for).
                || async {
                    Ok(api
                        .get_opt(&namespace.name)
                        .await?
                        .filter(|o| namespace.uid.is_none() || o.metadata.uid == namespace.uid)
                        .as_ref()
                        .map(presence))
                },
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_revisioned_mesh_relabels_the_namespace_and_a_helm_gateway_reselects() {
        let file = crate::config::paths::manifests_dir().join("app.yaml");
        let documents = crate::manifest::load_file(&file).unwrap();
        let mut prepared = prepare(&documents, "fft-service:3f2a9c01").unwrap();
        let untouched = prepared.clone();
        let default_labels: BTreeMap<String, String> =
            [("istio-injection".to_string(), "enabled".to_string())].into();
        let default_selector = [("istio".to_string(), "ingressgateway".to_string())];
        assert!(
            fit_to_mesh(
                &mut prepared,
                "wty-istio",
                &default_labels,
                &default_selector
            )
            .is_empty()
        );
        assert_eq!(
            prepared, untouched,
            "istioctl's default mesh changes nothing"
        );
        let revision: BTreeMap<String, String> =
            [("istio.io/rev".to_string(), "canary".to_string())].into();
        let selector = [("istio".to_string(), "gateway".to_string())];
        let changes = fit_to_mesh(&mut prepared, "wty-istio", &revision, &selector);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(
            prepared[0]["metadata"]["labels"],
            serde_json::json!({"istio.io/rev": "canary"})
        );
        assert_eq!(
            prepared[3]["spec"]["selector"],
            serde_json::json!({"istio": "gateway"})
        );
    }

    #[test]
    fn only_the_labels_an_apply_changes_are_put_back() {
        let current: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "wty-istio", "labels": {"team": "a", "istio-injection": "disabled"}}
        }))
        .unwrap();
        let raw = serde_json::json!({"metadata": {"name": "wty-istio", "labels": {
            "team": "a", "istio-injection": "enabled", "istio.io/rev": "canary"}}});
        let changed = changed_labels(&current, &raw);
        assert_eq!(
            changed,
            BTreeMap::from([
                ("istio-injection".to_string(), Some("disabled".to_string())),
                ("istio.io/rev".to_string(), None),
            ])
        );
        let applied = Applied {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: "wty-istio".into(),
            namespace: None,
            created: false,
            restore_labels: changed,
            uid: None,
        };
        assert!(applied.is_ours());
        assert_eq!(
            applied.restore_patch(),
            serde_json::json!({"metadata": {"labels": {
                "istio-injection": "disabled", "istio.io/rev": null}}})
        );
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
}
