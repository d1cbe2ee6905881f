//! Everything that prepares and probes an environment for the scenario suite.
//!
//! An environment is brought up in phases, each a module with one job (see the project's
//! DESIGN.md): the library is shared by `tests/e2e.rs` and the `harness` CLI.

pub mod cmd;
pub mod container_spec;
pub mod image;
pub mod knobs;
pub mod lint;
pub mod manifest;
pub mod paths;
pub mod target;
