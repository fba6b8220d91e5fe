//! The CUDA runtime (`libcudart.so.<major>`) that kernels linking it dynamically need (torch
//! stable-ABI kernels built for CUDA list it in `DT_NEEDED`): which soname a library needs,
//! where the build finds that soname to embed it, and where it came from (the lock's
//! `[cuda-runtime]` source).
//!
//! The search, first found: `KERNELS_CUDART_LIB` (a file, or a directory holding the soname;
//! when set, the only place looked at), `$CUDA_HOME/lib64`, `$CUDA_HOME/lib`,
//! `$CUDA_PATH/lib64`, then the installed `nvidia-cuda-runtime` wheels
//! (`<site-packages>/nvidia/cu<major>/lib/` for CUDA 13 on,
//! `<site-packages>/nvidia/cuda_runtime/lib/` for CUDA 12) of the virtualenv named by
//! `VIRTUAL_ENV` and of `python3`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use kernels_runtime::cuda_runtime::is_cuda_runtime;
use kernels_runtime::env::CUDART_LIB;
use kernels_runtime::ffi::needed_libraries;
use kernels_runtime::torch_stable_abi::CUDA_RUNTIME_PREFIX;
use kernels_runtime::variant::{BackendKind, Framework, VariantName};

use crate::env::Env;

/// The CUDA toolkit root, whose `lib64/` and `lib/` are searched.
pub const CUDA_HOME: &str = "CUDA_HOME";
/// Another name for the CUDA toolkit root, whose `lib64/` is searched.
pub const CUDA_PATH: &str = "CUDA_PATH";
/// The active virtualenv, whose site-packages are searched for the wheel.
pub const VIRTUAL_ENV: &str = "VIRTUAL_ENV";

/// The CUDA runtime soname the ELF library at `path` lists in `DT_NEEDED`
/// (`libcudart.so.13`), if any.
pub fn needed_cuda_runtime(path: &Path) -> io::Result<Option<String>> {
    Ok(needed_libraries(path)?.into_iter().find(|name| is_cuda_runtime(name)))
}

/// The major version of a CUDA runtime soname (`13` for `libcudart.so.13`).
pub fn major(soname: &str) -> Option<u32> {
    soname.strip_prefix(CUDA_RUNTIME_PREFIX).filter(|_| is_cuda_runtime(soname))?.parse().ok()
}

/// The CUDA runtime soname a variant's library links, known from its name alone: a torch
/// stable-ABI variant for CUDA `<major>.<minor>` links `libcudart.so.<major>`.
pub fn variant_cuda_runtime(variant: &str) -> Option<String> {
    let name = VariantName::parse(variant).ok()?;
    let backend = name.backend().filter(|b| b.kind() == BackendKind::Cuda)?;
    match name.framework()? {
        Framework::TorchStableAbi(_) => Some(format!("{CUDA_RUNTIME_PREFIX}{}", backend.version()?.major)),
        Framework::Torch(_) | Framework::TvmFfi(_) => None,
    }
}

/// Finds `soname` (`libcudart.so.13`) for the build to embed: see the module documentation.
/// The path is as found (a symlink is followed when it is read).
pub fn locate(env: &Env, soname: &str) -> Option<PathBuf> {
    if let Some(given) = env.path(CUDART_LIB) {
        let path = if given.is_dir() { given.join(soname) } else { given };
        return path.is_file().then_some(path);
    }
    let mut dirs = Vec::new();
    if let Some(home) = env.path(CUDA_HOME) {
        dirs.push(home.join("lib64"));
        dirs.push(home.join("lib"));
    }
    if let Some(path) = env.path(CUDA_PATH) {
        dirs.push(path.join("lib64"));
    }
    if let Some(found) = dirs.iter().map(|d| d.join(soname)).find(|p| p.is_file()) {
        return Some(found);
    }
    let major = major(soname)?;
    let mut sites = env.path(VIRTUAL_ENV).map(|venv| venv_site_packages(&venv)).unwrap_or_default();
    sites.extend(python_site_packages());
    sites.iter().flat_map(|site| wheel_libraries(site, major, soname)).find(|p| p.is_file())
}

/// Where the `nvidia-cuda-runtime` wheel of CUDA `major` puts `soname` under `site`.
fn wheel_libraries(site: &Path, major: u32, soname: &str) -> [PathBuf; 2] {
    let nvidia = site.join("nvidia");
    [nvidia.join(format!("cu{major}")).join("lib").join(soname), nvidia.join("cuda_runtime/lib").join(soname)]
}

/// `<venv>/lib/python3*/site-packages`.
fn venv_site_packages(venv: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(venv.join("lib")) else { return Vec::new() };
    let mut sites: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    sites.sort();
    sites
}

/// The site-packages directories of `python3` (global and user), or none when it cannot be
/// asked.
fn python_site_packages() -> Vec<PathBuf> {
    let script = "import site\nprint('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))";
    match Command::new("python3").args(["-c", script]).output() {
        Ok(out) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).map(PathBuf::from).collect()
        }
        _ => Vec::new(),
    }
}

