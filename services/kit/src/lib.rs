//! What every govbus service is built from, beside its database (`govbus-storage`): serving
//! gRPC with mutual TLS and the access policy, the processing log, telemetry, and starting and
//! stopping in order.
//!
//! # Layout
//!
//! - [`access`]: which caller may call which gRPC method, enforced on every call.
//! - [`audit`]: the processing log, a signed hash chain of every processing of a person's data.
//! - [`declaration`]: a service as a stack knows it before starting it ([`declaration::ServiceDeclaration`]).
//! - [`development_ca`]: a development CA: certificates for every part, and its list of revoked ones.
//! - [`duration`]: durations with their unit (`30s`, `10d`) in configuration.
//! - [`bus_env`]: a service binary's NATS connection (servers, credentials, TLS, replicas) from its environment.
//! - [`grpc`]: serving with health, reflection and TCP_NODELAY; field errors as statuses.
//! - [`in_process`]: calling a service of the same process without a network hop, through the same layers.
//! - [`call_facts`]: what the layers learn about a call (its method, the grant's purpose).
//! - [`call_counts`]: calls counted in memory, reported as events at an interval.
//! - [`outbound`]: delivering JSON to systems outside govbus over HTTPS, retried by the caller.
//! - [`periodic`]: a round of work repeated at an interval (deadline watchers).
//! - [`peer`]: a server's connections: the TLS handshake, the caller read once per connection.
//! - [`revocation`]: the CA's list of revoked certificates, enforced at handshakes and on open connections.
//! - [`runtime`]: starting and stopping a service in order.
//! - [`standalone`]: a service binary's environment, read from its declaration's variables.
//! - [`tls`]: mutual TLS between services and the caller's name from its certificate.
//! - [`telemetry`]: logs, traces (kept in memory and exported over OTLP) and Prometheus metrics.

pub mod access;
pub mod audit;
pub mod bus_env;
pub mod call_counts;
pub mod call_facts;
pub mod declaration;
pub mod development_ca;
pub mod duration;
pub mod grpc;
pub mod in_process;
pub mod outbound;
pub mod peer;
pub mod periodic;
pub mod revocation;
pub mod runtime;
mod signatures;
pub mod standalone;
pub mod telemetry;
pub mod tls;

pub use runtime::{ServiceRuntime, StartError};
