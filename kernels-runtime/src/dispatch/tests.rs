use super::cache::{SLOT_ORDINALS, SLOTS, slot_index};
use super::*;
use crate::ffi::{DLDevice, DLDeviceType, TensorError, Value};
use crate::loader::LoadError;
use crate::platform::Platform;
use crate::platform::{CudaDevice, CudaInfo};
use crate::registry::{CapabilityRange, LayerEntry, ModeSupport, Registry};
use crate::registry::{EmbeddedFile, EmbeddedVariant, KernelEntry};
use crate::variant::{BackendKind, Version};
use crate::variant::{CpuArch, Os};

/// A CPU variant name for an architecture this machine is not.
const FOREIGN_CPU: &str =
    if cfg!(target_arch = "x86_64") { "tvm-ffi01-cpu-aarch64-linux" } else { "tvm-ffi01-cpu-x86_64-linux" };

fn this_cpu_variant() -> String {
    format!("tvm-ffi01-cpu-{}-{}", CpuArch::current(), Os::current())
}

fn registry(variants: &'static [EmbeddedVariant]) -> Registry {
    let kernels: &'static [KernelEntry] = Box::leak(Box::new([
        KernelEntry { name: "act", repo: "kernels-test/act", commit: None, variants, cached: &[] },
        KernelEntry { name: "norm", repo: "kernels-test/norm", commit: None, variants: &[], cached: &[] },
    ]));
    let range = |min, max| Some(CapabilityRange { min, max });
    let v = |a, b| Some(Version::new(a, b));
    let layers: &'static [LayerEntry] = Box::leak(Box::new([
        LayerEntry {
            layer: "Act",
            device: BackendKind::Cpu,
            kernel: "act",
            function: "silu_and_mul",
            capability: None,
            mode: ModeSupport::Training,
            deterministic: false,
            tolerance: None,
        },
        LayerEntry {
            layer: "Norm",
            device: BackendKind::Cuda,
            kernel: "norm",
            function: "rms_norm",
            capability: range(v(8, 0), None),
            mode: ModeSupport::Inference,
            deterministic: false,
            tolerance: None,
        },
        LayerEntry {
            layer: "Norm",
            device: BackendKind::Cpu,
            kernel: "norm",
            function: "rms_norm",
            capability: None,
            mode: ModeSupport::Inference,
            deterministic: false,
            tolerance: None,
        },
        // Two mappings for one device: the first is faster, the second deterministic.
        LayerEntry {
            layer: "Pick",
            device: BackendKind::Cpu,
            kernel: "act",
            function: "rms_norm",
            capability: None,
            mode: ModeSupport::Inference,
            deterministic: false,
            tolerance: None,
        },
        LayerEntry {
            layer: "Pick",
            device: BackendKind::Cpu,
            kernel: "norm",
            function: "rms_norm",
            capability: None,
            mode: ModeSupport::Inference,
            deterministic: true,
            tolerance: None,
        },
        LayerEntry {
            layer: "Ghost",
            device: BackendKind::Cpu,
            kernel: "missing",
            function: "f",
            capability: None,
            mode: ModeSupport::Inference,
            deterministic: false,
            tolerance: None,
        },
    ]));
    Registry { kernels, layers, tvm_ffi: None, cuda_runtime: None }
}

fn cpu_platform() -> Platform {
    Platform::new(Os::current(), CpuArch::current())
}

fn gpu_platform(major: u32, minor: u32) -> Platform {
    cpu_platform().with_cuda(CudaInfo {
        driver_version: Version::new(13, 0),
        devices: vec![CudaDevice { ordinal: 0, name: "GPU".into(), capability: Version::new(major, minor) }],
    })
}

fn fallback(d: &Decision) -> &FallbackReason {
    match &d.choice {
        Choice::Fallback(r) => r,
        Choice::Kernel(k) => panic!("expected a fallback, got kernel {k:?}"),
    }
}