/// Where `lib` came from, for the lock's `[cuda-runtime].source`: `<wheel>==<version>` when it
/// is the library of an installed `nvidia-cuda-runtime` wheel (`<site>/nvidia/<dir>/lib/`,
/// with the wheel's `*.dist-info/METADATA` in `<site>` naming that wheel and a version of the
/// soname's major), else its path.
pub fn source(lib: &Path, soname: &str) -> String {
    let in_wheel = lib.parent().and_then(Path::parent).and_then(Path::parent);
    let site = in_wheel.filter(|nvidia| nvidia.file_name().is_some_and(|n| n == "nvidia")).and_then(Path::parent);
    let release = site.zip(major(soname)).and_then(|(site, major)| wheel_release(site, major));
    release.unwrap_or_else(|| lib.display().to_string())
}

/// `<name>==<version>` of the `nvidia-cuda-runtime` wheel for CUDA `major` installed in `site`.
fn wheel_release(site: &Path, major: u32) -> Option<String> {
    let mut dist_infos: Vec<PathBuf> = std::fs::read_dir(site)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("nvidia_cuda_runtime") && name.ends_with(".dist-info")
        })
        .map(|e| e.path().join("METADATA"))
        .collect();
    dist_infos.sort();
    dist_infos.iter().find_map(|metadata| {
        let text = std::fs::read_to_string(metadata).ok()?;
        let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
        let (name, version) = (field("Name:")?, field("Version:")?);
        let valid = name.starts_with("nvidia-cuda-runtime")
            && version.split('.').next() == Some(major.to_string().as_str())
            && version.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '+');
        valid.then(|| format!("{name}=={version}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soname_comes_from_dt_needed_or_the_variant_name() {
        assert_eq!(major("libcudart.so.13"), Some(13));
        assert_eq!(major("libcudart.so"), None);
        assert_eq!(variant_cuda_runtime("torch-stable-abi211-cu130-x86_64-linux").as_deref(), Some("libcudart.so.13"));
        assert_eq!(variant_cuda_runtime("torch-stable-abi210-cu128-x86_64-linux").as_deref(), Some("libcudart.so.12"));
        assert_eq!(variant_cuda_runtime("torch-stable-abi211-cpu-x86_64-linux"), None);
        assert_eq!(variant_cuda_runtime("tvm-ffi01-cu130-x86_64-linux"), None);
    }

    #[test]
    fn kernels_cudart_lib_is_a_file_or_a_directory_and_the_only_place_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libcudart.so.13");
        std::fs::write(&lib, b"cudart").unwrap();
        let found = |vars: &[(&str, &Path)]| locate(&Env::fixed(vars.iter().copied()), "libcudart.so.13");
        assert_eq!(found(&[(CUDART_LIB, &lib)]), Some(lib.clone()));
        assert_eq!(found(&[(CUDART_LIB, dir.path())]), Some(lib.clone()));
        // Set to a place without it: not looked for elsewhere.
        let cuda = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(cuda.path().join("lib64")).unwrap();
        std::fs::write(cuda.path().join("lib64/libcudart.so.13"), b"other").unwrap();
        let nowhere = dir.path().join("no");
        assert_eq!(found(&[(CUDART_LIB, &nowhere), (CUDA_HOME, cuda.path())]), None);
        assert_eq!(found(&[(CUDA_HOME, cuda.path())]), Some(cuda.path().join("lib64/libcudart.so.13")));
        assert_eq!(found(&[(CUDA_PATH, cuda.path())]), Some(cuda.path().join("lib64/libcudart.so.13")));
    }

    #[test]
    fn the_wheel_of_a_virtualenv_is_found_and_named_by_its_release() {
        let venv = tempfile::tempdir().unwrap();
        let site = venv.path().join("lib/python3.11/site-packages");
        let lib = site.join("nvidia/cu13/lib/libcudart.so.13");
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"cudart").unwrap();
        let env = Env::fixed([(VIRTUAL_ENV, venv.path())]);
        assert_eq!(locate(&env, "libcudart.so.13"), Some(lib.clone()));
        // Without the wheel's dist-info: the path.
        assert_eq!(source(&lib, "libcudart.so.13"), lib.display().to_string());
        let dist_info = site.join("nvidia_cuda_runtime-13.0.96.dist-info");
        std::fs::create_dir_all(&dist_info).unwrap();
        std::fs::write(
            dist_info.join("METADATA"),
            "Metadata-Version: 2.1\nName: nvidia-cuda-runtime\nVersion: 13.0.96\n",
        )
        .unwrap();
        assert_eq!(source(&lib, "libcudart.so.13"), "nvidia-cuda-runtime==13.0.96");
        // A CUDA 12 wheel beside it does not name the CUDA 13 library.
        let lib12 = site.join("nvidia/cuda_runtime/lib/libcudart.so.12");
        assert_eq!(source(&lib12, "libcudart.so.12"), lib12.display().to_string());
        let other = venv.path().join("elsewhere/lib/libcudart.so.13");
        assert_eq!(source(&other, "libcudart.so.13"), other.display().to_string());
    }

    #[test]
    fn the_installed_wheel_is_named_by_its_release() {
        // The pinned wheel that scripts/cuda-env.sh installs, when the tests run with it.
        let Some(lib) = kernels_runtime::env::path("KERNELS_TEST_CUDART") else { return };
        assert_eq!(source(&lib, "libcudart.so.13"), "nvidia-cuda-runtime==13.0.96");
    }
}
