//! Running one test in a fresh process of its own test binary: dispatch decisions are cached
//! for the life of a process and read environment variables, so each scenario starts fresh
//! with exactly the environment it names.

use std::process::Command;

/// Set in the child to the name of the test it runs.
const CHILD: &str = "KERNELS_TEST_OWN_PROCESS";

/// The dispatch variables a scenario starts without, unless it names them.
const DISPATCH_VARS: [&str; 7] = [
    kernels_runtime::env::DISABLE_MAPPING,
    kernels_runtime::env::DISABLE,
    kernels_runtime::env::STRICT,
    kernels_runtime::env::DETERMINISTIC,
    kernels_runtime::env::VERIFY,
    kernels_runtime::env::VERIFY_EVERY,
    kernels_runtime::env::LOCAL_KERNELS,
];

/// Whether this process is a child running one test for [`in_own_process`].
pub(crate) fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs `body` in a fresh process of this test binary running only `test`, with `env` set and
/// the other dispatch variables unset; the parent asserts that it passed and echoes its stderr.
pub(crate) fn in_own_process(test: &str, env: &[(&str, String)], body: impl FnOnce()) {
    if std::env::var(CHILD).as_deref() == Ok(test) {
        body();
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD, test);
    for var in DISPATCH_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{test} failed in its own process:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{test} did not run in its own process:\n{stdout}\n{stderr}");
    eprint!("{stderr}");
}
