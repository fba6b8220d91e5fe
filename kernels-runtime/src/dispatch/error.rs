//! [`DispatchError`]: a kernelized call failed.

use crate::env;
use crate::ffi::KernelError;

use super::adapter::ArgError;
use super::cache::Resolution;
use super::decide::Choice;

/// A kernelized call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The kernel ran and reported an error.
    #[error("layer `{layer}`: {source}")]
    Kernel {
        layer: &'static str,
        /// The kernel's error.
        #[source]
        source: Box<KernelError>,
    },
    /// An argument could not be converted for the kernel.
    #[error("layer `{layer}`: argument {index} (`{name}`) cannot be passed to the kernel: {error}")]
    Argument {
        layer: &'static str,
        /// Position in `args`.
        index: usize,
        /// The argument as written in `args`.
        name: &'static str,
        /// Why.
        #[source]
        error: ArgError,
    },
    /// Strict mode: the layer would have used its Rust forward.
    #[error(
        "{resolution} would use its Rust forward: {reason}; strict mode ({strict}=1 or \
         dispatch::set_strict(true)) makes this an error",
        reason = fallback_reason(resolution),
        strict = env::STRICT
    )]
    Strict {
        /// The decision that was refused.
        resolution: &'static Resolution,
    },
    /// Verify mode in strict mode: the kernel's output went beyond its tolerance from the Rust
    /// forward's, or could not be compared with it.
    #[error(
        "{resolution}: the kernel differs from the Rust forward: {found}; strict mode ({strict}=1 or \
         dispatch::set_strict(true)) makes this an error",
        strict = env::STRICT
    )]
    Verify {
        /// The decision whose kernel was checked.
        resolution: &'static Resolution,
        /// What the check found.
        found: String,
    },
}

fn fallback_reason(r: &Resolution) -> String {
    match &r.choice {
        Choice::Fallback(reason) => reason.to_string(),
        Choice::Kernel(_) => "no reason recorded".to_owned(),
    }
}
