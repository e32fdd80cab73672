//! Why an event was not published.

use crate::error::{Error, error_kind};

error_kind! {
    /// Why an event was not published.
    PublishErrorKind {
        /// The event's type is malformed or belongs to another service.
        InvalidEvent => "event cannot be published by this service",
        /// The event is larger than the server accepts.
        TooLarge => "event exceeds the server's maximum payload",
        /// JetStream refused the event for a reason retrying cannot fix.
        Rejected => "JetStream rejected the event",
        /// No acknowledgement arrived before the retry policy gave up.
        GaveUp => "no acknowledgement before the retry deadline",
    }
}

/// An event that was not published.
pub type PublishError = Error<PublishErrorKind>;
