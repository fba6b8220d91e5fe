//! What the build script (`kernels-build`) generates for a crate: its kernels with their
//! embedded variants (or, for `[build] embed = false`, the lock's hashes of the variants to
//! load from the Hub cache), and which layer each serves on which device. Everything is `const`
//! data in `&'static` slices, brought into the crate by [`include_kernels!`].
//!
//! [`include_kernels!`]: crate::include_kernels

use crate::loader::{EmbeddedFile, EmbeddedVariant};
use crate::variant::{BackendKind, Version};

/// Every kernel and layer mapping of a crate.
#[derive(Debug, Clone, Copy)]
pub struct Registry {
    /// Kernels by local name (sorted).
    pub kernels: &'static [KernelEntry],
    /// Layer mappings (sorted by layer, device, then declaration order).
    pub layers: &'static [LayerEntry],
    /// `libtvm_ffi.so`, embedded when some embedded variant needs it.
    pub tvm_ffi: Option<EmbeddedFile>,
}

impl Registry {
    /// A registry with no kernels: every layer uses its Rust forward.
    pub const EMPTY: Registry = Registry { kernels: &[], layers: &[], tvm_ffi: None };

    /// The kernel with this local name.
    pub fn kernel(&self, name: &str) -> Option<&'static KernelEntry> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// The mappings of `layer` for `device`, in declaration order.
    pub fn mappings<'a>(
        &'a self,
        layer: &'a str,
        device: BackendKind,
    ) -> impl Iterator<Item = &'static LayerEntry> + 'a {
        self.layers.iter().filter(move |m| m.layer == layer && m.device == device)
    }
}

/// One kernel dependency of `kernels.toml`.
#[derive(Debug, Clone, Copy)]
pub struct KernelEntry {
    /// Local name (`[kernels.<name>]`).
    pub name: &'static str,
    /// Hub repo (`org/name`), or the local path for `path` kernels.
    pub repo: &'static str,
    /// Resolved commit, or `None` for local kernels.
    pub commit: Option<&'static str>,
    /// Variants embedded in the binary.
    pub variants: &'static [EmbeddedVariant],
    /// Variants prefetched into the Hub cache instead (`[build] embed = false`), with what
    /// `kernels.lock` pins for them; only these are loaded from the cache, each checked
    /// against its pins first.
    pub cached: &'static [CachedVariant],
}

/// One file of a variant as `kernels.lock` pins it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedFile {
    /// Path relative to the variant directory.
    pub path: &'static str,
    /// Hex sha256.
    pub sha256: &'static str,
    /// Size in bytes.
    pub size: u64,
}

/// A variant the build verified in the Hub cache without embedding it: loaded from the
/// lock-pinned snapshot at run time, and only when its `metadata.json` and library still have
/// the pinned hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedVariant {
    /// Variant directory name.
    pub variant: &'static str,
    /// `backend.archs` from its `metadata.json`.
    pub archs: &'static [&'static str],
    /// The shared library (`<id>.so`).
    pub library: PinnedFile,
    /// Its `metadata.json`.
    pub metadata: PinnedFile,
}

/// Whether a mapping serves inference only, or training too (the kernel has backward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModeSupport {
    /// Forward only.
    Inference,
    /// Forward and backward: usable in training and inference.
    Training,
}

/// An inclusive range of CUDA compute capabilities; either end may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapabilityRange {
    /// Lowest capability, inclusive.
    pub min: Option<Version>,
    /// Highest capability, inclusive.
    pub max: Option<Version>,
}

impl CapabilityRange {
    /// Whether `cc` is inside the range.
    pub fn contains(&self, cc: Version) -> bool {
        self.min.is_none_or(|m| cc >= m) && self.max.is_none_or(|m| cc <= m)
    }

    /// A size for "smallest matching range wins": open ends count as the widest possible.
    pub fn width(&self) -> u64 {
        let key = |v: Version| u64::from(v.major) * 1000 + u64::from(v.minor);
        let lo = self.min.map_or(0, key);
        let hi = self.max.map_or(u64::MAX, key);
        hi.saturating_sub(lo)
    }
}

/// `[layers.<Layer>].<device>` of `kernels.toml`.
#[derive(Debug, Clone, Copy)]
pub struct LayerEntry {
    /// Layer name used in `#[kernelize]`.
    pub layer: &'static str,
    /// The device kind this mapping serves.
    pub device: BackendKind,
    /// Local kernel name.
    pub kernel: &'static str,
    /// Exported function (`__tvm_ffi_<function>`).
    pub function: &'static str,
    /// Capability range (CUDA), if limited.
    pub capability: Option<CapabilityRange>,
    /// Modes served.
    pub mode: ModeSupport,
}

/// Picks the mapping for a device of capability `cc` (CUDA) in `training` mode or not:
/// mappings whose range contains `cc` (or have none), that support the mode; the smallest
/// range wins, declaration order breaks ties.
pub fn pick_mapping<'a>(
    candidates: impl IntoIterator<Item = &'a LayerEntry>,
    cc: Option<Version>,
    training: bool,
) -> Option<&'a LayerEntry> {
    candidates
        .into_iter()
        .filter(|m| !training || m.mode == ModeSupport::Training)
        .filter(|m| match (m.capability, cc) {
            (Some(range), Some(cc)) => range.contains(cc),
            (Some(_), None) | (None, _) => true,
        })
        .enumerate()
        .min_by_key(|(i, m)| (m.capability.map_or(u64::MAX, |r| r.width()), *i))
        .map(|(_, m)| m)
}

/// Brings the registry generated by `kernels-build` into the crate, as
/// `crate::__KERNELS_REGISTRY`. Use it once, at the crate root.
#[macro_export]
macro_rules! include_kernels {
    () => {
        include!(concat!(env!("OUT_DIR"), "/kernels/registry.rs"));
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn m(kernel: &'static str, min: Option<Version>, max: Option<Version>, mode: ModeSupport) -> LayerEntry {
        let capability = if min.is_none() && max.is_none() { None } else { Some(CapabilityRange { min, max }) };
        LayerEntry { layer: "L", device: BackendKind::Cuda, kernel, function: "f", capability, mode }
    }

    #[test]
    fn smallest_matching_range_wins() {
        let v = Version::new;
        let maps = [
            m("any", None, None, ModeSupport::Inference),
            m("ampere+", Some(v(8, 0)), None, ModeSupport::Inference),
            m("hopper", Some(v(9, 0)), Some(v(9, 0)), ModeSupport::Inference),
            m("ampere", Some(v(8, 0)), Some(v(8, 9)), ModeSupport::Inference),
        ];
        let pick = |cc| pick_mapping(&maps, Some(cc), false).map(|m| m.kernel);
        assert_eq!(pick(v(9, 0)), Some("hopper"));
        assert_eq!(pick(v(8, 6)), Some("ampere"));
        assert_eq!(pick(v(10, 0)), Some("ampere+"));
        assert_eq!(pick(v(7, 5)), Some("any"));
        assert_eq!(pick_mapping(&maps[1..3], Some(v(7, 0)), false).map(|m| m.kernel), None);
    }

    #[test]
    fn training_needs_backward() {
        let maps = [m("fwd", None, None, ModeSupport::Inference), m("bwd", None, None, ModeSupport::Training)];
        assert_eq!(pick_mapping(&maps, None, true).map(|m| m.kernel), Some("bwd"));
        assert_eq!(pick_mapping(&maps, None, false).map(|m| m.kernel), Some("fwd"));
        assert!(pick_mapping(&maps[..1], None, true).is_none());
    }
}
