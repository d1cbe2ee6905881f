//! The fake API server's other objects: what the `existing` target reads of an Istio install
//! (istiod's Deployment is a [`super::FakeDeployment`]; the gateway Service, the injector's
//! MutatingWebhookConfigurations) and what it applies and deletes (Namespace, Service, Gateway,
//! VirtualService; the Deployment is handed to the Deployment model). Each behaviour follows
//! the upstream file named beside it:
//!
//! - Discovery: `GET /api/v1` and `GET /apis/{group}/{version}` answer an `APIResourceList` of
//!   the resources served (apiserver `pkg/endpoints/discovery/version.go`); kube-rs's
//!   `discovery::pinned_kind` reads it to learn the plural and the scope.
//! - Reads: a GET of one object, or a list with a `labelSelector` of equalities and bare keys
//!   (apimachinery `pkg/labels/selector.go` `Parse`), in one namespace or all
//!   (`/api/v1/services`, `/apis/apps/v1/deployments`). An unknown object is a 404 `Status`
//!   `{resource} "name" not found` (`errors.NewNotFound`).
//! - Server-side apply (`PATCH` with `application/apply-patch+yaml`): an absent object is
//!   created (201); a present one gets the applied fields (200). Upstream, fields another
//!   manager owns stay and fields this manager stops applying go
//!   (apiserver `pkg/endpoints/handlers/fieldmanager`); the suite always applies the same
//!   fields, so merging the applied configuration into the object (RFC 7386 without `null`)
//!   gives the same object. A namespaced object in a namespace that does not exist is refused
//!   with 404 `namespaces "x" not found`, and one in a namespace being deleted with 403
//!   `unable to create new content in namespace x because it is being terminated` (kubernetes
//!   `plugin/pkg/admission/namespace/lifecycle/admission.go`); an object being deleted still
//!   takes updates. A created Namespace gets the label `kubernetes.io/metadata.name`
//!   (kubernetes `pkg/registry/core/namespace/strategy.go` `PrepareForCreate`).
//! - `PATCH` with `application/merge-patch+json`: RFC 7386, as for Deployments.
//! - `DELETE`: `DeleteOptions.preconditions.uid` that is not the object's is a 409 Conflict
//!   (apiserver `pkg/storage/interfaces.go` `Preconditions.Check`). A namespaced object goes at
//!   once (no finalizers here). A Namespace gets
//!   `deletionTimestamp` and `status.phase: Terminating`; the namespace controller then deletes
//!   everything in it, one step per request, and removes the Namespace once it is empty
//!   (kubernetes `pkg/controller/namespace/deletion/namespaced_resources_deleter.go`). A
//!   Deployment's pods go with it (the garbage collector, background propagation:
//!   `pkg/controller/garbagecollector/garbagecollector.go`).
//! - Admission of a pod the ReplicaSet controller creates (apiserver
//!   `pkg/admission/plugin/webhook/mutating/dispatcher.go`): every webhook of every
//!   MutatingWebhookConfiguration whose `namespaceSelector` matches the namespace's labels and
//!   whose `objectSelector` matches the pod's (`pkg/admission/plugin/webhook/predicates/
//!   namespace/matcher.go`, `predicates/object/matcher.go`; an absent selector matches all) is
//!   called. A `*.sidecar-injector.istio.io` webhook injects the sidecar (istio
//!   `pkg/kube/inject/webhook.go`); a webhook the test made deny answers with its message, and
//!   the API refuses the pod with `admission webhook "<name>" denied the request: <message>`
//!   (apiserver `pkg/admission/plugin/webhook/errors/statuserror.go` `ToStatusErr`). The
//!   ReplicaSet then reports the error as its `ReplicaFailure` condition, reason
//!   `FailedCreate` (kubernetes `pkg/controller/replicaset/replica_set_utils.go`
//!   `calculateStatus`), which the Deployment copies (`pkg/controller/deployment/progress.go`
//!   `getReplicaFailures`).

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{
    FakeBody, FakeDeployment, State, labels_match, media_type, merge_patch, method_not_allowed,
    ok_json, query_param, status,
};

/// One kind the fake serves: group, version, plural, kind, namespaced.
pub(super) struct Resource {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
}

