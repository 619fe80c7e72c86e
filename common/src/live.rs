//! live: a value that readers share and SIGHUP may replace (rack budgets, alert rules, site
//! settings). Readers take the current `Arc` and keep it as long as they need; a reload
//! swaps in a new one and never waits for them.

use std::sync::{Arc, RwLock};

/// A shared, replaceable value.
#[derive(Debug, Default)]
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    /// A live value starting at `v`.
    pub fn new(v: T) -> Self {
        Live(RwLock::new(Arc::new(v)))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the value; readers holding the old one keep it.
    pub fn set(&self, v: T) {
        let v = Arc::new(v);
        match self.0.write() {
            Ok(mut g) => *g = v,
            Err(poisoned) => *poisoned.into_inner() = v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_what_they_took() {
        let l = Live::new(vec![1]);
        let before = l.get();
        l.set(vec![2, 3]);
        assert_eq!(*before, vec![1]);
        assert_eq!(*l.get(), vec![2, 3]);
    }
}
