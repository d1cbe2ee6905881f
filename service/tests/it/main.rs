//! The service's integration tests, in one binary: the parameters, the FFT against its oracles,
//! the router in-process, and the real binary on loopback.

mod support;

mod binary;
mod params;
mod router;
mod signal_and_fft;
