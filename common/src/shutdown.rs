//! shutdown: how a binary stops, in named phases. Each task is spawned into a phase; at
//! stop the phases run in order — the phase's token is cancelled, and its tasks get what
//! is left of one grace period to finish — so inputs stop before the queues drain, the
//! queues drain before the outputs flush, and the API answers until the end. A task still
//! running when the grace period is over is abandoned, and named in an error.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Phase {
    name: &'static str,
    token: CancellationToken,
    tracker: TaskTracker,
}

/// The phases of one binary, and the tasks in them.
pub struct Shutdown {
    phases: Vec<Phase>,
    running: Arc<Mutex<BTreeMap<u64, (&'static str, &'static str)>>>,
    next: AtomicU64,
    grace: Duration,
}

/// Removes a task from the running list when it ends, however it ends.
struct Done(Arc<Mutex<BTreeMap<u64, (&'static str, &'static str)>>>, u64);

impl Drop for Done {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&self.1);
        }
    }
}

impl Shutdown {
    /// Phases in the order they stop, with one grace period for all of them.
    pub fn new(phases: &[&'static str], grace: Duration) -> Self {
        Shutdown {
            phases: phases
                .iter()
                .map(|name| Phase {
                    name,
                    token: CancellationToken::new(),
                    tracker: TaskTracker::new(),
                })
                .collect(),
            running: Arc::default(),
            next: AtomicU64::new(0),
            grace,
        }
    }

    fn phase(&self, name: &str) -> &Phase {
        match self.phases.iter().find(|p| p.name == name) {
            Some(p) => p,
            // A phase name is a constant of the binary: a wrong one is a bug, caught by
            // its tests; the last phase is the safe place for a task to land.
            None => self
                .phases
                .last()
                .unwrap_or_else(|| unreachable!("no phases")),
        }
    }

    /// The token cancelled when `phase` begins to stop.
    pub fn token(&self, phase: &str) -> CancellationToken {
        self.phase(phase).token.clone()
    }

    /// Spawns `task` (named `what` in logs) into `phase`.
    pub fn spawn<F>(&self, phase: &str, what: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let p = self.phase(phase);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.running.lock() {
            m.insert(id, (p.name, what));
        }
        let done = Done(self.running.clone(), id);
        p.tracker.spawn(async move {
            let _done = done;
            task.await;
        });
    }

    /// Stops every phase in order; returns the tasks abandoned (phase, task) when the
    /// grace period ran out, after logging them.
    pub async fn stop(self) -> Vec<(&'static str, &'static str)> {
        let deadline = tokio::time::Instant::now() + self.grace;
        for p in &self.phases {
            tracing::debug!(phase = p.name, "shutting down");
            p.token.cancel();
            p.tracker.close();
            if tokio::time::timeout_at(deadline, p.tracker.wait())
                .await
                .is_err()
            {
                break;
            }
        }
        let left: Vec<_> = self
            .running
            .lock()
            .map(|m| m.values().copied().collect())
            .unwrap_or_default();
        for (phase, what) in &left {
            tracing::error!(
                phase,
                task = what,
                grace_secs = self.grace.as_secs(),
                "shutdown grace period over: abandoned"
            );
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_stop_in_order_and_a_stuck_task_is_named() {
        let s = Shutdown::new(&["inputs", "outputs"], Duration::from_millis(300));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (o1, t1) = (order.clone(), s.token("inputs"));
        s.spawn("inputs", "reader", async move {
            t1.cancelled().await;
            o1.lock().unwrap().push("inputs");
        });
        let (o2, t2) = (order.clone(), s.token("outputs"));
        let early = s.token("inputs");
        s.spawn("outputs", "writer", async move {
            t2.cancelled().await;
            // The inputs were already told to stop when the outputs are.
            assert!(early.is_cancelled());
            o2.lock().unwrap().push("outputs");
        });
        s.spawn("outputs", "stuck", std::future::pending());
        let abandoned = s.stop().await;
        assert_eq!(*order.lock().unwrap(), ["inputs", "outputs"]);
        assert_eq!(abandoned, [("outputs", "stuck")]);
    }
}
