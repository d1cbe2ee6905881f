//! Preflight against fake tools: what is found, what is missing and the command that fixes it.

use crate::kind_support;

use harness::config::versions::Versions;
use harness::env::select::{KindDecision, decide_kind};
use harness::exec::cmd::Runner;
use harness::tools::preflight::{self, Needs, Tool, ToolSearch, Tools};
use kind_support::Fake;

async fn report(fake: &Fake, needs: Needs) -> preflight::Report {
    preflight::check(
        &Runner::new(),
        &fake.tools(),
        &Versions::load().unwrap(),
        needs,
    )
    .await
}

#[tokio::test]
async fn everything_present_at_the_pinned_versions() {
    let fake = Fake::new(&[]);
    let report = report(&fake, Needs::Kind).await;
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    let versions: Vec<(Tool, &str)> = report
        .found
        .iter()
        .map(|f| (f.tool, f.version.as_str()))
        .collect();
    assert_eq!(
        versions,
        [
            (Tool::Docker, "20.10.24"),
            (Tool::Kind, "v0.33.0"),
            (Tool::Istioctl, "1.31.1"),
            (Tool::Kubectl, "v1.36.4"),
        ]
    );
}

#[tokio::test]
async fn missing_tools_are_listed_with_their_install_command() {
    let fake = Fake::with_tools(&["docker"], &[], &[]);
    let report = report(&fake, Needs::Kind).await;
    let missing: Vec<String> = report.missing.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        missing,
        [
            "kind: not found in .tools/bin or on PATH (fix: scripts/install-tools.sh kind)",
            "istioctl: not found in .tools/bin or on PATH (fix: scripts/install-tools.sh istioctl)",
        ]
    );
    // kubectl is optional: a warning, not a missing prerequisite.
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("kubectl not found") && w.contains("install-tools.sh kubectl")),
        "{:?}",
        report.warnings
    );
    let KindDecision::Skip { reasons } = decide_kind(true, false, &report.missing) else {
        panic!("E2E_TARGET=kind without E2E_REQUIRE skips");
    };
    assert!(reasons.contains("install-tools.sh kind") && reasons.contains("istioctl"));
}

#[tokio::test]
async fn a_docker_daemon_that_does_not_answer_is_missing() {
    let fake = Fake::new(&["docker-info"]);
    let report = report(&fake, Needs::Kind).await;
    assert_eq!(report.missing.len(), 1, "{:?}", report.missing);
    let text = report.missing[0].to_string();
    assert!(text.starts_with("docker: "), "{text}");
    assert!(
        text.contains("Cannot connect to the Docker daemon"),
        "{text}"
    );
    assert!(text.contains("start the Docker daemon"), "{text}");
}

#[tokio::test]
async fn an_istioctl_of_another_release_is_missing_with_the_versioned_install() {
    let fake = Fake::with_tools(
        &["kind", "istioctl", "docker", "kubectl"],
        &[],
        &[("FAKE_ISTIO_VERSION", "1.29.0")],
    );
    let report = report(&fake, Needs::Kind).await;
    assert_eq!(report.missing.len(), 1, "{:?}", report.missing);
    let text = report.missing[0].to_string();
    assert!(
        text.contains("reports version 1.29.0, the pinned version is 1.31.1"),
        "{text}"
    );
    assert!(
        text.contains("ISTIO_VERSION=1.31.1 scripts/install-tools.sh istioctl"),
        "{text}"
    );
}

#[test]
fn a_versioned_istioctl_wins_over_the_plain_one() {
    let fake = Fake::new(&[]);
    std::fs::copy(fake.bin.join("istioctl"), fake.bin.join("istioctl-1.30.4")).unwrap();
    let tools = Tools::resolve(&ToolSearch::with_path(fake.bin.as_os_str()), "1.30.4");
    assert_eq!(
        tools.path_of(Tool::Istioctl).unwrap(),
        fake.bin.join("istioctl-1.30.4")
    );
    let tools = Tools::resolve(&ToolSearch::with_path(fake.bin.as_os_str()), "1.31.1");
    assert_eq!(
        tools.path_of(Tool::Istioctl).unwrap(),
        fake.bin.join("istioctl")
    );
}

#[tokio::test]
async fn the_existing_target_needs_no_kind_or_docker() {
    let fake = Fake::with_tools(&["kubectl"], &[], &[]);
    let report = report(&fake, Needs::Existing).await;
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("istioctl not found"))
    );
}

/// A CPU the Docker daemon may run that is not this host's, so the image's binary is
/// cross-built whatever machine runs the test.
fn other_cpu() -> (&'static str, &'static str) {
    if std::env::consts::ARCH == "aarch64" {
        ("x86_64", "x86_64-unknown-linux-musl")
    } else {
        ("aarch64", "aarch64-unknown-linux-musl")
    }
}

