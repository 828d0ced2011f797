//! OpenDKIM's `miltertest` drives handoff with the script in tests/miltertest/.

use std::path::Path;
use std::process::Command;

use crate::daemon::Daemon;
use crate::milter_wire::POLICY;

#[test]
fn miltertest_script_passes() {
    let d = Daemon::start(POLICY);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/miltertest/handoff.lua");
    let out = Command::new("miltertest")
        .arg("-D")
        .arg(format!("port={}", d.milter_port))
        .arg("-D")
        .arg(format!("marker={}", d.loop_marker("gone@corp.example")))
        .arg("-s")
        .arg(&script)
        .output()
        .expect("miltertest is installed (Debian package miltertest; .ci/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "miltertest failed:\n{stdout}{stderr}");
    assert!(
        stdout.contains("handoff miltertest: all checks passed"),
        "{stdout}{stderr}"
    );
}
