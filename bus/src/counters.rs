//! Metric counters found once per event type and then reused.
//!
//! Finding a counter in the metrics registry builds and hashes its labels; on a path that runs
//! for every event (publishing, consuming) that cost a tenth of the throughput, so publishers
//! and consumers keep the counters they found, by event type.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

/// Counters (or arrays of them, one per outcome) by event type.
#[derive(Debug)]
pub(crate) struct CountersByType<C> {
    found: RwLock<HashMap<String, C>>,
}

impl<C> Default for CountersByType<C> {
    fn default() -> Self {
        Self {
            found: RwLock::default(),
        }
    }
}

impl<C: Clone> CountersByType<C> {
    /// The counters of `event_type`, registered with `register` the first time.
    pub(crate) fn of(&self, event_type: &str, register: impl FnOnce() -> C) -> C {
        if let Some(found) = self
            .found
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(event_type)
        {
            return found.clone();
        }
        let counters = register();
        self.found
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(event_type.to_owned(), counters.clone());
        counters
    }
}
