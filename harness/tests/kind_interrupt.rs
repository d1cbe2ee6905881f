//! The cleanup that SIGINT/SIGTERM and the exit guard run, alone in its own test binary: it
//! runs every registered cleanup of the process, so no other test may share the process.

#[path = "it/kind_support/mod.rs"]
mod kind_support;

use harness::config::knobs::Keep;
use harness::env::Environment;
use harness::env::cluster::{ClusterChoice, KindEnvironment};
use harness::env::timings::Timings;
use harness::exec::cmd::Runner;
use kind_support::{Fake, FakeBackend};

#[tokio::test]
async fn an_interrupted_run_deletes_its_cluster_from_the_registered_cleanup() {
    let fake = Fake::new(&[]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let mut env = KindEnvironment::up_with(
        Runner::new(),
        settings,
        &FakeBackend::default(),
        &mut Timings::default(),
    )
    .await
    .unwrap();
    let name = fake
        .calls()
        .iter()
        .find_map(|c| {
            c.strip_prefix("kind create cluster --name ")
                .map(|r| r.split_whitespace().next().unwrap().to_string())
        })
        .unwrap();
    // What SIGINT/SIGTERM and the exit guard run.
    harness::exec::cleanup::run_pending("test interrupt");
    assert!(fake.clusters().is_empty());
    let calls = fake.calls();
    let export = calls
        .iter()
        .position(|c| c.starts_with("kind export logs") && c.ends_with(&format!("--name {name}")))
        .expect("the cluster's logs are exported before it is deleted");
    let delete = calls
        .iter()
        .position(|c| c.starts_with(&format!("kind delete cluster --name {name}")))
        .expect("deleted");
    assert!(export < delete, "{calls:?}");
    assert!(fake.artifacts().join("kind-logs").exists());
    // The orderly teardown afterwards finds nothing left to do.
    env.teardown(false).await.unwrap();
    let deletes = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("kind delete"))
        .count();
    assert_eq!(deletes, 1);
}