#[tokio::test]
async fn a_cross_built_image_needs_its_rust_target_installed() {
    let (arch, triple) = other_cpu();
    let fake = Fake::with_tools(
        &["kind", "istioctl", "docker", "kubectl", "rustup"],
        &[],
        &[("FAKE_DOCKER_ARCH", arch)],
    );
    let report = report(&fake, Needs::Kind).await;
    assert_eq!(report.missing.len(), 1, "{:?}", report.missing);
    let text = report.missing[0].to_string();
    assert!(text.starts_with("rustup: "), "{text}");
    assert!(text.contains(&format!("built for {triple}")), "{text}");
    assert!(
        text.contains(&format!("(fix: rustup target add {triple})")),
        "{text}"
    );
    assert!(
        fake.calls()
            .contains(&"rustup target list --installed".to_string()),
        "{:?}",
        fake.calls()
    );
    let KindDecision::Skip { reasons } = decide_kind(true, false, &report.missing) else {
        panic!("E2E_TARGET=kind without the target skips");
    };
    assert!(reasons.contains("rustup target add"), "{reasons}");
}

#[tokio::test]
async fn an_installed_cross_target_is_enough() {
    let (arch, triple) = other_cpu();
    let fake = Fake::with_tools(
        &["kind", "istioctl", "docker", "kubectl", "rustup"],
        &[],
        &[("FAKE_DOCKER_ARCH", arch), ("FAKE_RUSTUP_TARGETS", triple)],
    );
    let report = report(&fake, Needs::Kind).await;
    assert!(report.missing.is_empty(), "{:?}", report.missing);
}

#[tokio::test]
async fn a_cross_build_without_rustup_says_how_to_get_the_target() {
    let (arch, triple) = other_cpu();
    let fake = Fake::with_tools(
        &["kind", "istioctl", "docker", "kubectl"],
        &[],
        &[("FAKE_DOCKER_ARCH", arch)],
    );
    let report = report(&fake, Needs::Kind).await;
    assert_eq!(report.missing.len(), 1, "{:?}", report.missing);
    let text = report.missing[0].to_string();
    assert!(text.contains("https://rustup.rs"), "{text}");
    assert!(
        text.contains(&format!("rustup target add {triple}")),
        "{text}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "only a Linux host builds the image's binary for its own triple"
)]
async fn a_linux_host_building_for_its_own_cpu_needs_no_rustup() {
    let fake = Fake::new(&[]);
    let report = report(&fake, Needs::Kind).await;
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("rustup")),
        "{:?}",
        fake.calls()
    );
}

fn node_image() -> String {
    Versions::load().unwrap().kind_node_image
}

async fn offline_report(fake: &Fake) -> preflight::Report {
    let mut report = report(fake, Needs::Kind).await;
    preflight::check_offline_kind(&Runner::new(), &fake.tools(), &node_image(), &mut report).await;
    report
}

#[tokio::test]
async fn offline_without_the_node_image_falls_back_skips_or_fails_saying_why() {
    let fake = Fake::new(&[]);
    let report = offline_report(&fake).await;
    assert_eq!(report.missing.len(), 1, "{:?}", report.missing);
    let text = report.missing[0].to_string();
    let image = node_image();
    assert!(text.contains("E2E_OFFLINE=1"), "{text}");
    assert!(
        text.contains(&format!("{image} is not present locally")),
        "{text}"
    );
    assert!(text.contains("No such image"), "{text}");
    assert!(
        text.contains("Istio images are pulled inside the node")
            || text.contains("pulled inside the node"),
        "{text}"
    );
    assert!(text.contains(&format!("docker pull {image}")), "{text}");
    assert!(
        fake.calls()
            .contains(&format!("docker image inspect {image}")),
        "{:?}",
        fake.calls()
    );
    let KindDecision::FallBackToLocal { reasons } = decide_kind(false, false, &report.missing)
    else {
        panic!("auto falls back to local");
    };
    assert!(reasons.contains("E2E_OFFLINE=1"), "{reasons}");
    assert!(matches!(
        decide_kind(true, false, &report.missing),
        KindDecision::Skip { .. }
    ));
    assert!(matches!(
        decide_kind(true, true, &report.missing),
        KindDecision::Fail { .. }
    ));
}

#[tokio::test]
async fn offline_with_the_node_image_present_runs_kind_and_warns_about_istio_images() {
    let fake = Fake::new(&[]);
    fake.set_local_images(&[&node_image()]);
    let report = offline_report(&fake).await;
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(
        report.warnings.iter().any(|w| w.contains("E2E_OFFLINE=1")
            && w.contains("Istio images are pulled inside the node")),
        "{:?}",
        report.warnings
    );
}
