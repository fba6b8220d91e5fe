//! Where the Hub cache is, and where a kernel repository's snapshot lives in it, as the Python
//! `kernels` package and `huggingface_hub` lay it out. One environment serves both languages.

use std::path::{Path, PathBuf};

use crate::env;

/// `HF_HOME` as the Hub tools default it (`$XDG_CACHE_HOME/huggingface`,
/// `~/.cache/huggingface`), reading variables through `var` (empty values count as unset).
pub fn hf_home_from(var: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    var(env::HF_HOME).or_else(|| {
        var(env::XDG_CACHE_HOME).or_else(|| var(env::HOME).map(|h| h.join(".cache"))).map(|c| c.join("huggingface"))
    })
}

/// The cache kernels are fetched into: `KERNELS_CACHE` (as upstream), else `HF_HUB_CACHE`, else
/// `<HF_HOME>/hub`, reading variables through `var`.
pub fn dir_from(var: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    var(env::KERNELS_CACHE).or_else(|| var(env::HF_HUB_CACHE)).or_else(|| hf_home_from(&var).map(|h| h.join("hub")))
}

/// [`dir_from`] the process environment.
pub fn dir() -> Option<PathBuf> {
    dir_from(env::path)
}

/// The cache folder of kernel repository `repo` (`org/name`): `kernels--org--name`.
pub fn repo_folder(repo: &str) -> String {
    format!("kernels--{}", repo.replace('/', "--"))
}

/// The snapshot of `repo` at `commit` under the cache `cache`.
pub fn snapshot(cache: &Path, repo: &str, commit: &str) -> PathBuf {
    cache.join(repo_folder(repo)).join("snapshots").join(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<PathBuf> + 'a {
        move |k| set.iter().find(|(n, _)| *n == k).map(|(_, v)| PathBuf::from(v))
    }

    #[test]
    fn kernels_cache_comes_first_then_the_hub_cache() {
        let all = [("KERNELS_CACHE", "/k"), ("HF_HUB_CACHE", "/h"), ("HF_HOME", "/home"), ("HOME", "/u")];
        assert_eq!(dir_from(vars(&all)), Some(PathBuf::from("/k")));
        assert_eq!(dir_from(vars(&all[1..])), Some(PathBuf::from("/h")));
        assert_eq!(dir_from(vars(&all[2..])), Some(PathBuf::from("/home/hub")));
        assert_eq!(dir_from(vars(&all[3..])), Some(PathBuf::from("/u/.cache/huggingface/hub")));
        assert_eq!(dir_from(vars(&[("XDG_CACHE_HOME", "/x")])), Some(PathBuf::from("/x/huggingface/hub")));
        assert_eq!(dir_from(vars(&[])), None);
    }

    #[test]
    fn snapshot_layout() {
        assert_eq!(snapshot(Path::new("/c"), "org/k", "abc"), PathBuf::from("/c/kernels--org--k/snapshots/abc"));
    }
}
