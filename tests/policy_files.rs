//! The example policies load, and a broken policy reports every mistake with its line.

use std::path::Path;
use std::process::Command;

fn handoff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_handoff"))
}

/// Every `.toml` file under `policy/` (the examples admins copy) passes `handoff check`.
#[test]
fn every_example_policy_passes_check() {
    let mut checked = 0;
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("policy")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            // Included fragments are checked through the file that includes them.
            if path
                .components()
                .any(|c| c.as_os_str().to_string_lossy().ends_with(".d"))
            {
                continue;
            }
            let out = handoff().arg("check").arg(&path).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{}:\n{stdout}{stderr}",
                path.display()
            );
            assert!(stdout.contains(": ok: "), "{stdout}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the example policies under policy/, checked {checked}"
    );
}

#[test]
fn example_summary_counts_states() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/example.toml");
    let out = handoff()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("4 accounts (0 active, 1 departed, 1 disabled, 1 frozen, 1 deleted), 1 aliases, 1 templates"),
        "{stdout}"
    );
}

#[test]
fn broken_policy_reports_every_error_with_its_line() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/broken.toml");
    let out = handoff().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = path.display().to_string();
    let expected = [
        format!("{p}:7:25: template `departed` body: unknown placeholder `{{sucessor}}`"),
        format!(
            "{p}:10:1: alias/forward cycle: loop-a@corp.example -> loop-b@corp.example -> loop-a@corp.example"
        ),
        format!("{p}:16:13: unknown template `gone`"),
        format!(
            "{p}:20:9: bad reply for a disabled account: `450 4.2.1 please wait` is a 4xx (temporary) reply, but this account needs a 5xx (permanent) one"
        ),
        format!(
            "{p}:23:9: unknown state `depated` (expected one of: active, departed, disabled, frozen, deleted)"
        ),
        format!("{p}:27:8: `then` needs `until`"),
        format!("{p}:29:11: account `user5@corp` is not in a local domain"),
        format!("{p}:35:34: bad address: `not an address` contains a space or control character"),
        format!("{p}:35:12: `user6@corp.example` forwards to itself"),
    ];
    for line in &expected {
        assert!(
            stderr.lines().any(|l| l.starts_with(line.as_str())),
            "missing {line:?} in:\n{stderr}"
        );
    }
    assert!(
        stderr
            .trim_end()
            .ends_with(&format!("{} errors", expected.len())),
        "{stderr}"
    );
}

#[test]
fn missing_policy_file_is_a_clear_error() {
    let out = handoff()
        .args(["check", "/nonexistent/handoff.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read policy file /nonexistent/handoff.toml"),
        "{stderr}"
    );
}

#[test]
fn includes_merge_and_duplicates_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("accounts.d")).unwrap();
    std::fs::write(
        dir.path().join("main.toml"),
        "include = [\"accounts.d/*.toml\"]\n[domains]\nlocal = [\"corp.example\"]\n[accounts.\"a@corp.example\"]\nstate = \"frozen\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("accounts.d/one.toml"),
        "[accounts.\"b@corp.example\"]\nstate = \"deleted\"\n",
    )
    .unwrap();
    let out = handoff()
        .arg("check")
        .arg(dir.path().join("main.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 accounts"));

    std::fs::write(
        dir.path().join("accounts.d/two.toml"),
        "\n[accounts.\"A@corp.example\"]\nstate = \"active\"\n",
    )
    .unwrap();
    let out = handoff()
        .arg("check")
        .arg(dir.path().join("main.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let two = dir.path().join("accounts.d/two.toml");
    let main = dir.path().join("main.toml");
    let want = format!(
        "{}:2:11: `a@corp.example` is already an account at {}:4",
        two.display(),
        main.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
}

#[test]
fn an_empty_policy_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "\n  \n", "# only a comment\n\n"] {
        let path = dir.path().join("handoff.toml");
        std::fs::write(&path, text).unwrap();
        let out = handoff().arg("check").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{text:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(":1:1: the policy file is empty"),
            "{stderr}"
        );
    }
}

