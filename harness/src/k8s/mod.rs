//! Kubernetes objects through kube-rs: the client and one-shot pod reads ([`client`]),
//! server-side apply and deletion ([`apply`]), waiting for rollouts ([`rollout`]), the resilience scenarios' rollout restart and pod
//! deletions ([`disrupt`]), what pods say about
//! injection, scrape annotations and images ([`pods`]), the
//! ingress gateway's discovery and port-forward ([`gateway`]), and what explains a failure
//! ([`diagnose`]).

pub mod apply;
pub mod client;
pub(crate) mod diagnose;
pub mod disrupt;
pub mod gateway;
pub(crate) mod pods;
pub mod rollout;

#[cfg(test)]
mod pods_tests;
