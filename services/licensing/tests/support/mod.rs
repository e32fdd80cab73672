//! What the licensing tests share: an office over a database handle, as a replica has.

use govbus_bus::{Bus, ServiceAdapter};
use govbus_civil::calendar::WorkingCalendar;
use govbus_identity_client::IdentityClient;
use govbus_licensing::Deadlines;
use govbus_licensing::office::Office;
use govbus_storage::Database;

/// An office over `db`, publishing on `bus`, counting deadlines in `calendar`; identity is
/// not reachable (the tests need none of its answers).
pub(crate) fn office(db: Database, bus: &Bus, calendar: &'static WorkingCalendar) -> Office {
    let publisher = ServiceAdapter::new("licensing")
        .publisher(bus)
        .expect("publisher");
    let identity = IdentityClient::new("http://127.0.0.1:9", "licensing", None).expect("client");
    Office::new(db, publisher, identity, Deadlines::default(), calendar)
}
