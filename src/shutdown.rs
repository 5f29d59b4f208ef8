//! Shutdown signalling, as in mini-redis: every long-running loop holds a [`Shutdown`] and
//! `select!`s on [`Shutdown::recv`], including while it sleeps in a backoff.

use tokio::sync::watch;

/// Fires the shutdown.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

impl Trigger {
    /// Signals every [`Shutdown`] derived from this trigger.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

/// Listens for shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A new trigger and its listener.
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger { tx }, Shutdown { rx })
    }

    /// True once shutdown was signalled (or the trigger is gone).
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Waits until shutdown is signalled (returns at once if it already was).
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}
