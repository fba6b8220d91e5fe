//! Builds the torch stable-ABI host (feature `torch-stable`, Linux x86_64/aarch64 only): the
//! C++ shim of `host/torch-stable/` as `libkernels_torch_host.so`, and five empty stand-ins
//! carrying libtorch's sonames, each `DT_NEEDED` on the host. The runtime embeds their bytes
//! (`torch_stable_abi::host`). The flags are those of `scripts/build-torch-host.sh`.
//!
//! On other targets, or without the feature, nothing is built and `cfg(kernels_torch_host)`
//! stays unset: stable-ABI variants are then rejected with that reason.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kernels_torch_host)");
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "torch-stable")]
    host::build();
}

#[cfg(feature = "torch-stable")]
mod host {
    use std::env;
    use std::path::PathBuf;
    use std::process::Command;

    /// The stand-ins' names (`lib<name>.so`), as in `torch_stable_abi::TORCH_LIBRARIES`.
    const STAND_INS: [&str; 5] = ["torch", "torch_cpu", "torch_cuda", "c10", "c10_cuda"];

    pub(super) fn build() {
        let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
        let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
        if os != "linux" || !matches!(arch.as_str(), "x86_64" | "aarch64") {
            return;
        }
        let manifest =
            PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| fail("CARGO_MANIFEST_DIR is unset")));
        let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is unset")));
        let src = manifest.join("host/torch-stable");
        println!("cargo::rerun-if-changed={}", src.display());
        let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", src.display())))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "cpp"))
            .collect();
        sources.sort();

        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .pic(true)
            .opt_level(2)
            .files(&sources)
            .flag("-fvisibility=hidden")
            .flag("-fvisibility-inlines-hidden")
            .flag("-fno-gnu-unique")
            .flag(format!("-ffile-prefix-map={}/=", manifest.display()))
            .debug(false)
            .cargo_warnings(true);
        let objects = build.compile_intermediates();

        // Template instances of libstdc++ keep default visibility; the version script hides them.
        let map = out.join("kernels_torch_host.map");
        std::fs::write(
            &map,
            "{\n  global: aoti_torch_*; torch_*; kernels_torch_host_*; PyModule_Create2;\n  local: *;\n};\n",
        )
        .unwrap_or_else(|e| fail(&format!("{}: {e}", map.display())));
        let host = out.join("libkernels_torch_host.so");
        let compiler = build.get_compiler();
        let mut link = compiler.to_command();
        link.args(["-shared", "-Wl,-soname,libkernels_torch_host.so", "-Wl,--no-undefined", "-Wl,-z,now", "-pthread"])
            .arg(format!("-Wl,--version-script,{}", map.display()))
            .arg("-o")
            .arg(&host)
            .args(&objects);
        run(link, "link libkernels_torch_host.so");

        for name in STAND_INS {
            let mut cmd = compiler.to_command();
            cmd.args(["-x", "c++", "-shared", "-fPIC", "-nostdlib"])
                .arg(format!("-Wl,-soname,lib{name}.so"))
                .arg("-Wl,--no-as-needed")
                .arg(format!("-L{}", out.display()))
                .arg("-lkernels_torch_host")
                .arg("-o")
                .arg(out.join(format!("lib{name}.so")))
                .arg("/dev/null");
            run(cmd, &format!("link the stand-in lib{name}.so"));
        }
        println!("cargo::rustc-cfg=kernels_torch_host");
    }

    fn run(mut cmd: Command, what: &str) {
        match cmd.status() {
            Ok(status) if status.success() => {}
            Ok(status) => fail(&format!("{what}: {cmd:?} exited with {status}")),
            Err(e) => fail(&format!("{what}: cannot run {cmd:?}: {e}")),
        }
    }

    fn fail(message: &str) -> ! {
        eprintln!("kernels-runtime build script: {message}");
        eprintln!("(disable the `torch-stable` feature to build without the torch stable-ABI host)");
        std::process::exit(1)
    }
}