const CPU: Target = Target::Device(BackendKind::Cpu, 0);
const CUDA0: Target = Target::Device(BackendKind::Cuda, 0);

#[test]
fn disabled_mapping_wins_over_everything() {
    let reg = registry(&[]);
    let settings = Settings { disable_mapping: true, ..Settings::default() };
    let d = decide(&reg, "Norm", CPU, Mode::Inference, &settings, &cpu_platform());
    assert!(matches!(fallback(&d), FallbackReason::Disabled { by: Switch::All }));
    assert!(!fallback(&d).is_failure());
    assert_eq!(fallback(&d).to_string(), "DISABLE_KERNEL_MAPPING is set");
}

#[test]
fn kernels_disable_names_layers_kernels_or_repos() {
    let reg = registry(&[]);
    for name in ["Norm", "norm", "kernels-test/norm"] {
        let settings = Settings { disabled: vec!["Other".into(), name.into()], ..Settings::default() };
        let d = decide(&reg, "Norm", CPU, Mode::Inference, &settings, &cpu_platform());
        let reason = fallback(&d);
        assert!(matches!(reason, FallbackReason::Disabled { by: Switch::Env(n) } if n == name), "{reason:?}");
        assert!(!reason.is_failure());
        assert_eq!(reason.to_string(), format!("KERNELS_DISABLE names `{name}`"));
    }
    // Names of other layers and kernels leave the decision alone.
    let settings = Settings { disabled: vec!["Act".into(), "act".into()], ..Settings::default() };
    let d = decide(&reg, "Norm", CPU, Mode::Inference, &settings, &cpu_platform());
    assert!(matches!(fallback(&d), FallbackReason::NoVariant { .. }), "{:?}", d.choice);
}

