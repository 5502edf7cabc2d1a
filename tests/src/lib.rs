//! Helpers for black-box tests of the `dataplane` binary: find it, run it, capture its output.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The built `dataplane` binary next to the test executable (`target/<profile>/dataplane`).
/// `scripts/test` builds it before running the tests.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/dataplane
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = dir.join("dataplane");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p dataplane), as scripts/test does",
        bin.display()
    );
    bin
}

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Run `dataplane ARGS...` in the workspace root with a clean `DATAPLANE_*` environment.
pub fn dataplane(args: &[&str]) -> Run {
    dataplane_env(args, &[])
}

/// Run `dataplane ARGS...` with extra environment variables.
pub fn dataplane_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(binary());
    cmd.args(args).current_dir(workspace());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DATAPLANE_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    match cmd.output() {
        Ok(o) => o.into(),
        Err(e) => panic!("cannot run {}: {e}", binary().display()),
    }
}
