//! The `harness up|down|status|dump --target kind|existing` binary with fake tools on its PATH
//! (set on the child process only).

use crate::kind_support;

use std::process::{Command, Output};

use kind_support::Fake;

fn harness(fake: &Fake, only_fake_tools: bool, args: &[&str]) -> Output {
    let system = if only_fake_tools {
        "/usr/bin:/bin".to_string()
    } else {
        std::env::var("PATH").unwrap_or_default()
    };
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .env("PATH", format!("{}:{system}", fake.bin.display()))
        .env("E2E_ARTIFACTS", fake.artifacts())
        .env_remove("E2E_CLUSTER")
        .env_remove("E2E_KEEP")
        .env_remove("ISTIO_VERSION")
        .output()
        .expect("run the harness binary")
}

#[test]
fn up_dry_run_prints_the_plan_in_order_and_changes_nothing() {
    let fake = Fake::new(&[]);
    let output = harness(&fake, false, &["up", "--target", "kind", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("`{needle}` missing from:\n{stdout}"))
    };
    let order = [
        at("build --manifest-path"),
        at("kind create cluster --name istio-fft-e2e --config"),
        at("kind load docker-image fft-service:CONTENT-TAG --name istio-fft-e2e"),
        at("istioctl install -y -f"),
        at("server-side apply (field manager istio-fft-e2e) Namespace wty-istio"),
        at("wait until Deployment wty-istio/wtyfft-deploy"),
        at("probe http://127.0.0.1:30001/metrics"),
        at("print the article's INGRESS_HOST"),
    ];
    let mut sorted = order;
    sorted.sort_unstable();
    assert_eq!(order, sorted, "out of order:\n{stdout}");
    assert!(
        lines
            .iter()
            .all(|l| !(l.starts_with("[dry-run] $") && l.contains("kind delete"))),
        "up keeps its cluster:\n{stdout}"
    );
    assert!(
        stdout.contains("[dry-run] would keep kind cluster `istio-fft-e2e`")
            && stdout.contains("kind export kubeconfig --name istio-fft-e2e"),
        "{stdout}"
    );
    assert_eq!(fake.changes(), Vec::<String>::new(), "{:?}", fake.calls());
    assert!(fake.clusters().is_empty());
}

#[test]
fn up_without_kind_and_istioctl_fails_naming_the_install_commands() {
    let fake = Fake::with_tools(&["docker"], &[], &[]);
    let output = harness(&fake, true, &["up", "--target", "kind"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("prerequisites are missing"), "{stderr}");
    assert!(
        stderr.contains("fix: scripts/install-tools.sh kind"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fix: scripts/install-tools.sh istioctl"),
        "{stderr}"
    );
    assert!(
        fake.calls().iter().all(|c| c.starts_with("docker info")),
        "{:?}",
        fake.calls()
    );
}

#[test]
fn down_deletes_only_the_harness_cluster() {
    let fake = Fake::new(&[]);
    fake.set_clusters(&["istio-fft-e2e", "someone-elses-cluster"]);
    let output = harness(&fake, false, &["down", "--target", "kind"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(fake.clusters(), ["someone-elses-cluster"]);
}

#[test]
fn an_unknown_target_is_refused_by_the_parser() {
    let fake = Fake::new(&[]);
    let output = harness(&fake, false, &["up", "--target", "knd"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("kind") && stderr.contains("existing"),
        "{stderr}"
    );
    assert!(fake.calls().is_empty());
}

#[test]
fn local_only_options_are_refused_for_a_cluster_target_before_anything_runs() {
    for extra in [["--port", "8080"], ["--manifest", "manifests/app.yaml"]] {
        let fake = Fake::new(&[]);
        let mut args = vec!["up", "--target", "kind"];
        args.extend(extra);
        let output = harness(&fake, false, &args);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--port and --manifest configure the local gateway"),
            "{stderr}"
        );
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    }
}

#[test]
fn dry_run_is_refused_for_the_local_target() {
    let fake = Fake::new(&[]);
    let output = harness(&fake, false, &["up", "--target", "local", "--dry-run"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--dry-run plans the kind and existing targets"),
        "{stderr}"
    );
}
