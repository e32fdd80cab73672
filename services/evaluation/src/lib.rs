//! The SPBE evaluation service.
//!
//! # Layout
//!
//! - [`score`]: exact two-decimal arithmetic.
//! - [`instrument`]: instruments as data and the index they define.

pub mod instrument;
pub mod score;
