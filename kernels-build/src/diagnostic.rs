//! Errors that point into a TOML file (`kernels.toml`, `kernels.lock`): `file:line:column`, the
//! key (`[layers.RMSNorm].cuda[0].capability`) and what is wrong.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem in a TOML file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as it was given.
    pub path: PathBuf,
    /// Line, from 1; 0 when the problem is the whole file (it could not be read).
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
    /// The key at fault, written as in the file's own terms (`[kernels.activation].version`);
    /// `None` for TOML syntax errors.
    pub key: Option<String>,
    /// What is wrong, and what to write instead.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.path.display())?;
        } else {
            write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl Diagnostic {
    /// A problem with the whole file (line 0), e.g. it could not be read.
    pub fn whole_file(path: &Path, message: impl Into<String>) -> Self {
        Diagnostic { path: path.to_owned(), line: 0, column: 0, key: None, message: message.into() }
    }
}

/// A 1-based line and column (in characters) inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Collects diagnostics while walking one parsed file.
pub(crate) struct Reporter<'a> {
    text: &'a str,
    file: &'a Path,
    line_starts: Vec<usize>,
    found: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(text: &'a str, file: &'a Path) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Reporter { text, file, line_starts, found: Vec::new() }
    }

    /// The line and column of a byte offset.
    pub(crate) fn locate(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        Location { line, column: self.text[start..offset].chars().count() + 1 }
    }

    /// Records an error about `key` at `span`.
    pub(crate) fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let at = self.locate(span.start);
        self.found.push(Diagnostic {
            path: self.file.to_owned(),
            line: at.line,
            column: at.column,
            key: Some(key.to_owned()),
            message: message.into(),
        });
    }

    /// Records a TOML syntax error.
    pub(crate) fn syntax(&mut self, err: &toml::de::Error) {
        let span = err.span().unwrap_or(0..0);
        let at = self.locate(span.start);
        let mut message = format!("invalid TOML: {}", err.message().trim_end());
        let snippet = self.text.get(span).unwrap_or("");
        if !snippet.is_empty() && snippet.len() <= 40 && !snippet.contains('\n') {
            message.push_str(&format!(" (at `{snippet}`)"));
        }
        self.found.push(Diagnostic {
            path: self.file.to_owned(),
            line: at.line,
            column: at.column,
            key: None,
            message,
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.found.is_empty()
    }

    /// The diagnostics in file order (errors at one place keep the order they were found in).
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.found.sort_by_key(|d| (d.line, d.column));
        self.found.dedup();
        self.found
    }

    /// Reports every key of `table` not in `allowed`, at the key, as `{path}.{key}` (or as
    /// `{key}` at the top level, where `path` is empty).
    pub(crate) fn unknown_keys(&mut self, table: &DeTable<'_>, path: &str, allowed: &[&str]) {
        for (key, _) in table.iter() {
            let name = key.get_ref().as_ref();
            if allowed.contains(&name) {
                continue;
            }
            let close = closest(name, allowed);
            let message = if close.is_empty() {
                format!("unknown key (expected {})", one_of(allowed))
            } else {
                format!("unknown key; did you mean {}? (expected {})", one_of(&close), one_of(allowed))
            };
            self.error(key.span(), &child(path, name), message);
        }
    }

    /// `value` as a table, or an error naming what it is instead.
    pub(crate) fn table<'t, 'i>(
        &mut self,
        value: &'t Spanned<DeValue<'i>>,
        path: &str,
        hint: &str,
    ) -> Option<&'t DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(value.span(), path, format!("expected a table{hint}, found {}", article(other)));
                None
            }
        }
    }

    /// `value` as a string, or an error naming what it is instead.
    pub(crate) fn string<'t>(&mut self, value: &'t Spanned<DeValue<'_>>, path: &str, hint: &str) -> Option<&'t str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.error(value.span(), path, format!("expected a string{hint}, found {}", article(other)));
                None
            }
        }
    }

    /// `value` as a non-negative integer that fits in `i64` (TOML's integer range).
    pub(crate) fn unsigned(&mut self, value: &Spanned<DeValue<'_>>, path: &str, hint: &str) -> Option<u64> {
        match value.get_ref() {
            DeValue::Integer(i) => match u64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if i64::try_from(n).is_ok() => Some(n),
                _ => {
                    self.error(value.span(), path, format!("expected a non-negative integer{hint}, found {i}"));
                    None
                }
            },
            other => {
                self.error(
                    value.span(),
                    path,
                    format!("expected a non-negative integer{hint}, found {}", article(other)),
                );
                None
            }
        }
    }

    /// `value` as a finite, non-negative number (an integer or a float).
    pub(crate) fn non_negative(&mut self, value: &Spanned<DeValue<'_>>, path: &str, hint: &str) -> Option<f64> {
        let number = match value.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok().map(|n| n as f64),
            other => {
                self.error(value.span(), path, format!("expected a number{hint}, found {}", article(other)));
                return None;
            }
        };
        match number {
            Some(n) if n.is_finite() && n >= 0.0 => Some(n),
            _ => {
                let text = match value.get_ref() {
                    DeValue::Float(f) => f.as_str().to_owned(),
                    DeValue::Integer(i) => i.as_str().to_owned(),
                    _ => String::new(),
                };
                self.error(value.span(), path, format!("expected a finite, non-negative number{hint}, found {text}"));
                None
            }
        }
    }

    /// `value` as a boolean.
    pub(crate) fn boolean(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(value.span(), path, format!("expected `true` or `false`, found {}", article(other)));
                None
            }
        }
    }

    /// `value` as an array.
    pub(crate) fn array<'t, 'i>(
        &mut self,
        value: &'t Spanned<DeValue<'i>>,
        path: &str,
        hint: &str,
    ) -> Option<&'t [Spanned<DeValue<'i>>]> {
        match value.get_ref() {
            DeValue::Array(a) => Some(&a[..]),
            other => {
                self.error(value.span(), path, format!("expected an array{hint}, found {}", article(other)));
                None
            }
        }
    }
}

