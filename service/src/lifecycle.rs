//! Readiness and draining: once shutdown begins, `/readyz` fails at once so the load balancer
//! stops sending traffic, while the server keeps answering until no request is in flight.

use tokio::sync::watch;

#[derive(Debug)]
pub struct Lifecycle {
    shutting_down: watch::Sender<bool>,
    in_flight: watch::Sender<usize>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            shutting_down: watch::Sender::new(false),
            in_flight: watch::Sender::new(0),
        }
    }
}

impl Lifecycle {
    pub fn is_ready(&self) -> bool {
        !*self.shutting_down.borrow()
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.send_replace(true);
    }

    /// Resolves once [`Lifecycle::begin_shutdown`] has been called.
    pub async fn shutdown_started(&self) {
        let mut started = self.shutting_down.subscribe();
        // The sender lives in `self`, so the channel cannot close while this borrows it.
        let _ = started.wait_for(|started| *started).await;
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn track_request(&self) -> InFlight<'_> {
        self.in_flight.send_modify(|count| *count += 1);
        InFlight(self)
    }

    pub fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// Resolves when no request is in flight.
    pub async fn wait_until_idle(&self) {
        let mut count = self.in_flight.subscribe();
        let _ = count.wait_for(|count| *count == 0).await;
    }
}

pub struct InFlight<'a>(&'a Lifecycle);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|count| *count -= 1);
    }
}
