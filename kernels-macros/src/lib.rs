//! `#[kernelize]`: marks a model layer as replaceable by a Hub kernel. Use it through
//! `kernels_runtime::kernelize`; the generated code calls into `kernels_runtime`.
//!
//! ```text
//! use kernels_runtime::kernelize;
//! use kernels_runtime::dispatch::{DispatchError, HostTensor};
//!
//! #[kernelize(
//!     layer = "RMSNorm",
//!     forward = fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
//!     output = HostTensor::zeros(x.shape()),
//!     args = (output, x, self.weight, self.eps),
//! )]
//! pub struct RmsNorm {
//!     weight: Vec<f32>,
//!     eps: f32,
//! }
//! ```
//!
//! (A compiled example is in the docs of `kernels_runtime::dispatch`.) The struct is emitted unchanged, plus `RmsNorm::kernel_forward` with the signature of
//! `forward`: it calls the kernel function `kernels.toml` maps the layer to on the input's
//! device (allocating `output`, passing `args` in order) or, when none is available,
//! `self.forward(x)`, the Rust reference the user writes in an inherent impl. A `layer` that
//! `kernels.toml` has no `[layers.<name>]` table for is a compile error at the name: the
//! expansion checks it against `crate::__KERNELS_REGISTRY` in a `const`
//! (`kernels_runtime::__private::check_layer`), whose panic lists the layers there. Without the
//! registry (no `kernels_runtime::include_kernels!()` at the crate root) the error is rustc's
//! "cannot find value `__KERNELS_REGISTRY` in the crate root", at the attribute.
//!
//! The macro does no I/O. It works in four steps: `parse` the attribute's options, build a
//! `model` that keeps every token's span, `validate` it (every mistake is collected as a
//! `syn::Error` on the token to blame, with its text in `messages`), and `expand`, which
//! cannot fail. On any error the item is emitted unchanged next to the errors, so no cascade
//! of "cannot find" errors follows.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;

mod expand;
mod messages;
mod model;
mod parse;
mod validate;

/// Marks a layer as replaceable by a Hub kernel; see the crate docs and
/// `kernels_runtime::dispatch`.
#[proc_macro_attribute]
pub fn kernelize(attr: TokenStream, item: TokenStream) -> TokenStream {
    kernelize2(attr.into(), item.into()).into()
}

/// The whole macro on `proc_macro2` tokens, so tests can run it outside the compiler.
pub(crate) fn kernelize2(attr: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let mut errors = messages::Errors::default();
    let options = parse::options(attr, &mut errors);
    let layer = model::Layer::build(&item, options, &mut errors);
    if let Some(layer) = &layer {
        validate::check(layer, &mut errors);
    }
    match (layer.and_then(model::Layer::complete), errors.finish()) {
        (Some(layer), None) => expand::expand(&layer, item),
        (_, errors) => {
            let errors = errors.map(|e| e.to_compile_error());
            quote::quote!(#item #errors)
        }
    }
}

#[cfg(test)]
mod tests;
