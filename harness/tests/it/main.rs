//! The harness's integration tests, in one binary (each module was its own binary once; one link
//! instead of eleven is most of what a fresh build of the tests costs). Tests that need a
//! process of their own stay beside this folder: `container.rs` (its own runner, to report the
//! container checks as ignored with a reason) and `kind_interrupt.rs` (it runs every cleanup the
//! process registered).

mod fake_api_server;
mod kind_support;

mod existing_cycle;
mod ingress_no_proxy;
mod install_tools;
mod kind_cli;
mod kind_disrupt;
mod kind_dry_run;
mod kind_fake_tools;
mod kind_namespace_wait;
mod kind_preflight;
mod lint;
mod local_up;
mod local_virtual_service;
mod pod_access;
