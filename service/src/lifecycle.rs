//! Readiness and draining. Shutdown has two steps:
//!
//! 1. **Lame duck** (from the signal, for `--drain-delay`): `/readyz` fails at once so Kubernetes
//!    takes the replica out of the endpoints, but the server keeps accepting and answering, because
//!    the proxies in front of it learn of the removal only a little later. Every answer asks its
//!    client to close the connection, so none is left to be reused.
//! 2. **Draining** (within `--shutdown-grace`): no new connection is accepted; requests in flight
//!    finish, idle connections close, and the process exits.

use tokio::sync::watch;

/// Where a replica is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    LameDuck,
    Draining,
}

#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    in_flight: watch::Sender<usize>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            phase: watch::Sender::new(Phase::Serving),
            in_flight: watch::Sender::new(0),
        }
    }
}

impl Lifecycle {
    pub fn is_ready(&self) -> bool {
        *self.phase.borrow() == Phase::Serving
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Readiness fails from now on; the server still accepts.
    pub fn begin_shutdown(&self) {
        self.advance(Phase::LameDuck);
    }

    /// The server stops accepting from now on.
    pub fn begin_draining(&self) {
        self.advance(Phase::Draining);
    }

    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|phase| {
            let later = to > *phase;
            if later {
                *phase = to;
            }
            later
        });
    }

    /// Resolves once the lifecycle has reached `phase` (at once if it is past it).
    pub async fn reached(&self, phase: Phase) {
        let mut current = self.phase.subscribe();
        // The sender lives in `self`, so the channel cannot close while this borrows it.
        let _ = current.wait_for(|current| *current >= phase).await;
    }

    /// Resolves once [`Lifecycle::begin_shutdown`] has been called.
    pub async fn shutdown_started(&self) {
        self.reached(Phase::LameDuck).await;
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn track_request(&self) -> InFlight<'_> {
        self.in_flight.send_modify(|count| *count += 1);
        InFlight(self)
    }

    pub fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }
}

pub struct InFlight<'a>(&'a Lifecycle);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|count| *count -= 1);
    }
}