/// A domain that is not valid IDNA is reported with its FILE:LINE:COL, and two keys that are the
/// same address once the domain is in its canonical form (U-label and A-label) are duplicates.
#[test]
fn idn_domains_are_checked_and_both_spellings_collide() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handoff.toml");
    std::fs::write(
        &path,
        concat!(
            "[domains]\n",
            "local = [\"公司.中国\", \"xn--55qx5d-.example\"]\n",
            "[accounts.\"wang@公司.中国\"]\n",
            "state = \"disabled\"\n",
            "[accounts.\"WANG@xn--55qx5d.XN--FIQS8S\"]\n",
            "state = \"active\"\n",
            "[accounts.\"li@公司..中国\"]\n",
            "state = \"active\"\n",
            "[aliases]\n",
            "\"团队@公司.中国\" = [\"李四@xn--ls8h-.example\"]\n",
        ),
    )
    .unwrap();
    let out = handoff().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    for want in [
        format!("{p}:2:"),
        "`xn--55qx5d-.example` is not a domain name (or not valid IDNA, UTS 46)".to_string(),
        format!("{p}:5:"),
        format!("`wang@xn--55qx5d.xn--fiqs8s` is already an account at {p}:3"),
        format!("{p}:7:"),
        "`li@公司..中国` has a domain that is not valid IDNA".to_string(),
        format!("{p}:10:"),
        "`李四@xn--ls8h-.example` has a domain that is not valid IDNA".to_string(),
    ] {
        assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    }

    // Both spellings of one domain in `[domains] local`, keys in either: one domain, no error.
    std::fs::write(
        &path,
        "[domains]\nlocal = [\"公司.中国\", \"XN--55QX5D.xn--fiqs8s\"]\n[accounts.\"wang@xn--55qx5d.xn--fiqs8s\"]\nstate = \"disabled\"\n[accounts.\"张三@公司.中国\"]\nstate = \"departed\"\nsuccessor = \"李四@公司.中国\"\nkeep_copy = false\n",
    )
    .unwrap();
    let out = handoff().arg("check").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `handoff check` on `policy`, killed after 30 s (a read that never ends is the failure).
fn check_within_deadline(policy: &Path) -> (bool, String) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = handoff()
        .arg("check")
        .arg(policy)
        // A terminal-less stdin that never ends: `/dev/stdin` must not be read.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("handoff check {} did not finish in 30 s", policy.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (status.success(), text)
}

/// An include that names a device, a FIFO or an oversized file is refused at its `include`
/// line, naming the file, without reading it (`/dev/zero` would fill memory, a FIFO or
/// `/dev/stdin` would wait forever). The main file the same.
#[test]
fn includes_must_be_regular_files_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let main = d.join("handoff.toml");
    std::fs::write(
        &main,
        "include = [\"only/*.toml\"]\n[domains]\nlocal = [\"corp.example\"]\n",
    )
    .unwrap();
    std::fs::create_dir(d.join("inc")).unwrap();
    let inc = d.join("inc");
    let fifo = inc.join("fifo.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let big = std::fs::File::create(inc.join("big.toml")).unwrap();
    // Sparse: 65 MiB of zeros that take no disk.
    big.set_len(65 << 20).unwrap();
    drop(big);
    let cases: [(&str, Option<&str>, &str); 4] = [
        ("zero.toml", Some("/dev/zero"), "a device"),
        ("stdin.toml", Some("/dev/stdin"), ""),
        ("fifo.toml", None, "a FIFO"),
        ("big.toml", None, "larger than 64 MiB"),
    ];
    for (name, link, why) in cases {
        // One offending file at a time.
        let only = d.join("only");
        let _ = std::fs::remove_dir_all(&only);
        std::fs::create_dir(&only).unwrap();
        let path = only.join(name);
        match link {
            Some(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            None => std::fs::rename(inc.join(name), &path).unwrap(),
        }
        let (ok, text) = check_within_deadline(&main);
        assert!(!ok, "{name}: {text}");
        let at = format!("{}:1:", main.display());
        assert!(
            text.contains(&at) && text.contains(&format!("cannot read include {}", path.display())),
            "{name}: {text}"
        );
        assert!(text.contains(why), "{name}: {text}");
        assert!(
            text.contains("regular file") || name == "big.toml",
            "{name}: {text}"
        );
        if link.is_none() {
            std::fs::rename(&path, inc.join(name)).unwrap();
        }
        // The main file itself, by a link to the same thing.
        let linked = d.join("linked.toml");
        let _ = std::fs::remove_file(&linked);
        let target = link.map_or_else(|| inc.join(name), std::path::PathBuf::from);
        std::os::unix::fs::symlink(&target, &linked).unwrap();
        let (ok, text) = check_within_deadline(&linked);
        assert!(!ok, "main {name}: {text}");
        assert!(
            text.contains(&linked.display().to_string()) && text.contains(why),
            "main {name}: {text}"
        );
    }
}

/// `check` shows the departments as a tree: each sub-department under its parent, with the
/// accounts of the department and its sub-departments (what `archive search --department`
/// selects); spellings that differ in case are one department.
#[test]
fn check_reports_the_department_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handoff.toml");
    let mut policy = String::from("[domains]\nlocal = [\"corp.example\"]\n");
    for (i, dept) in [
        "sales",
        "sales/emea",
        "Sales/EMEA",
        "sales/emea/north",
        "sales/apac",
        "hr",
    ]
    .iter()
    .enumerate()
    {
        policy.push_str(&format!(
            "[accounts.\"u{i}@corp.example\"]\nstate = \"active\"\ndepartment = \"{dept}\"\n"
        ));
    }
    policy.push_str("[accounts.\"nobody@corp.example\"]\nstate = \"active\"\n");
    std::fs::write(&path, policy).unwrap();
    let out = handoff().arg("check").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let tree: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(
        tree,
        [
            "departments (accounts, sub-departments included):",
            "  hr (1)",
            "  sales (5)",
            "    apac (1)",
            "    emea (3)",
            "      north (1)",
        ],
        "{stdout}"
    );
}