#[test]
fn no_mapping_names_the_devices_that_are_mapped() {
    let reg = registry(&[]);
    let d = decide(&reg, "Unknown", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
    assert!(matches!(fallback(&d), FallbackReason::NoMapping { mapped, .. } if mapped.is_empty()));
    let d = decide(&reg, "Act", CUDA0, Mode::Inference, &Settings::default(), &gpu_platform(9, 0));
    let FallbackReason::NoMapping { device, mapped } = fallback(&d) else { panic!("{:?}", d.choice) };
    assert_eq!((*device, mapped.as_slice()), (BackendKind::Cuda, [BackendKind::Cpu].as_slice()));
    assert_eq!(fallback(&d).to_string(), "kernels.toml maps it to no kernel for cuda (only for cpu)");
}

#[test]
fn unsupported_devices_and_absent_gpus_fall_back() {
    let reg = registry(&[]);
    let vulkan = Target::of(Some(DLDevice::new(DLDeviceType::VULKAN, 0)));
    let d = decide(&reg, "Norm", vulkan, Mode::Inference, &Settings::default(), &cpu_platform());
    assert!(matches!(fallback(&d), FallbackReason::UnsupportedDevice { device_type: 7 }), "{:?}", d.choice);
    let d = decide(&reg, "Norm", CUDA0, Mode::Inference, &Settings::default(), &cpu_platform());
    assert!(matches!(fallback(&d), FallbackReason::NoDevice { device: BackendKind::Cuda, .. }), "{:?}", d.choice);
    let cuda3 = Target::Device(BackendKind::Cuda, 3);
    let d = decide(&reg, "Norm", cuda3, Mode::Inference, &Settings::default(), &gpu_platform(9, 0));
    let reason = fallback(&d).to_string();
    assert!(reason.contains("cuda device 3 is not usable: the driver lists 1 device(s)"), "{reason}");
}

#[test]
fn capability_outside_every_range_falls_back() {
    let reg = registry(&[]);
    let d = decide(&reg, "Norm", CUDA0, Mode::Inference, &Settings::default(), &gpu_platform(7, 5));
    let FallbackReason::Capability { capability, ranges } = fallback(&d) else { panic!("{:?}", d.choice) };
    assert_eq!((*capability, ranges.as_slice()), (Version::new(7, 5), ["norm 8.0..".to_owned()].as_slice()));
    // Inside the range, the decision moves on to finding a variant.
    let d = decide(&reg, "Norm", CUDA0, Mode::Inference, &Settings::default(), &gpu_platform(9, 0));
    assert!(matches!(fallback(&d), FallbackReason::NoVariant { trace: None, .. }), "{:?}", d.choice);
}

#[test]
fn training_needs_a_kernel_with_backward() {
    let reg = registry(&[]);
    let d = decide(&reg, "Norm", CPU, Mode::Training, &Settings::default(), &cpu_platform());
    let FallbackReason::NoBackward { kernels } = fallback(&d) else { panic!("{:?}", d.choice) };
    assert_eq!(kernels, &["norm"]);
    assert!(fallback(&d).to_string().contains("mode = \"training\""));
    // The same layer in inference mode gets past the mode check.
    let d = decide(&reg, "Norm", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
    assert!(matches!(fallback(&d), FallbackReason::NoVariant { .. }), "{:?}", d.choice);
}

const DETERMINISTIC: Settings =
    Settings { disable_mapping: false, local_kernels: None, disabled: Vec::new(), deterministic: true };

/// The kernel a decision went on to load (none of the registry's kernels has variants here).
fn kernel_tried(d: &Decision) -> &str {
    match fallback(d) {
        FallbackReason::NoVariant { kernel, .. } => kernel,
        other => panic!("expected a kernel without variants, got {other:?}"),
    }
}

#[test]
fn deterministic_mode_picks_the_deterministic_mapping() {
    let reg = registry(&[]);
    let d = decide(&reg, "Pick", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
    assert_eq!(kernel_tried(&d), "act", "the first mapping, declared first");
    let d = decide(&reg, "Pick", CPU, Mode::Inference, &DETERMINISTIC, &cpu_platform());
    assert_eq!(kernel_tried(&d), "norm", "the only deterministic mapping");
}

#[test]
fn deterministic_mode_without_a_deterministic_mapping_falls_back() {
    let reg = registry(&[]);
    for (layer, mode) in [("Norm", Mode::Inference), ("Act", Mode::Training)] {
        let d = decide(&reg, layer, CPU, mode, &DETERMINISTIC, &cpu_platform());
        let reason = fallback(&d);
        let FallbackReason::NotDeterministic { kernels } = reason else { panic!("{layer}: {reason:?}") };
        assert_eq!(kernels, &[layer.to_lowercase()]);
        assert!(!reason.is_failure());
        assert_eq!(
            reason.to_string(),
            format!(
                "deterministic mode (KERNELS_DETERMINISTIC=1 or dispatch::set_deterministic(true)) needs a mapping \
                 declared `deterministic = true` in kernels.toml; the mapped kernels ({}) are not",
                layer.to_lowercase()
            )
        );
    }
    // A missing capability or backward is named first: declaring determinism would not help.
    let d = decide(&reg, "Norm", CPU, Mode::Training, &DETERMINISTIC, &cpu_platform());
    assert!(matches!(fallback(&d), FallbackReason::NoBackward { .. }), "{:?}", d.choice);
    let d = decide(&reg, "Norm", CUDA0, Mode::Inference, &DETERMINISTIC, &gpu_platform(7, 5));
    assert!(matches!(fallback(&d), FallbackReason::Capability { .. }), "{:?}", d.choice);
}

#[test]
fn kernels_without_variants_or_with_unknown_names_fall_back() {
    let reg = registry(&[]);
    let d = decide(&reg, "Ghost", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
    assert!(matches!(fallback(&d), FallbackReason::UnknownKernel { kernel } if kernel == "missing"));
    assert!(fallback(&d).is_failure());
    let d = decide(&reg, "Norm", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
    let reason = fallback(&d).to_string();
    assert!(reason.contains("LOCAL_KERNELS=kernels-test/norm=<dir>"), "{reason}");
}

#[test]
fn embedded_variants_for_other_machines_are_explained() {
    static VARIANTS: &[EmbeddedVariant] = &[EmbeddedVariant {
        variant: FOREIGN_CPU,
        archs: &[],
        library: EmbeddedFile { path: "_act.so", sha256: "00", bytes: b"not a library" },
    }];
    let reg = registry(VARIANTS);
    let d = decide(&reg, "Act", CPU, Mode::Training, &Settings::default(), &cpu_platform());
    let trace = fallback(&d).trace().expect("a selection trace");
    assert_eq!(trace.chosen(), None);
    assert!(matches!(trace.verdict(FOREIGN_CPU), Some(crate::select::Verdict::Rejected(_))), "{trace}");
    assert!(fallback(&d).to_string().contains(FOREIGN_CPU));
}

#[test]
fn load_failures_fall_back_with_the_loader_error() {
    let variant: &'static str = Box::leak(this_cpu_variant().into_boxed_str());
    let variants: &'static [EmbeddedVariant] = Box::leak(Box::new([EmbeddedVariant {
        variant,
        archs: &[],
        library: EmbeddedFile { path: "_act.so", sha256: "00", bytes: b"tampered" },
    }]));
    let reg = registry(variants);
    let d = decide(&reg, "Act", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
    let FallbackReason::LoadFailed { error, .. } = fallback(&d) else { panic!("{:?}", d.choice) };
    assert!(matches!(**error, LoadError::DigestMismatch { .. }), "{error}");

    // A malformed LOCAL_KERNELS, and one naming a directory that does not exist.
    let settings = Settings { local_kernels: Some("kernels-test/act".into()), ..Settings::default() };
    let d = decide(&reg, "Act", CPU, Mode::Inference, &settings, &cpu_platform());
    assert!(
        matches!(fallback(&d), FallbackReason::LoadFailed { error, .. } if matches!(**error, LoadError::LocalKernels(_)))
    );
    let settings = Settings { local_kernels: Some("kernels-test/act=/nonexistent/k".into()), ..Settings::default() };
    let d = decide(&reg, "Act", CPU, Mode::Inference, &settings, &cpu_platform());
    assert!(
        matches!(fallback(&d), FallbackReason::LoadFailed { error, .. } if matches!(**error, LoadError::Io { .. }))
    );
}

/// Two GPUs of different capability in one process: each decision is made for its own device.
/// The only CUDA variant is built for sm_90, so device 0 (9.0) selects it, and device 1 (8.0)
/// is explained by the trace, whatever the order of the calls.
#[test]
fn each_gpu_gets_its_own_decision() {
    let variant: &'static str =
        Box::leak(format!("tvm-ffi01-cu130-{}-{}", CpuArch::current(), Os::current()).into_boxed_str());
    let variants: &'static [EmbeddedVariant] = Box::leak(Box::new([EmbeddedVariant {
        variant,
        archs: &["9.0"],
        library: EmbeddedFile { path: "_norm.so", sha256: "00", bytes: b"sm_90 only" },
    }]));
    let kernels: &'static [KernelEntry] = Box::leak(Box::new([KernelEntry {
        name: "norm",
        repo: "kernels-test/norm",
        commit: None,
        variants,
        cached: &[],
    }]));
    let reg = Registry { kernels, ..registry(&[]) };
    let two_gpus = cpu_platform().with_cuda(CudaInfo {
        driver_version: Version::new(13, 0),
        devices: vec![
            CudaDevice { ordinal: 0, name: "H200".into(), capability: Version::new(9, 0) },
            CudaDevice { ordinal: 1, name: "A100".into(), capability: Version::new(8, 0) },
        ],
    });
    let cuda1 = Target::Device(BackendKind::Cuda, 1);
    for order in [[CUDA0, cuda1], [cuda1, CUDA0]] {
        for target in order {
            let d = decide(&reg, "Norm", target, Mode::Inference, &Settings::default(), &two_gpus);
            match target {
                // Selected for sm_90; the stand-in bytes then fail their digest, which only a
                // selected variant reaches.
                CUDA0 => assert!(
                    matches!(fallback(&d), FallbackReason::LoadFailed { error, .. } if matches!(**error, LoadError::DigestMismatch { .. })),
                    "{:?}",
                    d.choice
                ),
                _ => {
                    let trace = fallback(&d).trace().expect("a selection trace");
                    assert_eq!(trace.chosen(), None, "{trace}");
                    assert!(trace.to_string().contains("8.0"), "{trace}");
                }
            }
        }
    }
}

