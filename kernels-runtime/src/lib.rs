//! kernels-runtime: the run-time half of kernels-rs.
//!
//! It names variants ([`variant`]), detects the platform ([`platform`]), selects the variant a
//! machine can run and explains why ([`select`]), reads and verifies a variant's
//! `metadata.json` ([`metadata`]), and loads and calls TVM-FFI kernels ([`ffi`], [`loader`]).

pub mod ffi;
pub mod loader;
pub mod metadata;
pub mod platform;
pub mod select;
pub mod variant;
