//! The writer hands committed events to the relay here, in commit order, so the relay need not
//! read them back from the table.
//!
//! The feed is bounded: when it is full (JetStream slower than the commits, or unreachable),
//! the writer drops what does not fit, and the relay reads those events from the table when it
//! reaches them. It is only filled while this process's relay holds the outbox's lease.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use govbus_bus::OutgoingEvent;
use tokio::sync::Notify;

/// A committed event and its outbox position.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub(crate) position: i64,
    pub(crate) event: OutgoingEvent,
}

/// The in-memory queue from the writer to the relay.
#[derive(Debug)]
pub(crate) struct OutboxFeed {
    queue: Mutex<VecDeque<Committed>>,
    capacity: usize,
    live: AtomicBool,
    arrived: Notify,
}

impl OutboxFeed {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            live: AtomicBool::new(false),
            arrived: Notify::new(),
        }
    }

    /// Appends a group's events, as many as fit.
    pub(crate) fn push(&self, events: Vec<Committed>) {
        if events.is_empty() || !self.live.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut queue) = self.queue.lock() {
            let room = self.capacity.saturating_sub(queue.len());
            queue.extend(events.into_iter().take(room));
        }
        self.arrived.notify_one();
    }

    /// Starts (true) or stops (false) taking events; stopping empties the feed.
    pub(crate) fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
        if !live && let Ok(mut queue) = self.queue.lock() {
            queue.clear();
        }
    }

    /// Drops events before `position`; returns the position of the first one left.
    pub(crate) fn first_from(&self, position: i64) -> Option<i64> {
        let mut queue = self.queue.lock().ok()?;
        while queue.front().is_some_and(|first| first.position < position) {
            queue.pop_front();
        }
        queue.front().map(|first| first.position)
    }

    /// Takes the first event.
    pub(crate) fn pop(&self) -> Option<Committed> {
        self.queue.lock().ok()?.pop_front()
    }

    /// Resolves when events arrived since the last call (or arrive now).
    pub(crate) async fn arrived(&self) {
        self.arrived.notified().await;
    }
}