const RESOURCES: [Resource; 7] = [
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
    },
    Resource {
        group: "networking.istio.io",
        version: "v1alpha3",
        plural: "gateways",
        kind: "Gateway",
        namespaced: true,
    },
    Resource {
        group: "networking.istio.io",
        version: "v1alpha3",
        plural: "virtualservices",
        kind: "VirtualService",
        namespaced: true,
    },
    Resource {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "mutatingwebhookconfigurations",
        kind: "MutatingWebhookConfiguration",
        namespaced: false,
    },
];

fn api_version(resource: &Resource) -> String {
    if resource.group.is_empty() {
        resource.version.to_string()
    } else {
        format!("{}/{}", resource.group, resource.version)
    }
}

/// What a request path names: the group/version, then a resource in a namespace or not, and an
/// object's name.
pub(super) struct Target<'a> {
    resource: &'a Resource,
    namespace: Option<String>,
    name: Option<String>,
}

/// `None`: not a path of these objects (the pod and Deployment handlers take it).
pub(super) fn route(path: &str) -> Option<Result<Target<'static>, Value>> {
    let (group, version, rest) = if let Some(rest) = path.strip_prefix("/api/") {
        let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
        ("", version, rest)
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let mut parts = rest.splitn(3, '/');
        let group = parts.next()?;
        let version = parts.next()?;
        (group, version, parts.next().unwrap_or(""))
    };
    if rest.is_empty() {
        let resources: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(|r| {
                json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
                       "namespaced": r.namespaced, "kind": r.kind,
                       "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        if resources.is_empty() {
            return None;
        }
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        return Some(Err(json!({"kind": "APIResourceList", "apiVersion": "v1",
                               "groupVersion": group_version, "resources": resources})));
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let (resource, namespace, name) = match parts.as_slice() {
        ["namespaces", ns, plural] => (find(plural)?, Some(ns.to_string()), None),
        ["namespaces", ns, plural, name] => {
            (find(plural)?, Some(ns.to_string()), Some(name.to_string()))
        }
        [plural] => (find(plural)?, None, None),
        [plural, name] => (find(plural)?, None, Some(name.to_string())),
        _ => return None,
    };
    // Pods, their subresources and namespaced Deployments have their own models.
    if resource.plural == "pods" || (resource.plural == "deployments" && namespace.is_some()) {
        return None;
    }
    Some(Ok(Target {
        resource,
        namespace,
        name,
    }))
}

fn not_found(resource: &Resource, name: &str) -> super::Response<FakeBody> {
    let what = if resource.group.is_empty() {
        resource.plural.to_string()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    };
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{what} \"{name}\" not found"),
    )
}

fn is(object: &Value, resource: &Resource, namespace: Option<&str>, name: Option<&str>) -> bool {
    object["kind"] == resource.kind
        && namespace.is_none_or(|ns| object["metadata"]["namespace"] == ns)
        && name.is_none_or(|n| object["metadata"]["name"] == n)
}

/// The labels of a namespace that exists, for the webhooks' namespace selectors.
pub(super) fn namespace_labels(state: &State, namespace: &str) -> Value {
    state
        .objects
        .iter()
        .find(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == namespace)
        .map(|o| o["metadata"]["labels"].clone())
        .unwrap_or_else(|| json!({"kubernetes.io/metadata.name": namespace}))
}