/// "a string", "an integer", … with the value where it is short.
pub(crate) fn article(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {}", quote(s)),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the float {f}"),
        DeValue::Boolean(b) => format!("`{b}`"),
        DeValue::Datetime(d) => format!("the datetime {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// The entry for `key` in `table`: its key (for its span) and value.
pub(crate) fn entry<'t, 'i>(
    table: &'t DeTable<'i>,
    key: &str,
) -> Option<(&'t Spanned<std::borrow::Cow<'i, str>>, &'t Spanned<DeValue<'i>>)> {
    table.iter().find(|(k, _)| k.get_ref().as_ref() == key)
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
pub(crate) fn key_segment(key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare { key.to_owned() } else { quote(key) }
}

/// A table header as a path: `[kernels.activation]`.
pub(crate) fn header(segments: &[&str]) -> String {
    let inner: Vec<String> = segments.iter().map(|s| key_segment(s)).collect();
    format!("[{}]", inner.join("."))
}

/// `{path}.{key}`, or `{key}` at the top level.
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key_segment(key) } else { format!("{path}.{}", key_segment(key)) }
}

/// A TOML basic string (double-quoted, escaped).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// "`a`, `b` or `c`".
pub(crate) fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.split_last() {
        None => "nothing".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The candidates closest to `word` (edit distance at most 2, and less than the length of
/// both), all of them when several are equally close.
pub(crate) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Vec<&'c str> {
    let near: Vec<(usize, &str)> = candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2 && *d < c.len().min(word.len()))
        .collect();
    let best = near.iter().map(|(d, _)| *d).min();
    near.into_iter().filter(|(d, _)| Some(*d) == best).map(|(_, c)| c).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters() {
        let text = "a = 1\nb = \"é\" x\r\nc";
        let r = Reporter::new(text, Path::new("f.toml"));
        assert_eq!(r.locate(0), Location { line: 1, column: 1 });
        assert_eq!(r.locate(4), Location { line: 1, column: 5 });
        assert_eq!(r.locate(6), Location { line: 2, column: 1 });
        // `x` comes after a two-byte character: column counts characters.
        let x = text.find('x').unwrap();
        assert_eq!(r.locate(x), Location { line: 2, column: 9 });
        assert_eq!(r.locate(text.len()), Location { line: 3, column: 2 });
        assert_eq!(r.locate(text.len() + 10), Location { line: 3, column: 2 });
    }

    #[test]
    fn keys_are_quoted_only_when_needed() {
        assert_eq!(header(&["layers", "RMSNorm"]), "[layers.RMSNorm]");
        assert_eq!(header(&["layers", "My Layer"]), "[layers.\"My Layer\"]");
        assert_eq!(child("", "tvm-ffi"), "tvm-ffi");
        assert_eq!(child("[build]", "a.b"), "[build].\"a.b\"");
        assert_eq!(quote("a\"b\\c\u{7f}\n"), "\"a\\\"b\\\\c\\u007F\\n\"");
    }

    #[test]
    fn suggestions_are_close_and_lists_read_well() {
        assert_eq!(closest("verison", &["repo", "version", "revision", "path"]), ["version"]);
        assert_eq!(closest("capabilty", &["kernel", "function", "capability", "mode"]), ["capability"]);
        assert_eq!(closest("gpu", &["cuda", "rocm", "metal", "xpu", "cpu"]), ["xpu", "cpu"]);
        assert!(closest("zzz", &["repo", "path"]).is_empty());
        assert!(closest("", &["a", "b"]).is_empty());
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
