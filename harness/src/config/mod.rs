//! What a run is configured by: the `E2E_*` knobs ([`knobs`]), the pinned versions
//! (`versions.env`, [`versions`]), the repository's paths ([`paths`]).

pub mod knobs;
pub mod paths;
pub mod versions;
