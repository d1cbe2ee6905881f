//! What a run is configured by: the `E2E_*` knobs ([`knobs`]), the pinned versions
//! (`versions.env`, [`versions`]), the repository's paths ([`paths`]) and the names and ports the
//! manifests, the service and the harness agree on ([`names`]).

pub mod knobs;
pub mod names;
pub mod paths;
pub mod versions;
