//! The pre-load check: whether the host can serve a stable-ABI library, read from its ELF file
//! without loading it (`DT_NEEDED`, undefined dynamic symbols, `aten::` string literals).

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use super::provided::{PYTHON_FUNCTIONS, aten_op, provides_library, provides_shim_function};
use crate::ffi::{DynamicSymbols, dynamic_symbols_from, needed_libraries_from, strings_with_prefix_from};

/// At most this many `aten::` strings are read (`torch::stable` reaches 27 ops).
const MAX_ATEN_STRINGS: usize = 4096;

/// What a stable-ABI library needs, once the check has found the host provides all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StableAbiLibrary {
    /// Its `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// The shim functions it imports (`aoti_torch_*`, `torch_*`), sorted.
    pub shim_functions: Vec<String>,
    /// The ATen ops it calls through the dispatcher (`aten::empty_like`), sorted, without
    /// overload names.
    pub aten_ops: Vec<String>,
}

/// One reason the host cannot serve a library.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unsupported {
    /// A `DT_NEEDED` entry that is neither libtorch's, the CUDA runtime, nor the system's.
    Library(String),
    /// An undefined C++ symbol in PyTorch's namespaces (`c10::`, `at::`, `torch::` other than
    /// `torch::stable::`): the library was built against libtorch's C++ API.
    CxxAbi {
        /// As in the symbol table.
        symbol: String,
        /// Its qualified name, as far as it can be read (`c10::detail::torchCheckFail`).
        name: String,
    },
    /// An undefined Python function other than those the host stubs.
    Python(String),
    /// An undefined shim function the host does not export.
    ShimFunction(String),
    /// An ATen op called through the dispatcher that the host does not implement.
    AtenOp(String),
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::Library(name) => write!(f, "needs `{name}`, which this runtime does not provide"),
            Unsupported::CxxAbi { symbol, name } => {
                write!(
                    f,
                    "needs `{name}` (`{symbol}`), which needs PyTorch's C++ ABI; this runtime provides only its stable C ABI"
                )
            }
            Unsupported::Python(name) => write!(f, "needs `{name}` from Python, which this runtime does not provide"),
            Unsupported::ShimFunction(name) => write!(f, "needs `{name}`, which this runtime does not provide"),
            Unsupported::AtenOp(name) => write!(f, "calls `{name}`, which this runtime does not implement"),
        }
    }
}

/// Why [`check_library`] refused a library.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file could not be read as an ELF shared library.
    #[error("{}: {}", path.display(), without_origin(path, source))]
    Read {
        /// The library.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The host cannot serve the library; every reason found, sorted.
    #[error("{}: cannot be served without libtorch: {}", path.display(), join(reasons))]
    Unsupported {
        /// The library.
        path: PathBuf,
        /// Each thing it needs that the host does not provide.
        reasons: Vec<Unsupported>,
    },
}