/// On this machine's real platform: CUDA device 0 is either absent (no device) or has a
/// capability that a range above it excludes and a range around it admits.
#[test]
fn cuda_decisions_on_this_machine() {
    let platform = Platform::detect();
    let gpu = platform.cuda.present().and_then(|c| c.devices.iter().find(|d| d.ordinal == 0));
    let cc = gpu.map_or(Version::new(9, 0), |d| d.capability);
    let layers: &'static [LayerEntry] = Box::leak(Box::new([
        LayerEntry {
            layer: "Above",
            device: BackendKind::Cuda,
            kernel: "norm",
            function: "rms_norm",
            capability: Some(CapabilityRange { min: Some(Version::new(cc.major + 1, 0)), max: None }),
            mode: ModeSupport::Inference,
            deterministic: false,
            tolerance: None,
        },
        LayerEntry {
            layer: "Around",
            device: BackendKind::Cuda,
            kernel: "norm",
            function: "rms_norm",
            capability: Some(CapabilityRange { min: Some(cc), max: Some(cc) }),
            mode: ModeSupport::Inference,
            deterministic: false,
            tolerance: None,
        },
    ]));
    let reg = Registry { layers, ..registry(&[]) };
    let above = decide(&reg, "Above", CUDA0, Mode::Inference, &Settings::default(), &platform);
    let around = decide(&reg, "Around", CUDA0, Mode::Inference, &Settings::default(), &platform);
    match gpu {
        Some(_) => {
            assert!(matches!(fallback(&above), FallbackReason::Capability { capability, .. } if *capability == cc));
            // Past the capability check: the registry has no variant of the kernel.
            assert!(matches!(fallback(&around), FallbackReason::NoVariant { .. }), "{:?}", around.choice);
        }
        None => {
            for d in [&above, &around] {
                assert!(matches!(fallback(d), FallbackReason::NoDevice { .. }), "{:?}", d.choice);
            }
        }
    }
}

