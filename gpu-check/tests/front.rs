//! `gpu-check` itself: it starts on any machine and fails cleanly where it cannot run.

use std::process::Command;

fn gpu_check(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gpu-check")).args(args).output().expect("run gpu-check");
    (
        output.status.code().expect("gpu-check exits, it is not killed"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_and_bad_arguments() {
    let (code, stdout, _) = gpu_check(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("usage: gpu-check"), "{stdout}");
    let (code, _, stderr) = gpu_check(&["--iters", "zero"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--iters needs a positive number"), "{stderr}");
}

#[test]
fn a_missing_kernel_directory_is_reported_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("gpu-check-no-such-dir-{}", std::process::id()));
    let (code, stdout, stderr) = gpu_check(&[dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The platform is always reported first, then why nothing could run.
    assert!(stdout.starts_with("== platform\n"), "{stdout}");
    assert!(stdout.contains("RESULT platform os="), "{stdout}");
    assert!(stdout.contains("RESULT summary status=cannot-run"), "{stdout}");
}
