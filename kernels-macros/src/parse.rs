//! Parsing `#[kernelize(name = value, …)]` into [`Options`], keeping every token's span.
//!
//! Each option's value is parsed with the parser of its kind (a signature may contain commas
//! inside `<…>`, so values cannot be split at commas first). A value that does not parse is
//! reported and skipped up to the next `, name =`, so one mistake gives one error and the
//! other options are still checked.

use proc_macro2::{TokenStream as TokenStream2, TokenTree};
use syn::ext::IdentExt as _;
use syn::parse::discouraged::Speculative as _;
use syn::parse::{ParseStream, Parser as _};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Signature, Token, token};

use crate::messages::{self, Errors};

/// An option's value: not given, given but unusable (already reported), or given.
pub(crate) enum Slot<T> {
    Absent,
    Invalid,
    Present(T),
}

impl<T> Slot<T> {
    fn is_absent(&self) -> bool {
        matches!(self, Slot::Absent)
    }
}

/// `args = (a, b, …)`.
pub(crate) struct ArgList {
    pub(crate) paren: token::Paren,
    pub(crate) items: Punctuated<Expr, Token![,]>,
}

/// The attribute's options.
pub(crate) struct Options {
    /// The option list itself did not parse: missing options are not reported on top.
    pub(crate) malformed: bool,
    pub(crate) layer: Slot<LitStr>,
    pub(crate) forward: Slot<Signature>,
    pub(crate) output: Slot<Expr>,
    pub(crate) args: Slot<ArgList>,
}

/// Parses the attribute's tokens; problems go to `errors`.
pub(crate) fn options(attr: TokenStream2, errors: &mut Errors) -> Options {
    let mut options = Options {
        malformed: false,
        layer: Slot::Absent,
        forward: Slot::Absent,
        output: Slot::Absent,
        args: Slot::Absent,
    };
    let parser = |input: ParseStream<'_>| {
        parse_list(input, &mut options, errors);
        // Whatever is left was reported; consume it so `parse2` is satisfied.
        input.step(|cursor| {
            let mut rest = *cursor;
            while let Some((_, next)) = rest.token_tree() {
                rest = next;
            }
            Ok(((), rest))
        })
    };
    if let Err(e) = parser.parse2(attr) {
        errors.push(e);
    }
    options
}

fn parse_list(input: ParseStream<'_>, options: &mut Options, errors: &mut Errors) {
    while !input.is_empty() {
        let Ok(name) = input.call(Ident::parse_any) else {
            return malformed(input, options, errors);
        };
        let Ok(eq) = input.parse::<Token![=]>() else {
            return malformed(input, options, errors);
        };
        parse_value(input, &name, &eq, options, errors);
        if input.is_empty() {
            return;
        }
        if input.parse::<Token![,]>().is_err() {
            return malformed(input, options, errors);
        }
    }
}

fn malformed(input: ParseStream<'_>, options: &mut Options, errors: &mut Errors) {
    options.malformed = true;
    let span = if input.is_empty() { input.span() } else { input.cursor().span() };
    errors.at_span(span, messages::malformed_options());
}

/// Parses one option's value into its slot.
fn parse_value(input: ParseStream<'_>, name: &Ident, eq: &Token![=], options: &mut Options, errors: &mut Errors) {
    let key = name.to_string();
    let absent = match key.as_str() {
        "layer" => options.layer.is_absent(),
        "forward" => options.forward.is_absent(),
        "output" => options.output.is_absent(),
        "args" => options.args.is_absent(),
        _ => {
            errors.at(name, messages::unknown_option(&key));
            skip_value(input);
            return;
        }
    };
    if !absent {
        errors.at(name, messages::duplicate_option(&key));
        skip_value(input);
        return;
    }
    if at_boundary(input) {
        errors.at(eq, messages::missing_value(&key));
        match key.as_str() {
            "layer" => options.layer = Slot::Invalid,
            "forward" => options.forward = Slot::Invalid,
            "output" => options.output = Slot::Invalid,
            _ => options.args = Slot::Invalid,
        }
        return;
    }
    match key.as_str() {
        "layer" => options.layer = value(input, errors, |s| s.parse::<LitStr>(), messages::layer_not_a_string),
        "forward" => {
            options.forward = value(input, errors, |s| s.parse::<Signature>(), messages::forward_not_a_signature)
        }
        "output" => options.output = expression(input, errors),
        _ => options.args = value(input, errors, parse_arg_list, messages::args_not_a_list),
    }
}

/// Parses a value with `parse`; on failure reports `message` over the whole value.
fn value<T>(
    input: ParseStream<'_>,
    errors: &mut Errors,
    parse: impl FnOnce(ParseStream<'_>) -> syn::Result<T>,
    message: impl FnOnce() -> String,
) -> Slot<T> {
    let fork = input.fork();
    match parse(&fork) {
        Ok(v) if at_boundary(&fork) => {
            input.advance_to(&fork);
            Slot::Present(v)
        }
        _ => {
            let skipped = skip_value(input);
            errors.at(skipped, message());
            Slot::Invalid
        }
    }
}

/// `output`'s expression: syn's own message says what is wrong with it.
fn expression(input: ParseStream<'_>, errors: &mut Errors) -> Slot<Expr> {
    let fork = input.fork();
    match fork.parse::<Expr>() {
        Ok(expr) if at_boundary(&fork) => {
            input.advance_to(&fork);
            Slot::Present(expr)
        }
        Ok(_) => {
            input.advance_to(&fork);
            let skipped = skip_value(input);
            errors.at(skipped, messages::trailing_tokens("output"));
            Slot::Invalid
        }
        Err(e) => {
            errors.push(e);
            skip_value(input);
            Slot::Invalid
        }
    }
}

fn parse_arg_list(input: ParseStream<'_>) -> syn::Result<ArgList> {
    let content;
    let paren = syn::parenthesized!(content in input);
    let items = Punctuated::parse_terminated(&content)?;
    Ok(ArgList { paren, items })
}

fn at_boundary(input: ParseStream<'_>) -> bool {
    input.is_empty() || input.peek(Token![,])
}

/// Skips tokens up to the next `, name =` (or the end) and returns them.
fn skip_value(input: ParseStream<'_>) -> TokenStream2 {
    let mut skipped = TokenStream2::new();
    while !input.is_empty() {
        if input.peek(Token![,]) && input.peek2(Ident::peek_any) && input.peek3(Token![=]) {
            break;
        }
        if input.peek(Token![,]) && input.peek2(syn::parse::End) {
            break;
        }
        match input.parse::<TokenTree>() {
            Ok(tt) => skipped.extend([tt]),
            Err(_) => break,
        }
    }
    skipped
}