/// Serves a request for these objects.
pub(super) fn handle(
    state: &std::sync::Mutex<State>,
    method: &Method,
    target: Target<'_>,
    query: &str,
    content_type: Option<&str>,
    body: Option<String>,
) -> super::Response<FakeBody> {
    let mut state = state.lock().unwrap();
    let resource = target.resource;
    let namespace = target.namespace.as_deref();
    let Some(name) = target.name.as_deref() else {
        if *method != Method::GET {
            return method_not_allowed();
        }
        let selector = query_param(query, "labelSelector").unwrap_or_default();
        let mut items: Vec<Value> = state
            .objects
            .iter()
            .filter(|o| is(o, resource, namespace, None))
            .cloned()
            .collect();
        if resource.plural == "deployments" {
            items.extend(
                state
                    .deployments
                    .iter()
                    .map(|d| d.json(&state.pods))
                    .filter(|d| namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns)),
            );
        }
        items.retain(|o| labels_match(&selector, &o["metadata"]["labels"]));
        return ok_json(json!({"apiVersion": api_version(resource),
                              "kind": format!("{}List", resource.kind),
                              "metadata": {"resourceVersion": state.resource_version.to_string()},
                              "items": items}));
    };
    let index = state
        .objects
        .iter()
        .position(|o| is(o, resource, namespace, Some(name)));
    match (method.as_str(), index) {
        ("GET", Some(i)) => ok_json(state.objects[i].clone()),
        ("GET", None) => not_found(resource, name),
        ("DELETE", None) => not_found(resource, name),
        ("DELETE", Some(i)) => {
            if let Some(conflict) = super::delete_precondition_failed(
                body.as_deref(),
                &state.objects[i],
                resource.plural,
                name,
            ) {
                return conflict;
            }
            if resource.kind == "Namespace"
                && state.objects[i]["metadata"]["deletionTimestamp"].is_string()
            {
                // kubernetes pkg/registry/core/namespace/storage/storage.go `Delete`.
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on namespaces \"{name}\": The system is \
                         ensuring all content is removed from this namespace.  Upon completion, \
                         this namespace will automatically be purged by the system."
                    ),
                );
            }
            state.resource_version += 1;
            if resource.kind == "Namespace" {
                let object = &mut state.objects[i];
                object["metadata"]["deletionTimestamp"] = json!(super::now_plus(0));
                object["status"] = json!({"phase": "Terminating"});
                ok_json(object.clone())
            } else {
                ok_json(state.objects.remove(i))
            }
        }
        ("PATCH", found) => {
            let media = media_type(content_type);
            let patch: Value = match serde_json::from_str(body.as_deref().unwrap_or("")) {
                Ok(v @ Value::Object(_)) => v,
                _ => return super::bad_request("the patch is not a JSON object"),
            };
            match (media.as_str(), found) {
                ("application/apply-patch+yaml", None) => {
                    if let Some(ns) = namespace {
                        let home = state
                            .objects
                            .iter()
                            .find(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == ns);
                        match home {
                            None => {
                                return status(
                                    StatusCode::NOT_FOUND,
                                    "NotFound",
                                    &format!("namespaces \"{ns}\" not found"),
                                );
                            }
                            // NamespaceLifecycle refuses new objects in a namespace being
                            // deleted (plugin/pkg/admission/namespace/lifecycle/admission.go).
                            Some(home) if home["metadata"]["deletionTimestamp"].is_string() => {
                                return status(
                                    StatusCode::FORBIDDEN,
                                    "Forbidden",
                                    &format!(
                                        "{} \"{name}\" is forbidden: unable to create new \
                                         content in namespace {ns} because it is being terminated",
                                        resource.plural
                                    ),
                                );
                            }
                            Some(_) => {}
                        }
                    }
                    let created = create(&mut state, patch, resource, namespace, name);
                    if let Some(at) = state.late_answers.iter().position(|n| n == name) {
                        state.late_answers.remove(at);
                        return status(
                            StatusCode::GATEWAY_TIMEOUT,
                            "Timeout",
                            "the server was unable to return a response in the time allotted, \
                             but may still be processing the request",
                        );
                    }
                    super::Response::builder()
                        .status(StatusCode::CREATED)
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(hyper::body::Bytes::from(
                            created.to_string(),
                        )))
                        .unwrap()
                }
                // An object being deleted still takes updates; only creating content in a
                // terminating namespace is refused (above).
                ("application/apply-patch+yaml", Some(i)) => {
                    state.resource_version += 1;
                    let mut applied = patch;
                    strip_nulls(&mut applied);
                    merge_patch(&mut state.objects[i], &applied);
                    ok_json(state.objects[i].clone())
                }
                ("application/merge-patch+json", Some(i)) => {
                    // uid is immutable (apimachinery pkg/api/validation/objectmeta.go
                    // `ValidateObjectMetaUpdate`).
                    if let Some(uid) = patch.pointer("/metadata/uid").and_then(Value::as_str)
                        && Some(uid) != state.objects[i]["metadata"]["uid"].as_str()
                    {
                        return status(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Invalid",
                            &format!(
                                "{} \"{name}\" is invalid: metadata.uid: Invalid value: \
                                 \"{uid}\": field is immutable",
                                resource.plural
                            ),
                        );
                    }
                    state.resource_version += 1;
                    merge_patch(&mut state.objects[i], &patch);
                    ok_json(state.objects[i].clone())
                }
                ("application/merge-patch+json", None) => not_found(resource, name),
                _ => super::unsupported_media_type(&super::PATCH_TYPES),
            }
        }
        _ => method_not_allowed(),
    }
}

