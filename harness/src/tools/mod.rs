//! One module per external tool: [`kind`], [`istioctl`], the service image built with Docker
//! ([`image`]), Envoy for the local gateway ([`envoy`]), and the [`preflight`] that finds them
//! and says how to install what is missing.

pub(crate) mod envoy;
pub mod image;
pub(crate) mod istioctl;
pub mod kind;
pub mod preflight;
