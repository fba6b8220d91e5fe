//! Expansion snapshots: each `tests/expand/<case>.rs` holds items marked `#[kernelize(…)]`;
//! the macro runs on them as a `proc_macro2` function and the pretty-printed result must equal
//! `tests/expand/<case>.expanded.rs`. `KERNELS_BLESS=1 cargo test -p kernels-macros` rewrites
//! the expected files.

use std::path::{Path, PathBuf};

use quote::ToTokens as _;

use crate::kernelize2;

/// Expands every `#[kernelize]` item of `source`, leaving other items as they are.
fn expand_file(source: &str) -> String {
    let file: syn::File = syn::parse_str(source).expect("the case parses as Rust");
    let mut out = proc_macro2::TokenStream::new();
    for mut item in file.items {
        let attrs = match &mut item {
            syn::Item::Struct(s) => Some(&mut s.attrs),
            syn::Item::Enum(e) => Some(&mut e.attrs),
            syn::Item::Union(u) => Some(&mut u.attrs),
            syn::Item::Fn(f) => Some(&mut f.attrs),
            _ => None,
        };
        let position = attrs.as_ref().and_then(|a| a.iter().position(|a| a.path().is_ident("kernelize")));
        match (attrs, position) {
            (Some(attrs), Some(i)) => {
                let attr = attrs.remove(i);
                let args = match attr.meta {
                    syn::Meta::List(list) => list.tokens,
                    _ => proc_macro2::TokenStream::new(),
                };
                out.extend(kernelize2(args, item.to_token_stream()));
            }
            _ => item.to_tokens(&mut out),
        }
    }
    let file: syn::File = syn::parse2(out).expect("the expansion parses as Rust");
    prettyplease::unparse(&file)
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/expand exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && !p.to_string_lossy().ends_with(".expanded.rs"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn expansions_match_the_snapshots() {
    let bless = std::env::var_os("KERNELS_BLESS").is_some_and(|v| v == "1");
    let cases = cases();
    assert!(cases.len() >= 4, "expected the expansion cases under tests/expand, found {cases:?}");
    let mut failures = Vec::new();
    for case in cases {
        let source = std::fs::read_to_string(&case).unwrap();
        let actual = expand_file(&source);
        let expected_path = case.with_extension("expanded.rs");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{} differs from its snapshot {}; if the change is intended, rerun with KERNELS_BLESS=1\n--- actual ---\n{actual}",
                case.display(),
                expected_path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_keep_the_item_and_report_every_problem_once() {
    let attr: proc_macro2::TokenStream = syn::parse_quote! {
        layer = "", forward = fn forward(&mut self, x: &T) -> Result<T, E>, colour = 1, output = vec![0f32; 4],
        args = (x, self.weigth)
    };
    let item = quote::quote!(
        struct Norm {
            weight: Vec<f32>,
        }
    );
    let text = kernelize2(attr, item).to_string();
    assert!(text.starts_with("struct Norm"), "the item comes first, unchanged: {text}");
    for expected in [
        "`layer` is empty",
        "`forward` must take `&self`, not `&mut self`",
        "unknown option `colour`",
        "`args` never passes `output`",
        "`Norm` has no field `weigth`; its fields are `weight`",
    ] {
        assert_eq!(text.matches(expected).count(), 1, "{expected:?} once in {text}");
    }
    assert!(!text.contains("kernel_forward"), "nothing is generated on error: {text}");
}

#[test]
fn pretty_prints_tokens_as_written() {
    use crate::model::pretty;
    assert_eq!(pretty(quote::quote!(&mut self)), "&mut self");
    assert_eq!(pretty(quote::quote!(self: Box<Self>)), "self: Box<Self>");
    assert_eq!(pretty(quote::quote!(self.weight)), "self.weight");
    assert_eq!(pretty(quote::quote!(output.0)), "output.0");
    assert_eq!(pretty(quote::quote!(self.eps as f64 * 2.0)), "self.eps as f64 * 2.0");
    assert_eq!(pretty(quote::quote!(a::b::c(x, y))), "a::b::c(x, y)");
}
