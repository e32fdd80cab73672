//! The stack's callers besides its services.

/// The client identity of the console.
pub const CONSOLE: &str = "console";
/// The client identity of operators' tools (`govbus demo`).
pub const OPERATOR: &str = "operator";
