//! trybuild cases: `tests/ui/<category>/<rule>.rs` must fail to compile with exactly the
//! message in the `.stderr` next to it; `tests/ui/pass/*.rs` must compile and run. The
//! `.stderr` files are blessed with the toolchain pinned in `rust-toolchain.toml`
//! (`TRYBUILD=overwrite cargo test -p kernels-macros --test ui` rewrites them).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let mut categories: Vec<String> = std::fs::read_dir(&root)
        .expect("tests/ui exists")
        .map(|e| e.expect("readable entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    categories.sort();
    for category in categories {
        if category == "pass" {
            cases.pass("tests/ui/pass/*.rs");
        } else {
            cases.compile_fail(format!("tests/ui/{category}/*.rs"));
        }
    }
}
