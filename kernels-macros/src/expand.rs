//! Generating `kernel_<forward>`: only `quote!`, never an error.
//!
//! For `forward = fn forward(&self, x: &T) -> R`, the item is emitted unchanged, followed by
//!
//! ```text
//! #[automatically_derived]
//! impl Layer {
//!     <vis> fn kernel_forward(&self, x: &T) -> R {
//!         const __KERNELS_REGISTRY: &Registry = &crate::__KERNELS_REGISTRY;
//!         const _: () = panic if check_layer(__KERNELS_REGISTRY, <name>) finds no [layers.<name>];
//!         static __KERNELS_LAYER: Layer = Layer::new(<name>, <type>, module_path!(), <arg names>, __KERNELS_REGISTRY);
//!         match __KERNELS_LAYER.kernel(<device of the first tensor among inputs and fields>) {
//!             Ok(Some(kernel)) => allocate `output`, call the kernel with `args`; in verify mode
//!                                 also run `self.forward(x)` and compare; return `output`,
//!             Ok(None) => return self.forward(x),
//!             Err(strict-mode error) => …,
//!         }
//!         Err(layer_error(error))  // the kernel failed, or strict mode refused a fallback
//!     }
//! }
//! ```

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Expr, Ident};

use crate::model::{Arg, Complete, Output, pretty, strip};

