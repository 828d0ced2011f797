//! What ships: the systemd unit passes `systemd-analyze verify` and handoff speaks its readiness
//! protocol; the Debian package installs a binary that accepts its own example policy; the
//! Grafana dashboard queries only metrics handoff exports; the man page and completions come
//! from the command line definitions.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::daemon::Daemon;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn handoff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_handoff"))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/handoff.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/handoff serve",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=handoff",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/handoff/journal /var/lib/handoff/state",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(line), "the unit lacks `{}`", line.trim());
    }
    // verify checks that ExecStart exists: point it at the binary under test. The man page is
    // checked by the package test (man:handoff(1) is not installed here).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handoff.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/handoff", env!("CARGO_BIN_EXE_handoff")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze: {e} (tests/setup.sh installs systemd)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify:\n{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warns:\n{stderr}"
    );
}

#[test]
fn serve_reports_ready_reloading_and_stopping_to_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let rx = UnixDatagram::bind(&socket).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut d = Daemon::prepare("[domains]\nlocal = [\"corp.example\"]\n", None, None);
    d.env
        .push(("NOTIFY_SOCKET".into(), socket.display().to_string()));
    d.spawn(&[]);
    let ready = recv();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS=policy generation 1"), "{ready}");
    d.signal("HUP");
    assert!(recv().starts_with("RELOADING=1"));
    assert!(recv().starts_with("READY=1"));
    d.signal("TERM");
    assert!(recv().starts_with("STOPPING=1"));
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Every `handoff_…` name a dashboard query uses, without the histogram suffixes.
fn queried_metrics(dashboard: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut stack = vec![dashboard];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    exprs.push(e.clone());
                }
                stack.extend(m.values());
            }
            serde_json::Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    let mut names = Vec::new();
    for e in exprs {
        for (i, _) in e.match_indices("handoff_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_string();
            if !names.contains(&base) {
                names.push(base);
            }
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/handoff.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8));
    let source = std::fs::read_to_string(repo().join("src/metrics.rs")).unwrap();
    let defined: Vec<&str> = source
        .lines()
        .filter(|l| l.starts_with("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    let queried = queried_metrics(&dashboard);
    let missing: Vec<&String> = queried
        .iter()
        .filter(|q| !defined.contains(&q.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in metrics.rs: {missing:?}");
    // And it shows every metric the README lists as the operator's core set.
    for needed in [
        "handoff_messages_total",
        "handoff_recipients_total",
        "handoff_rule_hits_total",
        "handoff_milter_stage_seconds",
        "handoff_milter_sessions_active",
        "handoff_lmtp_sessions_active",
        "handoff_journal_records_total",
        "handoff_journal_fsync_seconds",
        "handoff_journal_errors_total",
        "handoff_policy_reloads_total",
        "handoff_policy_generation",
        "handoff_policy_last_reload_success_timestamp_seconds",
        "handoff_policy_accounts",
        "handoff_index_records_total",
        "handoff_index_lag_records",
        "handoff_index_lag_seconds",
        "handoff_index_errors_total",
        "handoff_index_search_seconds",
    ] {
        assert!(
            queried.iter().any(|q| q == needed),
            "the dashboard does not show {needed}"
        );
    }
}

#[test]
fn help_man_page_and_completions_come_from_the_cli() {
    let out = handoff().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "serve", "check", "explain", "archive", "depart", "disable", "freeze", "delete", "restore",
        "import", "status",
    ] {
        assert!(
            help.contains(&format!("  {cmd} ")),
            "{cmd} missing:\n{help}"
        );
    }
    assert!(
        !help.contains("generate"),
        "generate is for packagers:\n{help}"
    );

    let dir = tempfile::tempdir().unwrap();
    let ok = handoff()
        .args(["generate", "man", "--out"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let man = std::fs::read_to_string(dir.path().join("handoff.1")).unwrap();
    assert!(
        man.starts_with(".ie"),
        "roff: {}",
        &man[..80.min(man.len())]
    );
    assert!(man.contains("depart"), "{man}");
    let depart = std::fs::read_to_string(dir.path().join("handoff-depart.1")).unwrap();
    assert!(depart.contains("successor"), "{depart}");

    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef handoff"),
        ("fish", "complete -c handoff"),
    ] {
        let out = handoff()
            .args(["generate", "completions", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains(marker),
            "{shell}:\n{script}"
        );
        assert!(script.contains("depart"), "{shell}");
    }
}

/// Builds the package once (a release build: minutes), extracts it into a scratch root and runs
/// the extracted binary on the extracted example policy.
#[test]
fn the_debian_package_installs_a_working_handoff() {
    let out_dir = repo().join("target/debian-test");
    let _ = std::fs::remove_dir_all(&out_dir);
    let build = Command::new(repo().join("deploy/debian/build-deb.sh"))
        .arg("--output")
        .arg(&out_dir)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    assert!(
        build.status.success(),
        "build-deb.sh failed (tests/setup.sh installs cargo-deb):\n{log}"
    );
    let deb: PathBuf = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}:\n{log}", out_dir.display()));

    let root = tempfile::tempdir().unwrap();
    let x = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(root.path())
        .status()
        .unwrap();
    assert!(x.success());
    let control = tempfile::tempdir().unwrap();
    let e = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path())
        .status()
        .unwrap();
    assert!(e.success());

    let file = |rel: &str| root.path().join(rel);
    for rel in [
        "usr/bin/handoff",
        "etc/handoff/handoff.toml",
        "usr/share/doc/handoff/README.md",
        "usr/share/doc/handoff/main.cf.milter",
        "usr/share/bash-completion/completions/handoff",
        "usr/share/zsh/vendor-completions/_handoff",
        "usr/share/fish/vendor_completions.d/handoff.fish",
    ] {
        assert!(file(rel).is_file(), "{rel} is not in the package");
    }
    let unit = [
        "lib/systemd/system/handoff.service",
        "usr/lib/systemd/system/handoff.service",
    ]
    .iter()
    .map(|r| file(r))
    .find(|p| p.is_file())
    .expect("the systemd unit is in the package");
    assert_eq!(
        std::fs::read_to_string(unit).unwrap(),
        std::fs::read_to_string(repo().join("deploy/systemd/handoff.service")).unwrap()
    );
    let man = file("usr/share/man/man1");
    let pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        pages.iter().any(|p| p.starts_with("handoff.1")),
        "man pages: {pages:?}"
    );

    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/handoff/handoff.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --quiet --system --group"),
        "{postinst}"
    );
    assert!(postinst.contains("/var/lib/handoff/journal"), "{postinst}");

    let check = Command::new(file("usr/bin/handoff"))
        .arg("check")
        .arg("--config")
        .arg(file("etc/handoff/handoff.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && stdout.contains(": ok: "),
        "{stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