fn strip_nulls(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

fn create(
    state: &mut State,
    mut object: Value,
    resource: &Resource,
    namespace: Option<&str>,
    name: &str,
) -> Value {
    state.resource_version += 1;
    let metadata = object["metadata"]
        .as_object_mut()
        .cloned()
        .unwrap_or_default();
    let mut metadata = Value::Object(metadata);
    metadata["name"] = json!(name);
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    // Unique per object, as real uids are: a re-created object has a new one.
    metadata["uid"] = json!(format!(
        "uid-{}-{name}-{}",
        resource.plural, state.resource_version
    ));
    metadata["resourceVersion"] = json!(state.resource_version.to_string());
    metadata["creationTimestamp"] = json!(super::now_plus(0));
    if resource.kind == "Namespace" {
        metadata["labels"]["kubernetes.io/metadata.name"] = json!(name);
        object["status"] = json!({"phase": "Active"});
    }
    object["metadata"] = metadata;
    object["apiVersion"] = json!(api_version(resource));
    object["kind"] = json!(resource.kind);
    state.objects.push(object.clone());
    object
}

/// The namespace controller's step: empties each Terminating namespace, then removes it.
pub(super) fn namespace_controller_step(state: &mut State) {
    let terminating: Vec<String> = state
        .objects
        .iter()
        .filter(|o| o["kind"] == "Namespace" && o["metadata"]["deletionTimestamp"].is_string())
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    for namespace in terminating {
        let before = state.objects.len() + state.deployments.len() + state.pods.len();
        state
            .objects
            .retain(|o| o["metadata"]["namespace"] != namespace.as_str());
        state.deployments.retain(|d| d.namespace() != namespace);
        state.pods.retain(|p| p.namespace != namespace);
        let after = state.objects.len() + state.deployments.len() + state.pods.len();
        if before == after {
            state
                .objects
                .retain(|o| !(o["kind"] == "Namespace" && o["metadata"]["name"] == namespace));
        }
    }
}

/// Server-side apply of a Deployment: an absent one joins the Deployment model (its controller
/// observes it and creates its pods); a present one gets the applied spec (a change is a new
/// generation). Returns the answer's status and object.
pub(super) fn apply_deployment(
    state: &mut State,
    namespace: &str,
    name: &str,
    applied: Value,
) -> (StatusCode, Value) {
    let home = state
        .objects
        .iter()
        .find(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == namespace);
    let exists = state
        .deployments
        .iter()
        .any(|d| d.namespace() == namespace && d.name() == name);
    match home {
        None => {
            return (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404,
                       "message": format!("namespaces \"{namespace}\" not found")}),
            );
        }
        // NamespaceLifecycle (see the module's notes).
        Some(home) if !exists && home["metadata"]["deletionTimestamp"].is_string() => {
            return (
                StatusCode::FORBIDDEN,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "Forbidden", "code": 403,
                       "message": format!("deployments.apps \"{name}\" is forbidden: unable to \
                                           create new content in namespace {namespace} because \
                                           it is being terminated")}),
            );
        }
        Some(_) => {}
    }
    state.resource_version += 1;
    let version = state.resource_version.to_string();
    if let Some(existing) = state
        .deployments
        .iter_mut()
        .find(|d| d.namespace() == namespace && d.name() == name)
    {
        let mut object = existing.object.clone();
        let mut applied = applied;
        strip_nulls(&mut applied);
        merge_patch(&mut object, &applied);
        if object["spec"] != existing.object["spec"] {
            object["metadata"]["generation"] = json!(existing.generation() + 1);
            existing.observe_wait = existing.config.observe_delay;
        }
        object["metadata"]["resourceVersion"] = json!(version);
        existing.object = object;
        let answer = existing.json(&state.pods);
        return (StatusCode::OK, answer);
    }
    let replicas = applied["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
    let config = FakeDeployment::new(namespace, name, replicas);
    let mut object = applied;
    strip_nulls(&mut object);
    object["metadata"]["uid"] = json!(format!("uid-{name}"));
    object["metadata"]["namespace"] = json!(namespace);
    object["metadata"]["generation"] = json!(1);
    object["metadata"]["resourceVersion"] = json!(version);
    state.deployments.push(super::DeploymentState {
        observe_wait: config.observe_delay,
        config,
        object,
        observed_generation: 0,
        observed_hash: String::new(),
        replica_sets: Vec::new(),
        failure: None,
    });
    let answer = state.deployments.last().unwrap().json(&state.pods);
    (StatusCode::CREATED, answer)
}