#[test]
fn targets_come_from_dlpack_devices() {
    assert_eq!(Target::of(None), CPU);
    assert_eq!(Target::of(Some(DLDevice::CPU)), CPU);
    assert_eq!(Target::of(Some(DLDevice::new(DLDeviceType::CUDA_HOST, 0))), CPU);
    assert_eq!(Target::of(Some(DLDevice::cuda(2))), Target::Device(BackendKind::Cuda, 2));
    assert_eq!(Target::of(Some(DLDevice::rocm(1))), Target::Device(BackendKind::Rocm, 1));
    assert_eq!(Target::of(Some(DLDevice::cuda(-1))), Target::Unsupported(2));
    assert_eq!(Target::of(Some(DLDevice::new(DLDeviceType::WEBGPU, 0))).to_string(), "webgpu");
    assert_eq!(Target::Device(BackendKind::Cuda, 1).to_string(), "cuda:1");
}

#[test]
fn every_slotted_target_has_its_own_slot() {
    let mut seen = std::collections::HashSet::new();
    for kind in BackendKind::ALL {
        for ordinal in 0..SLOT_ORDINALS as u32 {
            for mode in [Mode::Inference, Mode::Training] {
                for deterministic in [false, true] {
                    let i = slot_index(Target::Device(kind, ordinal), mode, deterministic).expect("a slot");
                    assert!(i < SLOTS && seen.insert(i), "{kind} {ordinal} {mode} {deterministic} -> {i}");
                }
            }
        }
    }
    assert_eq!(seen.len(), SLOTS);
    assert_eq!(slot_index(Target::Device(BackendKind::Cuda, SLOT_ORDINALS as u32), Mode::Inference, false), None);
    assert_eq!(slot_index(Target::Unsupported(7), Mode::Inference, true), None);
}