fn join(reasons: &[Unsupported]) -> String {
    reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The ELF readers start their messages with the file name; it is said once.
fn without_origin(path: &Path, err: &io::Error) -> String {
    let message = err.to_string();
    message.strip_prefix(&format!("{}: ", path.display())).map(str::to_owned).unwrap_or(message)
}

/// Whether the host can serve the stable-ABI library at `path`: every library it needs, every
/// symbol it imports and every ATen op it names must be provided. Reads the file; never loads it.
pub fn check_library(path: &Path) -> Result<StableAbiLibrary, CheckError> {
    let mut file = File::open(path).map_err(|source| CheckError::Read { path: path.to_owned(), source })?;
    check_library_from(&mut file, path)
}

/// [`check_library`] of an ELF file held by `reader` (e.g. verified bytes in a `Cursor`);
/// `origin` names it in errors.
pub fn check_library_from<R: Read + Seek>(reader: &mut R, origin: &Path) -> Result<StableAbiLibrary, CheckError> {
    let read = |source| CheckError::Read { path: origin.to_owned(), source };
    let needed = needed_libraries_from(reader, origin).map_err(read)?;
    let symbols = dynamic_symbols_from(reader, origin).map_err(read)?;
    let strings = strings_with_prefix_from(reader, origin, b"aten::", MAX_ATEN_STRINGS).map_err(read)?;
    check_imports(needed, &symbols, &strings)
        .map_err(|reasons| CheckError::Unsupported { path: origin.to_owned(), reasons })
}

/// The rules of [`check_library`], on what was read: `DT_NEEDED` entries, dynamic symbols and
/// the strings starting with `aten::`. On refusal, every reason, sorted and once.
///
/// Undefined symbols outside the shim (`aoti_torch_*`, `torch_*`), Python (`Py*`), CUDA's
/// `__cuda*` and PyTorch's C++ namespaces are left to the C and C++ runtimes. A string is an op
/// name only when it is `aten::<name>` or `aten::<name>.<overload>` (identifier characters), as
/// the dispatcher takes them; longer text such as a message is not.
pub fn check_imports(
    needed: Vec<String>,
    symbols: &DynamicSymbols,
    aten_strings: &[String],
) -> Result<StableAbiLibrary, Vec<Unsupported>> {
    let mut reasons = BTreeSet::new();
    for name in needed.iter().filter(|name| !provides_library(name)) {
        reasons.insert(Unsupported::Library(name.clone()));
    }
    let mut shim_functions = BTreeSet::new();
    for symbol in &symbols.undefined {
        let name = symbol.name.as_str();
        if name.starts_with("aoti_torch_") || name.starts_with("torch_") {
            if provides_shim_function(name) {
                shim_functions.insert(name.to_owned());
            } else {
                reasons.insert(Unsupported::ShimFunction(name.to_owned()));
            }
        } else if (name.starts_with("Py") || name.starts_with("_Py")) && !PYTHON_FUNCTIONS.contains(&name) {
            reasons.insert(Unsupported::Python(name.to_owned()));
        } else if let Some(qualified) = torch_cxx_name(name) {
            reasons.insert(Unsupported::CxxAbi { symbol: name.to_owned(), name: qualified });
        }
    }
    let mut aten_ops = BTreeSet::new();
    for op in aten_strings.iter().filter_map(|s| op_name(s)) {
        if aten_op(op).is_some() {
            aten_ops.insert(op.to_owned());
        } else {
            reasons.insert(Unsupported::AtenOp(op.to_owned()));
        }
    }
    if !reasons.is_empty() {
        return Err(reasons.into_iter().collect());
    }
    Ok(StableAbiLibrary {
        needed,
        shim_functions: shim_functions.into_iter().collect(),
        aten_ops: aten_ops.into_iter().collect(),
    })
}

/// `aten::<name>` of a dispatcher op string `aten::<name>[.<overload>]`; `None` for other text.
fn op_name(s: &str) -> Option<&str> {
    let is_ident = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let rest = s.strip_prefix("aten::")?;
    let (name, overload) = rest.split_once('.').map_or((rest, None), |(n, o)| (n, Some(o)));
    (is_ident(name) && overload.is_none_or(is_ident)).then(|| &s[..6 + name.len()])
}

/// The qualified name (as far as it reads as plain names) of an Itanium-mangled symbol in
/// PyTorch's C++ namespaces `c10`, `at` or `torch` (other than `torch::stable`); `None` for
/// any other symbol. Covers functions and data (`_ZN…`, `_ZNK…`) and vtables, type infos and
/// guard variables (`_ZTVN…`, `_ZTIN…`, `_ZTSN…`, `_ZGVN…`).
fn torch_cxx_name(symbol: &str) -> Option<String> {
    let rest = symbol.strip_prefix("_Z")?;
    let rest = ["TV", "TI", "TS", "TT", "TH", "GV"].iter().find_map(|p| rest.strip_prefix(p)).unwrap_or(rest);
    let mut rest = rest.strip_prefix('N')?.trim_start_matches(['K', 'V', 'r', 'R', 'O']);
    let mut parts = Vec::new();
    // <length><identifier>, repeated; stops at anything else (templates, substitutions, E).
    while let Some(digits) = rest.find(|c: char| !c.is_ascii_digit()).filter(|&n| n > 0) {
        let Ok(len) = rest[..digits].parse::<usize>() else { break };
        let Some(ident) = rest.get(digits..digits + len) else { break };
        parts.push(ident);
        rest = &rest[digits + len..];
    }
    let namespace_is_torch = match parts.as_slice() {
        ["c10" | "at", ..] => true,
        ["torch", second, ..] => *second != "stable",
        ["torch"] => true,
        _ => false,
    };
    namespace_is_torch.then(|| parts.join("::"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::{DynSymbol, SymbolBinding, SymbolKind};

    fn undefined(names: &[&str]) -> DynamicSymbols {
        let symbol = |name: &&str| DynSymbol {
            name: (*name).to_owned(),
            kind: SymbolKind::Other,
            binding: SymbolBinding::Global,
        };
        DynamicSymbols { defined: Vec::new(), undefined: names.iter().map(symbol).collect() }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    const NEEDED: &[&str] = &["libtorch.so", "libtorch_cpu.so", "libc10.so", "libstdc++.so.6", "libc.so.6"];

    #[test]
    fn a_library_within_the_surface_passes() {
        let symbols = undefined(&[
            "torch_library_impl",
            "aoti_torch_get_data_ptr",
            "aoti_torch_aten_fill__Scalar",
            "PyModule_Create2",
            "__cudaRegisterFatBinary",
            "_ZNSt13runtime_errorD1Ev",
            "_ZN5torch6stable6detail4fromEv",
            "memcpy",
        ]);
        let found = check_imports(
            strings(NEEDED),
            &symbols,
            &strings(&["aten::empty_like", "aten::empty.memory_format", "aten::view", "aten::view"]),
        )
        .unwrap();
        assert_eq!(found.needed, NEEDED);
        assert_eq!(
            found.shim_functions,
            ["aoti_torch_aten_fill__Scalar", "aoti_torch_get_data_ptr", "torch_library_impl"]
        );
        assert_eq!(found.aten_ops, ["aten::empty", "aten::empty_like", "aten::view"]);
    }

    #[test]
    fn every_reason_is_given_sorted_and_once() {
        let symbols = undefined(&[
            "torch_foo",
            "aoti_torch_aten_pad",
            "torch_foo",
            "_ZN3c106detail14torchCheckFailEPKcS2_jS2_",
            "_ZNK2at10TensorBase4sizeEl",
            "PyErr_SetString",
        ]);
        let reasons = check_imports(
            strings(&["libtorch.so", "libfoo.so", "libtorch_python.so"]),
            &symbols,
            &strings(&["aten::matmul", "aten::matmul.out", "aten::view"]),
        )
        .unwrap_err();
        let text: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "needs `libfoo.so`, which this runtime does not provide",
                "needs `libtorch_python.so`, which this runtime does not provide",
                "needs `c10::detail::torchCheckFail` (`_ZN3c106detail14torchCheckFailEPKcS2_jS2_`), which needs PyTorch's C++ ABI; this runtime provides only its stable C ABI",
                "needs `at::TensorBase::size` (`_ZNK2at10TensorBase4sizeEl`), which needs PyTorch's C++ ABI; this runtime provides only its stable C ABI",
                "needs `PyErr_SetString` from Python, which this runtime does not provide",
                "needs `aoti_torch_aten_pad`, which this runtime does not provide",
                "needs `torch_foo`, which this runtime does not provide",
                "calls `aten::matmul`, which this runtime does not implement",
            ]
        );
    }

    #[test]
    fn op_names() {
        assert_eq!(op_name("aten::view"), Some("aten::view"));
        assert_eq!(op_name("aten::fill_.Scalar"), Some("aten::fill_"));
        assert_eq!(op_name("aten::sum.IntList_out"), Some("aten::sum"));
        for text in
            ["aten::", "aten::.x", "aten::view.", "aten::matmul: shapes differ", "aten::a.b.c", "aten::é", "view"]
        {
            assert_eq!(op_name(text), None, "{text}");
        }
    }

    #[test]
    fn torch_cxx_names() {
        for (symbol, name) in [
            ("_ZN3c106detail14torchCheckFailEPKcS2_jS2_", "c10::detail::torchCheckFail"),
            ("_ZNK2at10TensorBase4sizeEl", "at::TensorBase::size"),
            ("_ZTVN3c1011StorageImplE", "c10::StorageImpl"),
            ("_ZN5torch8autograd4nodeEv", "torch::autograd::node"),
            ("_ZN5torch10headeronly6detailEv", "torch::headeronly::detail"),
            ("_ZN3c10", "c10"),
        ] {
            assert_eq!(torch_cxx_name(symbol).as_deref(), Some(name), "{symbol}");
        }
        for symbol in [
            "_ZN5torch6stable6detail4fromEv",
            "_ZNSt13runtime_errorD1Ev",
            "_ZN4at_x3fooEv",
            "_Z3c10v",
            "_ZN99999999999999999999999c10E",
            "_ZN5torc",
            "aoti_torch_get_dim",
            "_ZN",
            "",
        ] {
            assert_eq!(torch_cxx_name(symbol), None, "{symbol}");
        }
    }

    #[test]
    fn errors_name_the_file() {
        let path = Path::new("/nonexistent/_k_cpu_abc.abi3.so");
        let err = check_library(path).unwrap_err();
        assert!(matches!(&err, CheckError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound));
        assert!(err.to_string().starts_with("/nonexistent/_k_cpu_abc.abi3.so: "), "{err}");

        let origin = Path::new("mem.so");
        let err = check_library_from(&mut io::Cursor::new(b"MZ not ELF".to_vec()), origin).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("mem.so: not a valid ELF"), "{text}");
        assert_eq!(text.matches("mem.so").count(), 1, "{text}");
    }
}
