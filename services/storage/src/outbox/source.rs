//! Where the relay takes the next event from: the feed when it holds the next position, the
//! table otherwise.
//!
//! Positions become visible in increasing order (one writer per process, and on PostgreSQL the
//! outbox lock held until commit), so when the feed's first event is at position `p`, every
//! position below `p` is committed or never will be: a gap before it (events dropped from a full
//! feed, or committed by another process) is read from the table, and a gap the table does not
//! fill is a position no commit took.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::database::Database;
use crate::error::DbError;
use crate::outbox::feed::{Committed, OutboxFeed};
use crate::outbox::rows_between;

pub(crate) struct Source {
    db: Database,
    feed: Arc<OutboxFeed>,
    /// Rows read from the table, to be published before anything else.
    table: VecDeque<Committed>,
    /// The next position to publish.
    next: i64,
    /// Look in the table past the feed (at start, after an outage, on the polling interval).
    look_in_table: bool,
    batch: usize,
}

impl Source {
    pub(crate) fn new(db: Database, next: i64, batch: usize) -> Self {
        let feed = Arc::clone(db.feed());
        Self {
            db,
            feed,
            table: VecDeque::new(),
            next,
            look_in_table: true,
            batch: batch.max(1),
        }
    }

    /// The next event to publish, if one is known now.
    pub(crate) async fn next(&mut self) -> Result<Option<Committed>, DbError> {
        loop {
            if let Some(row) = self.table.pop_front() {
                if row.position < self.next {
                    continue;
                }
                self.next = row.position + 1;
                return Ok(Some(row));
            }
            match self.feed.first_from(self.next) {
                Some(first) if first == self.next => {
                    if let Some(event) = self.feed.pop() {
                        self.next = event.position + 1;
                        return Ok(Some(event));
                    }
                }
                Some(first) => {
                    let rows = rows_between(&self.db, self.next, first, self.batch).await?;
                    if rows.is_empty() {
                        self.next = first;
                    } else {
                        self.table.extend(rows);
                    }
                }
                None if self.look_in_table => {
                    let rows = rows_between(&self.db, self.next, i64::MAX, self.batch).await?;
                    if rows.len() < self.batch {
                        self.look_in_table = false;
                    }
                    if rows.is_empty() {
                        return Ok(None);
                    }
                    self.table.extend(rows);
                }
                None => return Ok(None),
            }
        }
    }

    /// Gives `event` back: it is the next one again.
    pub(crate) fn put_back(&mut self, event: Committed) {
        self.next = event.position;
        self.table.push_front(event);
    }

    /// Looks in the table too at the next call (the polling interval passed).
    pub(crate) fn poll_table(&mut self) {
        self.look_in_table = true;
    }
}
