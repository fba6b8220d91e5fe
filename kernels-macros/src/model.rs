//! What the attribute describes: the layer type, its forward, its output allocation and the
//! kernel call's arguments, classified, with every user token (and so its span) kept.

use proc_macro2::TokenStream as TokenStream2;
use quote::ToTokens;
use syn::spanned::Spanned as _;
use syn::{Expr, ExprTuple, Generics, Ident, Item, LitStr, Member, Signature, Type, Visibility};

use crate::messages::{self, Errors};
use crate::parse::{Options, Slot};

/// The kinds of type `#[kernelize]` accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeKind {
    Struct,
    Enum,
    Union,
}

/// The annotated layer, as far as the attribute could be understood.
pub(crate) struct Layer {
    pub(crate) ident: Ident,
    pub(crate) vis: Visibility,
    pub(crate) generics: Generics,
    pub(crate) kind: TypeKind,
    /// Field names (or indices, for tuple structs), in declaration order.
    pub(crate) fields: Vec<Member>,
    /// Options the user forgot, and whether missing ones should be reported.
    pub(crate) missing: Vec<&'static str>,
    pub(crate) name: Option<LitStr>,
    pub(crate) forward: Option<Forward>,
    pub(crate) output: Option<Output>,
    pub(crate) args: Option<Args>,
}

/// A layer with every part present and validated.
pub(crate) struct Complete {
    pub(crate) ident: Ident,
    pub(crate) vis: Visibility,
    pub(crate) generics: Generics,
    pub(crate) name: LitStr,
    pub(crate) forward: Forward,
    pub(crate) output: Output,
    pub(crate) args: Args,
}

/// `forward = fn …`.
pub(crate) struct Forward {
    pub(crate) sig: Signature,
    /// The inputs after `&self` that are plain `name: Type` (others are reported).
    pub(crate) inputs: Vec<Input>,
}

/// One input of the forward.
pub(crate) struct Input {
    pub(crate) ident: Ident,
    pub(crate) ty: Box<Type>,
}

/// `output = …`: one allocation, or a tuple of several.
pub(crate) enum Output {
    One(Expr),
    Many(ExprTuple),
}

impl Output {
    /// How many allocations.
    pub(crate) fn count(&self) -> usize {
        match self {
            Output::One(_) => 1,
            Output::Many(t) => t.elems.len(),
        }
    }
}

/// `args = (…)`.
pub(crate) struct Args {
    /// The whole list, for messages about it.
    pub(crate) tokens: TokenStream2,
    pub(crate) items: Vec<Arg>,
}

/// One kernel argument.
pub(crate) enum Arg {
    /// `output`, or `output.<index>` for a tuple output.
    Output { expr: Expr, index: Option<(u32, syn::Index)> },
    /// An input of the forward, by name.
    Input { ident: Ident },
    /// `self.<field>`.
    Field { expr: Expr },
    /// Any other expression (a literal, a computed value).
    Value { expr: Expr },
}

impl Arg {
    /// The argument as written.
    pub(crate) fn expr(&self) -> TokenStream2 {
        match self {
            Arg::Output { expr, .. } | Arg::Field { expr } | Arg::Value { expr } => expr.to_token_stream(),
            Arg::Input { ident } => ident.to_token_stream(),
        }
    }
}

impl Layer {
    /// Builds the model of `item` annotated with `options`. `None` when the item is not a
    /// type `#[kernelize]` can mark (reported).
    pub(crate) fn build(item: &TokenStream2, options: Options, errors: &mut Errors) -> Option<Layer> {
        let item: Item = match syn::parse2(item.clone()) {
            Ok(item) => item,
            Err(e) => {
                errors.push(e);
                return None;
            }
        };
        let (ident, vis, generics, kind, fields) = match item {
            Item::Struct(s) => (s.ident, s.vis, s.generics, TypeKind::Struct, members(&s.fields)),
            Item::Enum(e) => (e.ident, e.vis, e.generics, TypeKind::Enum, Vec::new()),
            Item::Union(u) => {
                let fields = u.fields.named.iter().filter_map(|f| f.ident.clone().map(Member::Named)).collect();
                (u.ident, u.vis, u.generics, TypeKind::Union, fields)
            }
            other => {
                let (tokens, found) = describe(&other);
                errors.at(tokens, messages::not_a_layer_type(found));
                return None;
            }
        };
        let mut missing = Vec::new();
        let mut present = |slot_absent: bool, name: &'static str| {
            if slot_absent && !options.malformed {
                missing.push(name);
            }
        };
        present(matches!(options.layer, Slot::Absent), "layer");
        present(matches!(options.forward, Slot::Absent), "forward");
        present(matches!(options.output, Slot::Absent), "output");
        present(matches!(options.args, Slot::Absent), "args");

