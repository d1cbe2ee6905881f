//! Everything that prepares and probes an environment for the scenario suite.
//!
//! An environment is brought up in phases, each a module with one job (see the project's
//! DESIGN.md): the library is shared by `tests/e2e.rs` and the `harness` CLI.

pub mod cli_up;
pub mod cluster;
pub mod cmd;
pub mod container_spec;
pub mod deploy;
pub mod diagnose;
pub mod image;
pub mod ingress;
pub mod istio;
pub mod k8s_checks;
pub mod kind;
pub mod knobs;
pub mod lint;
pub mod local;
pub mod manifest;
pub mod paths;
pub mod preflight;
pub mod probe;
pub mod prometheus_text;
pub mod retry;
pub mod runner;
pub mod scenario;
pub mod suite;
pub mod target;
pub mod teardown;
pub mod timings;
pub mod versions;
