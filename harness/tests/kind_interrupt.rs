//! The cleanup that SIGINT/SIGTERM and the exit guard run, alone in its own test binary: it
//! runs every registered cleanup of the process, so no other test may share the process.

#[path = "it/kind_support/mod.rs"]
mod kind_support;

use harness::config::knobs::Keep;
use harness::env::Environment;
use harness::env::cluster::ClusterChoice;
use kind_support::{Fake, FakeBackend};

/// One test: each part acts on the whole process's cleanup registry, so they must not overlap.
#[tokio::test]
async fn interruptions() {
    an_interrupted_run_deletes_its_cluster_from_the_registered_cleanup().await;
    a_failed_delete_stays_registered_and_running_commands_are_stopped().await;
    a_delete_that_fails_after_deleting_the_nodes_is_decided_by_the_listing().await;
}

/// `kind delete cluster` failing after it deleted the nodes (a kubeconfig lock): the interrupted
/// path lists the clusters, finds it gone and forgets its marker, so no later run tries again.
async fn a_delete_that_fails_after_deleting_the_nodes_is_decided_by_the_listing() {
    let fake = Fake::new(&["kind-delete-kubeconfig-error"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let _env = kind_support::up(settings, &FakeBackend::default())
        .await
        .unwrap();
    let name = fake.created_cluster();
    assert!(fake.state_dir().marker(&name).exists());
    harness::exec::cleanup::run_pending("test interrupt");
    assert!(fake.clusters().is_empty());
    fake.assert_ends_listing_clusters();
    assert!(
        !fake.state_dir().marker(&name).exists(),
        "the cluster is gone: its marker is forgotten"
    );
}

async fn an_interrupted_run_deletes_its_cluster_from_the_registered_cleanup() {
    let fake = Fake::new(&[]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let mut env = kind_support::up(settings, &FakeBackend::default())
        .await
        .unwrap();
    let name = fake.created_cluster();
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

/// A teardown whose delete failed leaves the cluster's cleanup registered (the exit guard tries
/// again), and an interruption stops the commands still running, with their process groups.
async fn a_failed_delete_stays_registered_and_running_commands_are_stopped() {
    // kind-delete-noop: `kind delete` exits 0 but the cluster stays listed.
    let fake = Fake::new(&["kind-delete-noop"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let mut env = kind_support::up(settings, &FakeBackend::default())
        .await
        .unwrap();
    assert!(
        env.teardown(false).await.is_err(),
        "the cluster is still listed"
    );
    let deletes = || {
        fake.calls()
            .iter()
            .filter(|c| c.starts_with("kind delete"))
            .count()
    };
    assert_eq!(deletes(), 1);
    harness::exec::cleanup::run_pending("exit guard");
    assert_eq!(
        deletes(),
        2,
        "the registered cleanup tried again: {:?}",
        fake.calls()
    );

    let runner = harness::exec::cmd::Runner::new();
    let long = harness::exec::cmd::Cmd::new("sh")
        .args(["-c", "sleep 30 & wait"])
        .timeout(std::time::Duration::from_secs(60));
    let started = std::time::Instant::now();
    let running = tokio::spawn(async move { runner.run(&long).await });
    // Wait (bounded) until the command is running, then stop it and its process group.
    let mut stopped = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if harness::exec::cmd::kill_running_children() > 0 {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "the command was never seen running");
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("a stopped command ends at once")
        .unwrap();
    assert!(result.is_err(), "killed, not completed");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
