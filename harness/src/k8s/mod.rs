//! Kubernetes objects through kube-rs: server-side apply and deletion ([`apply`]), the
//! ingress gateway's discovery and port-forward ([`gateway`]), and what explains a failure
//! ([`diagnose`]).

pub mod apply;
pub mod diagnose;
pub mod gateway;
