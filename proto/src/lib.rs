//! govbus contracts: the gRPC services and domain events under `proto/`, compiled at build time.
//!
//! Modules mirror the protobuf packages (`govbus.identity.v1` is [`govbus::identity::v1`]).
//! Every message declared with the `(govbus.bus.v1.event)` option implements
//! [`govbus_bus::Event`], so it can be published and consumed on the bus as it is:
//!
//! ```
//! use govbus_bus::Event;
//! use govbus_proto::identity::v1::CitizenDeceased;
//!
//! assert_eq!(CitizenDeceased::TYPE, "identity.citizen.deceased.v1");
//! let event = CitizenDeceased { citizen_ref: "c-1".into(), date_of_death: "2024-05-01".into() };
//! assert_eq!(event.subject().as_deref(), Some("c-1"));
//! ```

// Generated code: its doc comments and names come from the .proto files.
#![allow(missing_docs, unreachable_pub, clippy::all)]

// `pub mod govbus { pub mod <name> { pub mod v1 { … } } }` for every package under
// `govbus/`, and `pub use govbus::<name>` for each: made by build.rs.
include!(concat!(env!("OUT_DIR"), "/govbus_packages.rs"));

/// The encoded descriptors of every contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/govbus_descriptor.bin"));

mod events {
    include!(concat!(env!("OUT_DIR"), "/govbus_events.rs"));
}
