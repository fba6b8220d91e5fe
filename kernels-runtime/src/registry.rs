//! What the build script (`kernels-build`) generates for a crate: its kernels with their
//! embedded variants (or, for `[build] embed = false`, the lock's hashes of the variants to
//! load from the Hub cache), and which layer each serves on which device. Everything is `const`
//! data in `&'static` slices, brought into the crate by [`include_kernels!`].
//!
//! [`include_kernels!`]: crate::include_kernels
//!
//! The structs the generated code builds are its data format: public so that the generated
//! code can name them, hidden from the docs, and not covered by semver.

use std::fmt;
use std::str::FromStr;

use crate::variant::{BackendKind, Version};

/// Every kernel and layer mapping of a crate.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Registry {
    /// Kernels by local name (sorted).
    pub kernels: &'static [KernelEntry],
    /// Layer mappings (sorted by layer, device, then declaration order).
    pub layers: &'static [LayerEntry],
    /// `libtvm_ffi.so`, embedded when some embedded variant needs it.
    pub tvm_ffi: Option<EmbeddedFile>,
    /// The CUDA runtime (`path` is its soname, `libcudart.so.<major>`), embedded when some
    /// embedded variant lists it in `DT_NEEDED`.
    pub cuda_runtime: Option<EmbeddedFile>,
}

impl Registry {
    /// A registry with no kernels: every layer uses its Rust forward.
    pub const EMPTY: Registry = Registry { kernels: &[], layers: &[], tvm_ffi: None, cuda_runtime: None };

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
#[doc(hidden)]
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

/// One file of a variant embedded in the binary by kernels-build.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedFile {
    /// Path relative to the variant directory.
    pub path: &'static str,
    /// Hex sha256 recorded at build time.
    pub sha256: &'static str,
    /// The bytes.
    pub bytes: &'static [u8],
}

/// A variant embedded in the binary: its name, its `backend.archs`, and its library.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedVariant {
    /// Variant directory name.
    pub variant: &'static str,
    /// `backend.archs` from its `metadata.json`.
    pub archs: &'static [&'static str],
    /// The shared library.
    pub library: EmbeddedFile,
}

/// One file of a variant as `kernels.lock` pins it.
#[doc(hidden)]
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
#[doc(hidden)]
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
///
/// Its text is `kernels.toml`'s: `MAJOR.MINOR..MAJOR.MINOR`, both ends inclusive and either
/// one optional (`8.0..`, `..9.0`, `..` for every capability), or a single `MAJOR.MINOR` for
/// that capability alone. [`Display`](fmt::Display) writes the two-ended form, which parses
/// back to the same range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapabilityRange {
    /// Lowest capability, inclusive.
    pub min: Option<Version>,
    /// Highest capability, inclusive.
    pub max: Option<Version>,
}

/// Text that is not a capability range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityRangeError {
    /// Not `MAJOR.MINOR..MAJOR.MINOR` (either end optional) or `MAJOR.MINOR`.
    #[error("expected \"MAJOR.MINOR..MAJOR.MINOR\", either end optional")]
    Syntax,
    /// The start is above the end.
    #[error("its start {min} is above its end {max}")]
    Empty {
        /// The start.
        min: Version,
        /// The end.
        max: Version,
    },
}

impl FromStr for CapabilityRange {
    type Err = CapabilityRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let (lo, hi) = trimmed.split_once("..").unwrap_or((trimmed, trimmed));
        if lo.is_empty() && hi.is_empty() && !trimmed.contains("..") {
            return Err(CapabilityRangeError::Syntax);
        }
        let end = |s: &str| -> Result<Option<Version>, CapabilityRangeError> {
            if s.is_empty() {
                return Ok(None);
            }
            let (major, minor) = s.split_once('.').ok_or(CapabilityRangeError::Syntax)?;
            let number = |d: &str| {
                if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CapabilityRangeError::Syntax);
                }
                d.parse::<u32>().map_err(|_| CapabilityRangeError::Syntax)
            };
            Ok(Some(Version::new(number(major)?, number(minor)?)))
        };
        let (min, max) = (end(lo)?, end(hi)?);
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            return Err(CapabilityRangeError::Empty { min, max });
        }
        Ok(CapabilityRange { min, max })
    }
}

impl fmt::Display for CapabilityRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(min) = self.min {
            write!(f, "{min}")?;
        }
        f.write_str("..")?;
        if let Some(max) = self.max {
            write!(f, "{max}")?;
        }
        Ok(())
    }
}

