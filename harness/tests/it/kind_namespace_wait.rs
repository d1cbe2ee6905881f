//! The existing target's apply and teardown against a fake Kubernetes API (a tower service
//! behind a real kube::Client): a Namespace left Terminating is waited for before it is applied
//! again, and teardown waits until the Namespace it deleted is really gone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::k8s::apply::{self, Applied};
use hyper::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// The one Namespace the fake serves, `wty-istio`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Absent,
    Active,
    /// Reads that still see it before the namespace controller finishes.
    Terminating(usize),
}

#[derive(Default)]
struct FakeApi {
    state: State,
    requests: Vec<String>,
}

fn namespace(terminating: bool) -> Value {
    let mut metadata = json!({"name": "wty-istio", "uid": "5f1e", "resourceVersion": "7"});
    if terminating {
        metadata["deletionTimestamp"] = json!("2025-11-26T09:30:00Z");
    }
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata,
           "status": {"phase": if terminating { "Terminating" } else { "Active" }}})
}

fn respond(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn handle(api: &mut FakeApi, method: &Method, path: &str) -> Response<Body> {
    api.requests.push(format!("{method} {path}"));
    let not_found = || {
        respond(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                   "message": "namespaces \"wty-istio\" not found", "code": 404}),
        )
    };
    match (method.as_str(), path) {
        ("GET", "/api/v1") => respond(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "namespaces", "singularName": "namespace", "namespaced": false,
                 "kind": "Namespace", "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]}),
        ),
        ("GET", "/api/v1/namespaces/wty-istio") => match api.state {
            State::Absent => not_found(),
            State::Active => respond(StatusCode::OK, namespace(false)),
            State::Terminating(reads_left) => {
                api.state = if reads_left <= 1 {
                    State::Absent
                } else {
                    State::Terminating(reads_left - 1)
                };
                respond(StatusCode::OK, namespace(true))
            }
        },
        ("PATCH", "/api/v1/namespaces/wty-istio") => {
            if let State::Terminating(_) = api.state {
                // What the API server answers for a namespace being deleted.
                return respond(
                    StatusCode::FORBIDDEN,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "Forbidden", "code": 403,
                           "message": "namespaces \"wty-istio\" is forbidden: unable to apply: the namespace is being terminated"}),
                );
            }
            let created = api.state == State::Absent;
            api.state = State::Active;
            respond(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                namespace(false),
            )
        }
        ("DELETE", "/api/v1/namespaces/wty-istio") => match api.state {
            State::Absent => not_found(),
            _ => {
                api.state = State::Terminating(3);
                respond(StatusCode::OK, namespace(true))
            }
        },
        _ => respond(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                   "message": format!("the fake serves no {method} {path}"), "code": 404}),
        ),
    }
}

fn client(api: Arc<Mutex<FakeApi>>) -> kube::Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let api = Arc::clone(&api);
        async move {
            let response = handle(
                &mut api.lock().unwrap(),
                request.method(),
                request.uri().path(),
            );
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    kube::Client::new(service, "default")
}

fn requests(api: &Arc<Mutex<FakeApi>>) -> Vec<String> {
    api.lock().unwrap().requests.clone()
}

#[tokio::test]
async fn apply_waits_for_a_terminating_namespace_to_be_gone_then_creates_it() {
    let api = Arc::new(Mutex::new(FakeApi {
        state: State::Terminating(3),
        ..FakeApi::default()
    }));
    let applied = tokio::time::timeout(
        Duration::from_secs(30),
        apply::apply(&client(Arc::clone(&api)), &[namespace(false)]),
    )
    .await
    .expect("bounded")
    .expect("apply");
    assert_eq!(
        applied,
        [Applied {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: "wty-istio".into(),
            namespace: None,
            created: true,
            restore_labels: Default::default(),
            // The uid the API gave the new namespace: teardown deletes that one only.
            uid: Some("5f1e".into()),
        }],
        "a namespace that was on its way out is created again, so teardown deletes it"
    );
    let seen = requests(&api);
    let gets = seen
        .iter()
        .filter(|r| *r == "GET /api/v1/namespaces/wty-istio")
        .count();
    assert!(gets >= 4, "three Terminating reads and a 404: {seen:?}");
    assert_eq!(
        seen.last().unwrap(),
        "PATCH /api/v1/namespaces/wty-istio",
        "{seen:?}"
    );
}

#[tokio::test]
async fn teardown_waits_until_the_deleted_namespace_is_gone() {
    let api = Arc::new(Mutex::new(FakeApi {
        state: State::Active,
        ..FakeApi::default()
    }));
    let created = Applied {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        name: "wty-istio".into(),
        namespace: None,
        created: true,
        restore_labels: Default::default(),
        uid: None,
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        apply::delete_created(&client(Arc::clone(&api)), &[created]),
    )
    .await
    .expect("bounded")
    .expect("delete");
    let seen = requests(&api);
    let delete = seen
        .iter()
        .position(|r| r == "DELETE /api/v1/namespaces/wty-istio")
        .expect("deleted");
    let gets_after = seen[delete..]
        .iter()
        .filter(|r| *r == "GET /api/v1/namespaces/wty-istio")
        .count();
    assert!(gets_after >= 4, "polled until 404: {seen:?}");
    assert_eq!(api.lock().unwrap().state, State::Absent);
}

#[tokio::test]
async fn an_active_namespace_is_applied_at_once_and_not_counted_as_created() {
    let api = Arc::new(Mutex::new(FakeApi {
        state: State::Active,
        ..FakeApi::default()
    }));
    let applied = apply::apply(&client(Arc::clone(&api)), &[namespace(false)])
        .await
        .expect("apply");
    assert!(!applied[0].created, "it existed: teardown must leave it");
    assert_eq!(
        requests(&api),
        [
            "GET /api/v1",
            "GET /api/v1/namespaces/wty-istio",
            "PATCH /api/v1/namespaces/wty-istio"
        ]
    );
}
