//! Kubernetes objects through kube-rs: the client and one-shot pod reads ([`client`]),
//! server-side apply and deletion ([`apply`]), waiting for rollouts ([`rollout`]), the resilience scenarios' rollout restart and pod
//! deletions ([`disrupt`]), what pods say about
//! injection, scrape annotations and images ([`pods`]), the
//! ingress gateway's port-forward ([`gateway`]), what an existing cluster's mesh is made of
//! ([`mesh`]: istiod, the injector, the gateway), and what explains a failure
//! ([`diagnose`]).

pub mod apply;
pub mod client;
pub(crate) mod diagnose;
pub mod disrupt;
pub mod gateway;
pub mod mesh;
pub(crate) mod pods;
pub mod rollout;

#[cfg(test)]
mod pods_tests;