impl CapabilityRange {
    /// Whether the range is open at both ends (`..`): every capability.
    pub fn is_unbounded(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }

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

/// How far a kernel's output may be from its layer's Rust forward, element by element:
/// `|kernel - forward| <= atol + rtol * |forward|` (NaN matches NaN, an infinity only itself).
/// A mapping declares one with `tolerance = { atol = …, rtol = … }` in `kernels.toml`;
/// otherwise [`Tolerance::for_dtype`] gives the default of the output's dtype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f64,
    /// Relative part, a fraction of the forward's value.
    pub rtol: f64,
}

impl Tolerance {
    /// The default for a dtype: the `(rtol, atol)` pairs `torch.testing.assert_close` uses
    /// (f16 1e-3/1e-5, bf16 1.6e-2/1e-5, f32 1.3e-6/1e-5, f64 1e-7/1e-7), exact for integers.
    pub fn for_dtype(dtype: crate::ffi::DLDataType) -> Tolerance {
        use crate::ffi::DLDataType as D;
        let (rtol, atol) = match dtype {
            d if d == D::F16 => (1e-3, 1e-5),
            d if d == D::BF16 => (1.6e-2, 1e-5),
            d if d == D::F32 => (1.3e-6, 1e-5),
            d if d == D::F64 => (1e-7, 1e-7),
            _ => (0.0, 0.0),
        };
        Tolerance { atol, rtol }
    }

    /// Whether `value` is close enough to `reference`.
    pub fn accepts(&self, value: f64, reference: f64) -> bool {
        if value.is_nan() || reference.is_nan() {
            return value.is_nan() && reference.is_nan();
        }
        if value.is_infinite() || reference.is_infinite() {
            return value == reference;
        }
        (value - reference).abs() <= self.atol + self.rtol * reference.abs()
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "atol {:e}, rtol {:e}", self.atol, self.rtol)
    }
}

/// `[layers.<Layer>].<device>` of `kernels.toml`.
#[doc(hidden)]
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
    /// `deterministic = true`: the kernel promises bitwise-identical output for identical
    /// input on the same device.
    pub deterministic: bool,
    /// `tolerance = { atol, rtol }`: how far verify mode lets the kernel be from the forward
    /// (else the dtype's default).
    pub tolerance: Option<Tolerance>,
}

/// What a mapping must declare to be chosen, besides a capability range that holds the GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Needs {
    /// Training mode: only `mode = "training"` mappings (they have backward).
    pub training: bool,
    /// Deterministic mode: only `deterministic = true` mappings.
    pub deterministic: bool,
}

