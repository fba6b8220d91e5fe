//! Checks on the model; every problem becomes an error on the token to blame.

use proc_macro2::Span;
use syn::visit::Visit;
use syn::{FnArg, Member, Pat, ReturnType};

use crate::messages::{self, Errors};
use crate::model::{Arg, Args, Forward, Layer, Output, TypeKind, is_name, pretty};

/// The most arguments a kernel call passes (`kernels_runtime::ffi::MAX_ARGS`).
pub(crate) const MAX_ARGS: usize = 16;

/// Reports every problem of `layer`.
pub(crate) fn check(layer: &Layer, errors: &mut Errors) {
    for name in &layer.missing {
        errors.at_span(Span::call_site(), messages::missing_option(name));
    }
    if let Some(name) = &layer.name
        && name.value().trim().is_empty()
    {
        errors.at(name, messages::layer_empty());
    }
    if let Some(forward) = &layer.forward {
        check_forward(forward, errors);
    }
    check_fields(layer, errors);
    if let Some(args) = &layer.args {
        check_args(args, layer.output.as_ref(), errors);
    }
}

fn check_forward(forward: &Forward, errors: &mut Errors) {
    let sig = &forward.sig;
    if let Some(t) = &sig.constness {
        errors.at(t, messages::forward_qualifier("const"));
    }
    if let Some(t) = &sig.asyncness {
        errors.at(t, messages::forward_qualifier("async"));
    }
    if let Some(t) = &sig.unsafety {
        errors.at(t, messages::forward_qualifier("unsafe"));
    }
    if let Some(abi) = &sig.abi {
        errors.at(abi, messages::forward_qualifier("extern"));
    }
    if let Some(v) = &sig.variadic {
        errors.at(v, messages::forward_qualifier("variadic"));
    }
    if !sig.generics.params.is_empty() {
        errors.at(&sig.generics, messages::forward_generics());
    } else if let Some(w) = &sig.generics.where_clause {
        errors.at(w, messages::forward_generics());
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
        Some(FnArg::Receiver(r)) => errors.at(r, messages::forward_receiver(Some(&pretty(r)))),
        _ => errors.at_span(sig.paren_token.span.join(), messages::forward_receiver(None)),
    }
    for arg in &sig.inputs {
        if let FnArg::Typed(t) = arg {
            match &*t.pat {
                Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                    if p.ident == "output" {
                        errors.at(&p.ident, messages::forward_input_named_output());
                    }
                }
                pat => errors.at(pat, messages::forward_input_pattern()),
            }
        }
    }
    if let ReturnType::Default = sig.output {
        errors.at_span(sig.paren_token.span.close(), messages::forward_returns_nothing());
    }
}

/// `self.<field>` in `output` and `args` must name a field of the layer type.
fn check_fields(layer: &Layer, errors: &mut Errors) {
    let mut uses = FieldUses::default();
    match &layer.output {
        Some(Output::One(e)) => uses.visit_expr(e),
        Some(Output::Many(t)) => uses.visit_expr_tuple(t),
        None => {}
    }
    for arg in layer.args.iter().flat_map(|a| &a.items) {
        match arg {
            Arg::Output { expr, .. } | Arg::Field { expr } | Arg::Value { expr } => uses.visit_expr(expr),
            Arg::Input { .. } => {}
        }
    }
    let ty = layer.ident.to_string();
    let known: Vec<String> = layer.fields.iter().map(member_name).collect();
    for member in uses.members {
        if layer.kind == TypeKind::Enum {
            errors.at(member, messages::fields_of_enum(&ty));
        } else if !layer.fields.contains(member) {
            errors.at(member, messages::unknown_field(&ty, &member_name(member), &known));
        }
    }
}

fn member_name(m: &Member) -> String {
    match m {
        Member::Named(i) => i.to_string(),
        Member::Unnamed(i) => i.index.to_string(),
    }
}

/// Collects the members read as `self.<member>`.
#[derive(Default)]
struct FieldUses<'a> {
    members: Vec<&'a Member>,
}

impl<'a> Visit<'a> for FieldUses<'a> {
    fn visit_expr_field(&mut self, node: &'a syn::ExprField) {
        if is_name(&node.base, "self") {
            self.members.push(&node.member);
        }
        syn::visit::visit_expr_field(self, node);
    }
}

fn check_args(args: &Args, output: Option<&Output>, errors: &mut Errors) {
    if args.items.len() > MAX_ARGS {
        errors.at(&args.tokens, messages::too_many_args(args.items.len(), MAX_ARGS));
    }
    let Some(output) = output else { return };
    let count = output.count();
    let mut passed = vec![0usize; count];
    // After a misnamed output, "never passes" would only repeat the same mistake.
    let mut misnamed = false;
    for arg in &args.items {
        let Arg::Output { expr, index } = arg else { continue };
        let slot = match (index, count) {
            (None, 1) => 0,
            (None, n) => {
                errors.at(expr, messages::output_is_a_tuple(n));
                misnamed = true;
                continue;
            }
            (Some(_), 1) => {
                errors.at(expr, messages::output_not_a_tuple());
                misnamed = true;
                continue;
            }
            (Some((i, _)), n) if *i as usize >= n => {
                errors.at(expr, messages::output_index_out_of_range(*i, n));
                misnamed = true;
                continue;
            }
            (Some((i, _)), _) => *i as usize,
        };
        passed[slot] += 1;
        if passed[slot] == 2 {
            errors.at(expr, messages::output_passed_twice(&output_name(slot, count)));
        }
    }
    for (slot, n) in passed.iter().enumerate() {
        if *n == 0 && !misnamed {
            errors.at(&args.tokens, messages::output_not_passed(&output_name(slot, count)));
        }
    }
}

fn output_name(slot: usize, count: usize) -> String {
    if count == 1 { "output".to_owned() } else { format!("output.{slot}") }
}
