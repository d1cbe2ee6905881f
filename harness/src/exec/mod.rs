//! How the harness acts on the world: external commands ([`cmd`]), the one wait primitive
//! ([`wait`]), the one HTTP probe ([`probe`]), and cleanup when the orderly teardown cannot run
//! ([`cleanup`]).

pub mod cleanup;
pub mod cmd;
pub mod probe;
pub mod wait;
