//! govbus measured against the floor it is built on, in the same run, on the same machine.
//!
//! Each scenario runs the govbus path and its raw baseline one after the other against one
//! private `nats-server` (JetStream on, file storage, a temp folder, a dynamic port) and returns
//! both figures and their ratio. `cargo bench -p govbus-bench` runs them all and prints the
//! table `docs/benchmarks.md` reports; the smoke test runs each one tiny, checking counts only
//! (never a time).
//!
//! # Layout
//!
//! - [`measure`]: runs, latency percentiles, the machine's processor time, comparisons.
//! - [`sample`]: the 256-byte event both paths carry.
//! - [`publish`]: the outbox relay into JetStream (live, and a backlog read from the table) vs
//!   pipelined raw JetStream publishes of the same messages.
//! - [`commit`]: commands through the database's writer alone: what a durable commit costs and
//!   what group commit recovers.
//! - [`consume`]: a govbus consumer with its idempotent inbox vs a raw pull consumer that acks.
//! - [`calls`]: `VerifyCitizen` over a large population register vs a bare tonic unary call.
//! - [`gateway`]: `VerifyCitizen` as REST through the gateway vs the same call over gRPC.
//! - [`webhooks`]: an application's events delivered to a webhook by the gateway vs a raw
//!   JetStream consumer that posts them.
//! - [`e2e`]: a gRPC command through the outbox, JetStream and a consumer into a projection:
//!   peak rate, latency at half of it, peak memory.
//! - [`memory`]: each service as its own process under the end-to-end load, its peak memory.

pub mod calls;
pub mod commit;
pub mod consume;
pub mod e2e;
pub mod gateway;
pub mod measure;
pub mod memory;
pub mod publish;
pub mod sample;
pub mod webhooks;

pub use measure::{Comparison, CpuUse, Latency, Run, Stopwatch};