        let forward = present_value(options.forward).map(|sig| {
            let inputs = sig
                .inputs
                .iter()
                .filter_map(|arg| match arg {
                    syn::FnArg::Typed(t) => match &*t.pat {
                        syn::Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                            Some(Input { ident: p.ident.clone(), ty: t.ty.clone() })
                        }
                        _ => None,
                    },
                    syn::FnArg::Receiver(_) => None,
                })
                .collect();
            Forward { sig, inputs }
        });
        let output = present_value(options.output).map(|expr| match strip(&expr) {
            Expr::Tuple(t) if t.elems.len() >= 2 => Output::Many(t.clone()),
            _ => Output::One(expr),
        });
        let args = present_value(options.args).map(|list| {
            let inputs: &[Input] = forward.as_ref().map_or(&[], |f| &f.inputs);
            let mut tokens = TokenStream2::new();
            list.paren.surround(&mut tokens, |t| list.items.to_tokens(t));
            let items = list.items.into_iter().map(|expr| classify(expr, inputs)).collect();
            Args { tokens, items }
        });
        Some(Layer {
            ident,
            vis,
            generics,
            kind,
            fields,
            missing,
            name: present_value(options.layer),
            forward,
            output,
            args,
        })
    }

    /// The complete layer, when every option was given and understood.
    pub(crate) fn complete(self) -> Option<Complete> {
        Some(Complete {
            ident: self.ident,
            vis: self.vis,
            generics: self.generics,
            name: self.name?,
            forward: self.forward?,
            output: self.output?,
            args: self.args?,
        })
    }
}

fn present_value<T>(slot: Slot<T>) -> Option<T> {
    match slot {
        Slot::Present(v) => Some(v),
        Slot::Absent | Slot::Invalid => None,
    }
}

fn members(fields: &syn::Fields) -> Vec<Member> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| match &f.ident {
            Some(ident) => Member::Named(ident.clone()),
            None => Member::Unnamed(syn::Index { index: i as u32, span: f.span() }),
        })
        .collect()
}

/// The keyword to blame and a description of an item that is not a type.
fn describe(item: &Item) -> (TokenStream2, &'static str) {
    match item {
        Item::Fn(f) => (f.sig.fn_token.to_token_stream(), "a function"),
        Item::Impl(i) => (i.impl_token.to_token_stream(), "an impl block"),
        Item::Trait(t) => (t.trait_token.to_token_stream(), "a trait"),
        Item::Mod(m) => (m.mod_token.to_token_stream(), "a module"),
        Item::Type(t) => (t.type_token.to_token_stream(), "a type alias"),
        Item::Const(c) => (c.const_token.to_token_stream(), "a constant"),
        Item::Static(s) => (s.static_token.to_token_stream(), "a static"),
        Item::Use(u) => (u.use_token.to_token_stream(), "a use declaration"),
        other => (other.to_token_stream(), "this item"),
    }
}

/// `expr` without invisible groups and parentheses.
pub(crate) fn strip(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => strip(&g.expr),
        Expr::Paren(p) => strip(&p.expr),
        other => other,
    }
}

/// Whether `expr` is the plain path `name`.
pub(crate) fn is_name(expr: &Expr, name: &str) -> bool {
    matches!(strip(expr), Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() && p.path.is_ident(name))
}

fn classify(expr: Expr, inputs: &[Input]) -> Arg {
    if is_name(&expr, "output") {
        return Arg::Output { expr, index: None };
    }
    if let Expr::Field(f) = strip(&expr) {
        if let (true, Member::Unnamed(index)) = (is_name(&f.base, "output"), &f.member) {
            let index = Some((index.index, index.clone()));
            return Arg::Output { expr, index };
        }
        if is_name(&f.base, "self") {
            return Arg::Field { expr };
        }
    }
    if let Expr::Path(p) = strip(&expr)
        && let (None, Some(ident)) = (&p.qself, p.path.get_ident())
        && inputs.iter().any(|i| i.ident == *ident)
    {
        // The name as written in `args`, so messages point there.
        return Arg::Input { ident: ident.clone() };
    }
    Arg::Value { expr }
}

/// Tokens as a user would write them (`&mut self`, `self.weight`, `Box<Self>`), for messages
/// and for the argument names the runtime reports.
pub(crate) fn pretty(tokens: impl ToTokens) -> String {
    let mut out = String::new();
    let text = tokens.to_token_stream().to_string();
    let mut chars = text.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        if c == ' ' {
            let next = chars.peek().copied();
            let glue_before = matches!(next, Some('.' | ',' | ';' | ')' | ']' | '>' | '<' | '(' | '[' | '?'));
            let glue_after = matches!(prev, Some('&' | '.' | '(' | '[' | '<'));
            if glue_before || glue_after {
                continue;
            }
        }
        out.push(c);
        prev = Some(c);
    }
    out.replace(" :: ", "::").replace(" : ", ": ").replace(" ![", "![").replace(" !(", "!(")
}