/// Whether a Kubernetes label selector (JSON) matches `labels` (JSON map); an absent selector
/// matches everything (apimachinery `LabelSelectorAsSelector`).
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    if selector.is_null() {
        return true;
    }
    let equal = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels[k] == *v);
    equal
        && selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e["key"].as_str().unwrap_or("");
                let value = labels.get(key).and_then(Value::as_str);
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                match e["operator"].as_str().unwrap_or("") {
                    "In" => value.is_some_and(|v| values.contains(&v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
}

/// What admission does to a pod the ReplicaSet controller creates.
pub(super) enum Admission {
    /// Created; injected by a sidecar injector when one selected it.
    Created { injected: bool },
    /// Refused: the API's message.
    Denied(String),
}

/// The mutating webhooks that select a pod with `pod_labels` in `namespace`, called in order.
/// `None` when the cluster has no MutatingWebhookConfiguration at all (a test that models
/// injection by [`FakeDeployment::inject`] alone).
pub(super) fn admit(
    state: &State,
    namespace: &str,
    pod_labels: &BTreeMap<String, String>,
) -> Option<Admission> {
    let configurations: Vec<&Value> = state
        .objects
        .iter()
        .filter(|o| o["kind"] == "MutatingWebhookConfiguration")
        .collect();
    if configurations.is_empty() {
        return None;
    }
    let namespace_labels = namespace_labels(state, namespace);
    let pod_labels = json!(pod_labels);
    let mut injected = false;
    for configuration in configurations {
        let config_name = configuration["metadata"]["name"].as_str().unwrap_or("");
        for webhook in configuration["webhooks"].as_array().into_iter().flatten() {
            if !selector_matches(&webhook["namespaceSelector"], &namespace_labels)
                || !selector_matches(&webhook["objectSelector"], &pod_labels)
            {
                continue;
            }
            let webhook_name = webhook["name"].as_str().unwrap_or("");
            if let Some(message) = state.denials.get(config_name) {
                return Some(Admission::Denied(format!(
                    "admission webhook \"{webhook_name}\" denied the request: {message}"
                )));
            }
            if webhook_name.ends_with("sidecar-injector.istio.io") {
                injected = true;
            }
        }
    }
    Some(Admission::Created { injected })
}

/// Every object the fake stores, as `Kind namespace/name`, with the labels of Namespaces: what a
/// test compares before and after a run.
pub(super) fn inventory(state: &State) -> Vec<String> {
    let mut seen: Vec<String> = state
        .objects
        .iter()
        .map(|o| {
            let meta = &o["metadata"];
            let mut line = format!(
                "{} {}{}",
                o["kind"].as_str().unwrap_or("?"),
                meta["namespace"]
                    .as_str()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                meta["name"].as_str().unwrap_or("?")
            );
            if o["kind"] == "Namespace" {
                let labels: Map<String, Value> =
                    meta["labels"].as_object().cloned().unwrap_or_default();
                let words: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                    .collect();
                line.push_str(&format!(" [{}]", words.join(",")));
            }
            line
        })
        .collect();
    seen.extend(
        state
            .deployments
            .iter()
            .map(|d| format!("Deployment {}/{}", d.namespace(), d.name())),
    );
    seen.extend(
        state
            .pods
            .iter()
            .map(|p| format!("Pod {}/{}", p.namespace, p.name)),
    );
    seen.sort();
    seen
}
