//! The stack's callers besides its services.

/// The client identity of the console.
pub const CONSOLE: &str = "console";
/// The client identity of operators' tools (`govbus demo`).
pub const OPERATOR: &str = "operator";
/// The client identity of the REST gateway: the one caller services believe when it names the
/// application it calls for.
pub const GATEWAY: &str = govbus_kit::access::GATEWAY;