#[test]
fn modes_are_scoped_and_restored_on_panic() {
    assert_eq!(Mode::current(), Mode::Inference);
    let inner = with_mode(Mode::Training, || {
        let nested = with_mode(Mode::Inference, Mode::current);
        (Mode::current(), nested)
    });
    assert_eq!(inner, (Mode::Training, Mode::Inference));
    assert_eq!(Mode::current(), Mode::Inference);
    let caught = std::panic::catch_unwind(|| with_mode(Mode::Training, || panic!("inside")));
    assert!(caught.is_err());
    assert_eq!(Mode::current(), Mode::Inference);
    // Other threads keep their own mode.
    with_mode(Mode::Training, || {
        assert_eq!(std::thread::spawn(Mode::current).join().unwrap(), Mode::Inference);
    });
}

#[test]
fn conversions_report_what_cannot_be_passed() {
    assert!(matches!(3usize.kernel_arg(), Ok(Value::Int(3))));
    assert!(matches!(u64::MAX.kernel_arg(), Err(ArgError::IntOutOfRange { .. })));
    assert!(matches!(0.5f32.kernel_arg(), Ok(Value::Float(v)) if v == 0.5));
    assert!(matches!(None::<f32>.kernel_arg(), Ok(Value::None)));
    assert!(matches!((&&true).kernel_arg(), Ok(Value::Bool(true))));
    let v = vec![1f32, 2.0, 3.0];
    assert!(matches!(v.kernel_arg(), Ok(Value::Tensor(KernelTensor::Made(t))) if t.shape() == [3]));
    assert_eq!(v.device(), Some(DLDevice::CPU));
    assert_eq!(2f32.device(), None);
    let t = HostTensor::new(vec![0f32; 6], &[2, 3]).unwrap();
    assert!(matches!(t.kernel_arg(), Ok(Value::Tensor(KernelTensor::Made(v))) if v.shape() == [2, 3]));
    assert!(HostTensor::new(vec![0f32; 5], &[2, 3]).is_err());
    let mut z = HostTensor::<f32>::zeros(&[1; 9]);
    assert!(matches!(z.kernel_output(), Err(ArgError::Tensor(TensorError::TooManyDims { .. }))));
}

#[test]
fn errors_and_resolutions_can_cross_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<DispatchError>();
    shared::<Resolution>();
    shared::<Report>();
    shared::<__private::Layer>();
}

#[test]
fn layer_names_are_checked_against_the_registry() {
    use super::private::check_layer;
    let reg = registry(&[]);
    assert!(check_layer(&reg, "Act").is_empty());
    assert!(check_layer(&reg, "Norm").is_empty());
    // Each layer once, though `Pick` has several mappings.
    assert_eq!(
        check_layer(&reg, "Ac").as_str(),
        "layer `Ac` is not in kernels.toml: add a [layers.Ac] table mapping it to a kernel (layers there: Act, Norm, Pick, Ghost)"
    );
    assert_eq!(
        check_layer(&Registry::EMPTY, "Act").as_str(),
        "layer `Act` is not in kernels.toml: add a [layers.Act] table mapping it to a kernel (kernels.toml maps no layers)"
    );
    // A long list is cut at a whole character.
    let long = "é".repeat(300);
    let text = check_layer(&reg, &long);
    assert!(!text.is_empty() && text.as_str().len() <= 512 && text.as_str().starts_with("layer `é"));
}
