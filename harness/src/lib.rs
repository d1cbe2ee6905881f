//! Everything that prepares and probes an environment for the scenario suite; shared by
//! `tests/e2e.rs` (the suite's runner, [`suite`]) and the `harness` CLI ([`cli`]).
//!
//! The tree is the architecture (docs/architecture.md walks it):
//! - [`config`]: the knobs, the pinned versions, the repository's paths and the manifests' names.
//! - [`exec`]: running commands, the one wait primitive, the one HTTP probe, cleanup on signals.
//! - [`manifest`]: the only parsers of the project's YAML files.
//! - [`lint`]: the offline wiring rules.
//! - [`tools`]: one module per external tool (kind, istioctl, the image build) and the preflight.
//! - [`k8s`]: Kubernetes objects: apply, rollout conditions, the gateway, diagnostics.
//! - [`env`]: the lifecycle of a target (`local`, `kind`, `existing`) and its selection.
//! - [`checks`]: the scenarios, as data, and the checks they run.
//! - [`suite`]: the runner: bring up, run the checks, collect, tear down.
//! - [`report`]: what a run leaves: `report.json`, `junit.xml`, `latency.svg`, the job summary.

pub mod checks;
pub mod cli;
pub mod config;
pub mod env;
pub mod exec;
pub mod k8s;
pub mod lint;
pub mod manifest;
pub(crate) mod report;
pub mod suite;
pub mod tools;
