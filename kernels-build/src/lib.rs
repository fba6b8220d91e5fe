//! kernels-build: the build-time half of kernels-rs.
//!
//! A crate with a `kernels.toml` and this `build.rs` gets the kernel variants its target can
//! run, verified and embedded:
//!
//! ```ignore
//! fn main() {
//!     kernels_build::build().unwrap();
//! }
//! ```

pub mod codegen;
pub mod env;
pub mod fetch;
pub mod local;
pub mod lock;
pub mod manifest;
pub mod resolve;
pub mod target;
