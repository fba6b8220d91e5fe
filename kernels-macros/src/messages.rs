//! Every message the macro can report, and the collector that combines them.
//!
//! Each message has a trybuild case under `tests/ui/<category>/<rule>.rs`.

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;

/// Errors found so far, reported together.
#[derive(Default)]
pub(crate) struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    /// Adds an error on `tokens`.
    pub(crate) fn at(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Adds an error at `span`.
    pub(crate) fn at_span(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Adds an error (e.g. one `syn` produced while parsing).
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(all) => all.combine(error),
            None => self.combined = Some(error),
        }
    }

    /// All errors as one, if there were any.
    pub(crate) fn finish(self) -> Option<syn::Error> {
        self.combined
    }
}

/// Where the options are listed, for messages that show them.
const OPTIONS: &str = "`layer`, `forward`, `output` and `args`";

// ---- the annotated item ------------------------------------------------------------------

pub(crate) fn not_a_layer_type(found: &str) -> String {
    format!(
        "#[kernelize] marks a layer type: put it on the layer's struct (or enum, or union), not on {found}; \
         the Rust forward goes in an inherent impl and is named by `forward = fn …`"
    )
}

// ---- option syntax -----------------------------------------------------------------------

pub(crate) fn malformed_options() -> String {
    format!(
        "expected `name = value` options separated by commas: {OPTIONS}, e.g. \
         #[kernelize(layer = \"RMSNorm\", forward = fn forward(&self, x: &T) -> Result<T, E>, \
         output = …, args = (output, x))]"
    )
}

pub(crate) fn unknown_option(name: &str) -> String {
    format!("unknown option `{name}`; #[kernelize] takes {OPTIONS}")
}

pub(crate) fn duplicate_option(name: &str) -> String {
    format!("duplicate option `{name}`: give it once")
}

pub(crate) fn missing_value(name: &str) -> String {
    format!("`{name} =` needs a value")
}

pub(crate) fn trailing_tokens(name: &str) -> String {
    format!("unexpected tokens after the `{name}` value: options are separated by commas")
}

pub(crate) fn missing_option(name: &str) -> String {
    let example = match name {
        "layer" => "`layer = \"RMSNorm\"`, the layer's name in `[layers.<name>]` of kernels.toml",
        "forward" => "`forward = fn forward(&self, x: &T) -> Result<T, E>`, the signature of the Rust forward",
        "output" => "`output = <expression>`, the allocation the kernel writes into",
        _ => "`args = (output, x, self.weight)`, what the kernel function receives, in order",
    };
    format!("#[kernelize] is missing `{name}`: add {example}")
}

// ---- layer -------------------------------------------------------------------------------

pub(crate) fn layer_not_a_string() -> String {
    "`layer` takes a string literal: the layer's name in `[layers.<name>]` of kernels.toml, e.g. `layer = \"RMSNorm\"`"
        .to_owned()
}

pub(crate) fn layer_empty() -> String {
    "`layer` is empty: give the layer's name in `[layers.<name>]` of kernels.toml, e.g. `layer = \"RMSNorm\"`"
        .to_owned()
}

// ---- forward -----------------------------------------------------------------------------

pub(crate) fn forward_not_a_signature() -> String {
    "`forward` takes the signature of the Rust forward, e.g. \
     `forward = fn forward(&self, x: &T) -> Result<T, E>`"
        .to_owned()
}

pub(crate) fn forward_receiver(found: Option<&str>) -> String {
    match found {
        Some(found) => format!(
            "`forward` must take `&self`, not `{found}`: the kernel reads the layer's fields and the Rust forward \
             stays callable as the reference"
        ),
        None => "`forward` must take `&self` as its first parameter: the kernel reads the layer's fields and the \
                 Rust forward stays callable as the reference"
            .to_owned(),
    }
}

pub(crate) fn forward_qualifier(qualifier: &str) -> String {
    format!("`forward` cannot be `{qualifier}`: the layer dispatches to a plain, safe, synchronous Rust method")
}

pub(crate) fn forward_generics() -> String {
    "`forward` cannot have generic parameters or a where clause: the kernel call is checked for one concrete \
     signature (use `'_` for elided lifetimes)"
        .to_owned()
}

pub(crate) fn forward_returns_nothing() -> String {
    "`forward` must return `Result<Output, Error>` with \
     `Error: From<kernels_runtime::dispatch::DispatchError>`, so a failing kernel can report its error"
        .to_owned()
}

pub(crate) fn forward_input_pattern() -> String {
    "`forward` inputs must be plain names (`x: &T`), so they can be passed to the kernel and to the forward".to_owned()
}

pub(crate) fn forward_input_named_output() -> String {
    "an input named `output` would be hidden by the kernel's output in `args`; rename the input".to_owned()
}

// ---- fields ------------------------------------------------------------------------------

pub(crate) fn unknown_field(ty: &str, field: &str, fields: &[String]) -> String {
    if fields.is_empty() {
        format!("`{ty}` has no field `{field}`; it has no fields")
    } else {
        let list = fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ");
        format!("`{ty}` has no field `{field}`; its fields are {list}")
    }
}

pub(crate) fn fields_of_enum(ty: &str) -> String {
    format!("`{ty}` is an enum, so `self.<field>` names nothing; pass an expression such as `self.weight()`")
}

// ---- args and output ---------------------------------------------------------------------

pub(crate) fn args_not_a_list() -> String {
    "`args` takes a parenthesized list of what the kernel function receives, in order, e.g. \
     `args = (output, x, self.weight, self.eps)`"
        .to_owned()
}

pub(crate) fn too_many_args(given: usize, max: usize) -> String {
    format!("a kernel call takes at most {max} arguments; `args` has {given}")
}

pub(crate) fn output_not_passed(what: &str) -> String {
    format!("`args` never passes `{what}`: the kernel needs it to write its result")
}

pub(crate) fn output_passed_twice(what: &str) -> String {
    format!("`{what}` is passed twice: the kernel gets one mutable view of each output")
}

pub(crate) fn output_is_a_tuple(count: usize) -> String {
    let list = (0..count).map(|i| format!("`output.{i}`")).collect::<Vec<_>>().join(", ");
    format!("`output` is a tuple of {count} allocations: pass them one by one, as {list}")
}

pub(crate) fn output_index_out_of_range(index: u32, count: usize) -> String {
    format!("`output.{index}` does not exist: `output` has {count} allocations (`output.0` to `output.{}`)", count - 1)
}

pub(crate) fn output_not_a_tuple() -> String {
    "`output` is one allocation: pass it as `output` (write `output = (a, b)` for several)".to_owned()
}