/// Picks the mapping for a device of capability `cc` (CUDA): among the mappings whose range
/// contains `cc` (or have none) and that declare what `needs` asks, the smallest range wins,
/// declaration order breaks ties.
pub fn pick_mapping<'a>(
    candidates: impl IntoIterator<Item = &'a LayerEntry>,
    cc: Option<Version>,
    needs: Needs,
) -> Option<&'a LayerEntry> {
    candidates
        .into_iter()
        .filter(|m| !needs.training || m.mode == ModeSupport::Training)
        .filter(|m| !needs.deterministic || m.deterministic)
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
        LayerEntry {
            layer: "L",
            device: BackendKind::Cuda,
            kernel,
            function: "f",
            capability,
            mode,
            deterministic: false,
            tolerance: None,
        }
    }

    const INFERENCE: Needs = Needs { training: false, deterministic: false };
    const TRAINING: Needs = Needs { training: true, deterministic: false };

    #[test]
    fn smallest_matching_range_wins() {
        let v = Version::new;
        let maps = [
            m("any", None, None, ModeSupport::Inference),
            m("ampere+", Some(v(8, 0)), None, ModeSupport::Inference),
            m("hopper", Some(v(9, 0)), Some(v(9, 0)), ModeSupport::Inference),
            m("ampere", Some(v(8, 0)), Some(v(8, 9)), ModeSupport::Inference),
        ];
        let pick = |cc| pick_mapping(&maps, Some(cc), INFERENCE).map(|m| m.kernel);
        assert_eq!(pick(v(9, 0)), Some("hopper"));
        assert_eq!(pick(v(8, 6)), Some("ampere"));
        assert_eq!(pick(v(10, 0)), Some("ampere+"));
        assert_eq!(pick(v(7, 5)), Some("any"));
        assert_eq!(pick_mapping(&maps[1..3], Some(v(7, 0)), INFERENCE).map(|m| m.kernel), None);
    }

    #[test]
    fn capability_ranges_round_trip_in_kernels_toml_syntax() {
        let v = |a, b| Some(Version::new(a, b));
        let r = |min, max| CapabilityRange { min, max };
        for (text, range, shown) in [
            ("8.0..9.0", r(v(8, 0), v(9, 0)), "8.0..9.0"),
            ("8.0..", r(v(8, 0), None), "8.0.."),
            ("..8.6", r(None, v(8, 6)), "..8.6"),
            ("..", r(None, None), ".."),
            (" 9.0 ", r(v(9, 0), v(9, 0)), "9.0..9.0"),
            ("10.10..12.0", r(v(10, 10), v(12, 0)), "10.10..12.0"),
        ] {
            let parsed: CapabilityRange = text.parse().unwrap();
            assert_eq!(parsed, range, "{text}");
            assert_eq!(parsed.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<CapabilityRange>(), Ok(parsed), "{shown}");
        }
        for bad in ["", "8", "8.", ".0", "a.b", "8.0..=9.0", "8.0...9.0", "8.0..9", "-1.0.."] {
            assert_eq!(bad.parse::<CapabilityRange>(), Err(CapabilityRangeError::Syntax), "{bad}");
        }
        assert_eq!(
            "9.0..8.0".parse::<CapabilityRange>(),
            Err(CapabilityRangeError::Empty { min: Version::new(9, 0), max: Version::new(8, 0) })
        );
    }

    #[test]
    fn the_capability_fallback_shows_ranges_as_kernels_toml_writes_them() {
        use crate::dispatch::{Mode, Settings, Target, decide};
        use crate::platform::{CudaDevice, CudaInfo, Platform};
        use crate::variant::{CpuArch, Os};

        let v = |a, b| Some(Version::new(a, b));
        let layers: &'static [LayerEntry] = Box::leak(Box::new([
            m("ampere", v(8, 0), v(9, 0), ModeSupport::Inference),
            m("blackwell", v(10, 0), None, ModeSupport::Inference),
        ]));
        let registry = Registry { kernels: &[], layers, tvm_ffi: None, cuda_runtime: None };
        let platform = Platform::new(Os::current(), CpuArch::current()).with_cuda(CudaInfo {
            driver_version: Version::new(13, 0),
            devices: vec![CudaDevice { ordinal: 0, name: "GPU".into(), capability: Version::new(7, 5) }],
        });
        let target = Target::Device(BackendKind::Cuda, 0);
        let decision = decide(&registry, "L", target, Mode::Inference, &Settings::default(), &platform);
        let crate::dispatch::Choice::Fallback(reason) = &decision.choice else { panic!("{:?}", decision.choice) };
        assert_eq!(
            reason.to_string(),
            "the GPU's compute capability 7.5 is outside the range of every mapping (ampere 8.0..9.0; blackwell 10.0..)"
        );
        for shown in ["8.0..9.0", "10.0.."] {
            assert!(shown.parse::<CapabilityRange>().is_ok(), "{shown} is not kernels.toml syntax");
        }
    }

    #[test]
    fn training_needs_backward() {
        let maps = [m("fwd", None, None, ModeSupport::Inference), m("bwd", None, None, ModeSupport::Training)];
        assert_eq!(pick_mapping(&maps, None, TRAINING).map(|m| m.kernel), Some("bwd"));
        assert_eq!(pick_mapping(&maps, None, INFERENCE).map(|m| m.kernel), Some("fwd"));
        assert!(pick_mapping(&maps[..1], None, TRAINING).is_none());
    }

    #[test]
    fn deterministic_mode_needs_a_deterministic_mapping() {
        let v = Version::new;
        let exact =
            |k, det| LayerEntry { deterministic: det, ..m(k, Some(v(9, 0)), Some(v(9, 0)), ModeSupport::Training) };
        let maps = [
            exact("fast", false),
            LayerEntry { deterministic: true, ..m("steady", None, None, ModeSupport::Training) },
        ];
        let needs = |training| Needs { training, deterministic: true };
        // The smaller range loses to the only deterministic mapping, in either mode.
        assert_eq!(pick_mapping(&maps, Some(v(9, 0)), INFERENCE).map(|m| m.kernel), Some("fast"));
        assert_eq!(pick_mapping(&maps, Some(v(9, 0)), needs(false)).map(|m| m.kernel), Some("steady"));
        assert_eq!(pick_mapping(&maps, Some(v(9, 0)), needs(true)).map(|m| m.kernel), Some("steady"));
        assert!(pick_mapping(&maps[..1], Some(v(9, 0)), needs(false)).is_none());
    }
}
