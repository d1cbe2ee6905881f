//! The `harness` CLI's subcommands: `up`/`down` ([`up`]), `lint` ([`lint`]), `image`
//! ([`image`]); `status`/`dump` of the cluster targets live with them in
//! [`crate::env::cluster`].

pub mod image;
pub mod lint;
pub mod up;