/// The item followed by the generated impl.
pub(crate) fn expand(layer: &Complete, item: TokenStream2) -> TokenStream2 {
    let Complete { ident, vis, generics, name, forward, output, args } = layer;
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let forward_ident = &forward.sig.ident;
    let method = format_ident!("kernel_{}", forward_ident, span = forward_ident.span());
    let params = forward.inputs.iter().map(|i| {
        let (ident, ty) = (&i.ident, &i.ty);
        quote!(#ident: #ty)
    });
    let input_idents: Vec<&Ident> = forward.inputs.iter().map(|i| &i.ident).collect();
    let ret = &forward.sig.output;
    let ret_span = match ret {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => forward_ident.span(),
    };
    let type_name = ident.to_string();
    let arg_names = args.items.iter().map(|a| pretty(a.expr()));
    let doc = format!(
        " Runs layer `{}` through the kernel function `kernels.toml` maps it to on the device of \
         its inputs, or through `{forward_ident}` when none is available there; see \
         `kernels_runtime::dispatch`.",
        name.value()
    );

    let (locals, allocations) = output_locals(output);
    // Spanned at the `output` expression: an allocation of the wrong type is reported there.
    let output_value = match output {
        Output::One(e) => quote_spanned!(e.span()=> ::core::result::Result::Ok(#(#locals)*)),
        Output::Many(t) => quote_spanned!(t.span()=> ::core::result::Result::Ok((#(#locals),*))),
    };
    let values = args.items.iter().map(|arg| argument(arg, &locals));
    // The result is typed as the forward's, so verify mode compares values of one type and a
    // wrong `output` type is reported once, at `output`.
    let result_type = match ret {
        syn::ReturnType::Type(_, ty) => quote!(: #ty),
        syn::ReturnType::Default => quote!(),
    };
    let compared = compared(output, &locals);
    let device = device(&args.items);
    // Spanned at the return type: an error type without `From<DispatchError>` is reported there.
    let layer_error = quote_spanned!(ret_span=> ::kernels_runtime::__private::layer_error(__kernels_error));
    // Spanned at the layer name: a name `kernels.toml` does not map is reported there, at
    // compile time.
    let check = quote_spanned!(name.span()=>
        const _: () = {
            let __kernels_unknown = ::kernels_runtime::__private::check_layer(__KERNELS_REGISTRY, #name);
            if !__kernels_unknown.is_empty() {
                ::core::panic!("{}", __kernels_unknown.as_str());
            }
        };
    );

    quote! {
        #item

        #[automatically_derived]
        impl #impl_generics #ident #ty_generics #where_clause {
            #[doc = #doc]
            #[inline]
            #vis fn #method(&self, #(#params),*) #ret {
                const __KERNELS_REGISTRY: &::kernels_runtime::registry::Registry = &crate::__KERNELS_REGISTRY;
                #check
                static __KERNELS_LAYER: ::kernels_runtime::__private::Layer = ::kernels_runtime::__private::Layer::new(
                    #name,
                    #type_name,
                    ::core::module_path!(),
                    &[#(#arg_names),*],
                    __KERNELS_REGISTRY,
                );
                let __kernels_error = match __KERNELS_LAYER.kernel(#device) {
                    ::core::result::Result::Ok(::core::option::Option::Some(__kernels_kernel)) => {
                        #(let mut #locals = #allocations;)*
                        let __kernels_called = ::kernels_runtime::__private::call(__kernels_kernel, &[#(#values),*]);
                        match __kernels_called {
                            ::core::result::Result::Ok(()) => {
                                let __kernels_result #result_type = #output_value;
                                if !::kernels_runtime::__private::verify_due(__kernels_kernel) {
                                    return __kernels_result;
                                }
                                // Out of line, so that verify mode costs the call nothing when off.
                                match ::kernels_runtime::__private::verify(
                                    __kernels_kernel,
                                    &__kernels_result,
                                    move || self.#forward_ident(#(#input_idents),*),
                                    |__kernels_result, __kernels_reference, __kernels_tolerance| #compared,
                                ) {
                                    ::core::result::Result::Ok(()) => return __kernels_result,
                                    ::core::result::Result::Err(__kernels_error) => __kernels_error,
                                }
                            }
                            ::core::result::Result::Err(__kernels_error) => __kernels_error,
                        }
                    }
                    ::core::result::Result::Ok(::core::option::Option::None) => {
                        return self.#forward_ident(#(#input_idents),*);
                    }
                    ::core::result::Result::Err(__kernels_error) => __kernels_error,
                };
                ::core::result::Result::Err(#layer_error)
            }
        }
    }
}

/// The locals holding the output allocations, and their expressions.
fn output_locals(output: &Output) -> (Vec<Ident>, Vec<&Expr>) {
    // Hygienic (invisible to user code) and located at their expression, so type errors
    // about an allocation point there.
    let local = |name: String, e: &Expr| Ident::new(&name, e.span().resolved_at(Span::mixed_site()));
    match output {
        Output::One(e) => (vec![local("__kernels_output".to_owned(), e)], vec![e]),
        Output::Many(t) => {
            t.elems.iter().enumerate().map(|(i, e)| (local(format!("__kernels_output_{i}"), e), e)).unzip()
        }
    }
}

/// Verify mode's comparison of each output in `__kernels_result` with the forward's in
/// `__kernels_reference` (references to values of one type), under `__kernels_tolerance`.
fn compared(output: &Output, locals: &[Ident]) -> TokenStream2 {
    let names = |prefix: &str| -> Vec<Ident> {
        (0..locals.len()).map(|i| Ident::new(&format!("{prefix}_{i}"), Span::mixed_site())).collect()
    };
    let (kernel, reference) = (names("__kernels_kernel"), names("__kernels_reference"));
    let pattern = |names: &[Ident]| match output {
        Output::One(_) => quote!(#(#names)*),
        Output::Many(_) => quote!((#(#names),*)),
    };
    let (kernel_pattern, reference_pattern) = (pattern(&kernel), pattern(&reference));
    // Spanned like the outputs' `KernelOutput::kernel_output` calls, so a type that is not a
    // kernel output is reported once, there.
    let tolerance = Ident::new("__kernels_tolerance", Span::call_site());
    let differences = locals.iter().zip(kernel.iter().zip(&reference)).map(|(local, (k, r))| {
        quote_spanned!(local.span()=> ::kernels_runtime::__private::KernelOutput::difference(#k, #r, #tolerance))
    });
    quote! {
        match (__kernels_result, __kernels_reference) {
            (::core::result::Result::Ok(#kernel_pattern), ::core::result::Result::Ok(#reference_pattern)) => {
                ::core::result::Result::Ok([#(#differences),*])
            }
            _ => ::core::result::Result::Err(::kernels_runtime::__private::CompareError::ForwardFailed),
        }
    }
}

/// One argument converted for the call, spanned at the argument so a type without a
/// conversion is reported there.
fn argument(arg: &Arg, locals: &[Ident]) -> TokenStream2 {
    match arg {
        Arg::Output { index, .. } => {
            // Spanned at the allocation (the local is located there): its type is what a
            // missing `KernelOutput` is about.
            let local = &locals[index.as_ref().map_or(0, |(i, _)| *i as usize)];
            quote_spanned!(local.span()=> ::kernels_runtime::__private::KernelOutput::kernel_output(&mut #local))
        }
        Arg::Input { ident } => {
            quote_spanned!(ident.span()=> ::kernels_runtime::__private::KernelArg::kernel_arg(&#ident))
        }
        Arg::Field { expr } => {
            quote_spanned!(expr.span()=> ::kernels_runtime::__private::KernelArg::kernel_arg(&#expr))
        }
        Arg::Value { expr } => {
            let value = if needs_parens(expr) { quote!((#expr)) } else { quote!(#expr) };
            quote_spanned!(expr.span()=> ::kernels_runtime::__private::KernelArg::kernel_arg(&#value))
        }
    }
}

/// Whether `&expr` would bind differently than `&(expr)`.
fn needs_parens(expr: &Expr) -> bool {
    !matches!(
        strip(expr),
        Expr::Lit(_)
            | Expr::Path(_)
            | Expr::Field(_)
            | Expr::MethodCall(_)
            | Expr::Call(_)
            | Expr::Index(_)
            | Expr::Macro(_)
            | Expr::Tuple(_)
            | Expr::Array(_)
            | Expr::Block(_)
            | Expr::Paren(_)
    )
}

/// The device to dispatch on: that of the first input or field argument that is a tensor.
fn device(args: &[Arg]) -> TokenStream2 {
    let mut candidates = args.iter().filter_map(|arg| match arg {
        Arg::Input { ident } => {
            Some(quote_spanned!(ident.span()=> ::kernels_runtime::__private::KernelArg::device(&#ident)))
        }
        Arg::Field { expr } => {
            Some(quote_spanned!(expr.span()=> ::kernels_runtime::__private::KernelArg::device(&#expr)))
        }
        _ => None,
    });
    let Some(first) = candidates.next() else {
        return quote!(::core::option::Option::None);
    };
    candidates.fold(first, |acc, next| quote!(#acc.or_else(|| #next)))
}
