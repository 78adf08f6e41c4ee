//! Where the Kubernetes binaries (kubectl included, of the same version) come from: `tools/build.sh` builds them from
//! the pinned Go modules (cached), or `MTP_KUBE_BIN` names a directory that
//! already holds them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
];

static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The directory holding etcd, kube-apiserver, kube-controller-manager and kubectl,
/// building them first if needed (once per process; the script's lock makes
/// concurrent test processes wait for one build).
pub fn bin_dir() -> Result<PathBuf, String> {
    BIN_DIR.get_or_init(locate).clone()
}

fn locate() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("MTP_KUBE_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        check(&dir).map_err(|e| format!("MTP_KUBE_BIN={}: {e}", dir.display()))?;
        return Ok(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build.sh");
    eprintln!(
        "mtp-kube-harness: {} (prints progress; a cold build takes minutes)",
        script.display()
    );
    // stderr goes to the test's stderr, so a long first build shows progress.
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}); run it by hand to see why",
            script.display(),
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{} printed no directory", script.display()))?;
    check(&dir)?;
    Ok(dir)
}

fn check(dir: &Path) -> Result<(), String> {
    for binary in BINARIES {
        if !dir.join(binary).is_file() {
            return Err(format!("{binary} not found in {}", dir.display()));
        }
    }
    Ok(())
}
