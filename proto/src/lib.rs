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

/// The `govbus` protobuf packages.
pub mod govbus {
    /// `govbus.bus.v1`: options that tie messages to the bus.
    pub mod bus {
        pub mod v1 {
            tonic::include_proto!("govbus.bus.v1");
        }
    }
    /// `govbus.evaluation.v1`: SPBE evaluation.
    pub mod evaluation {
        pub mod v1 {
            tonic::include_proto!("govbus.evaluation.v1");
        }
    }
    /// `govbus.identity.v1`: the population register.
    pub mod identity {
        pub mod v1 {
            tonic::include_proto!("govbus.identity.v1");
        }
    }
    /// `govbus.licensing.v1`: risk-based business licensing.
    pub mod licensing {
        pub mod v1 {
            tonic::include_proto!("govbus.licensing.v1");
        }
    }
    /// `govbus.welfare.v1`: social-welfare data and programmes.
    pub mod welfare {
        pub mod v1 {
            tonic::include_proto!("govbus.welfare.v1");
        }
    }
}

/// The encoded descriptors of every contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/govbus_descriptor.bin"));

mod events {
    include!(concat!(env!("OUT_DIR"), "/govbus_events.rs"));
}

pub use govbus::{bus, evaluation, identity, licensing, welfare};
