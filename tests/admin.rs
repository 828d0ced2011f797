//! The admin commands edit the policy file in place: comments survive, an invalid edit leaves
//! every file byte for byte as it was and says why, and a running daemon picks a valid edit up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::daemon::{Daemon, wait_for};

const POLICY: &str = r#"# Corp's mail policy. Keep this comment.
include = ["accounts.d/*.toml"]

[domains]
local = ["corp.example"]   # only ours

[templates.departed]
subject = "{name} has left"
body = "Please write to {successor}."

[aliases]
# The sales team.
"sales@corp.example" = ["alice@corp.example", "bob@corp.example"]

# Alice runs sales.
[accounts."alice@corp.example"]
state = "active"   # until further notice
name = "Alice"
department = "Sales"
"#;

const INCLUDED: &str = r#"# Carol's entry lives here.
[accounts."carol@corp.example"]
state = "active"
name = "Carol"
"#;

/// A policy directory: the main file and one included file.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("handoff.toml"), POLICY).unwrap();
        std::fs::create_dir(dir.path().join("accounts.d")).unwrap();
        std::fs::write(dir.path().join("accounts.d/carol.toml"), INCLUDED).unwrap();
        Files { dir }
    }

    fn main(&self) -> PathBuf {
        self.dir.path().join("handoff.toml")
    }

    fn included(&self) -> PathBuf {
        self.dir.path().join("accounts.d/carol.toml")
    }

    fn read(&self, p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    /// Runs `handoff ARGS --config MAIN`: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .args(args)
            .arg("--config")
            .arg(self.main())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn explain(&self, address: &str) -> String {
        let (code, out, err) = self.run(&["explain", address, "--at", "2026-06-01"]);
        assert_eq!(code, 0, "{err}");
        out
    }

    /// Every file in the directory tree, byte for byte (temporary files would show up here).
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}

#[test]
fn depart_keeps_comments_and_the_policy_means_it() {
    let f = Files::new();
    let (code, out, err) = f.run(&[
        "depart",
        "Alice@corp.example",
        "--successor",
        "bob@corp.example",
        "--no-copy",
        "--autoreply",
        "departed",
        "--until",
        "2027-05-01",
        "--then",
        "deleted",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("alice@corp.example is now departed (successor bob@corp.example)"),
        "{out}"
    );
    let text = f.read(&f.main());
    let want = POLICY.replace(
        "state = \"active\"   # until further notice\nname = \"Alice\"\ndepartment = \"Sales\"\n",
        "state = \"departed\"   # until further notice\nname = \"Alice\"\ndepartment = \"Sales\"\n\
         successor = \"bob@corp.example\"\nkeep_copy = false\nautoreply = \"departed\"\n\
         until = 2027-05-01\nthen = \"deleted\"\n",
    );
    assert_eq!(text, want);
    assert_eq!(
        f.read(&f.included()),
        INCLUDED,
        "the included file is untouched"
    );
    let ex = f.explain("alice@corp.example");
    assert!(
        ex.contains("result: deliver to bob@corp.example"),
        "the edit means what it says:\n{ex}"
    );
    let (code, _, err) = f.run(&["check"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn disable_edits_the_included_file_that_holds_the_account() {
    let f = Files::new();
    let (code, out, err) = f.run(&["disable", "carol@corp.example"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("accounts.d/carol.toml"), "{out}");
    assert_eq!(f.read(&f.main()), POLICY, "the main file is untouched");
    assert_eq!(
        f.read(&f.included()),
        INCLUDED.replace("state = \"active\"", "state = \"disabled\"")
    );
    assert!(f.explain("carol@corp.example").contains("550 5.2.1"));

    // freeze, delete, restore: each a one-key change in the same place.
    for (cmd, state) in [
        ("freeze", "frozen"),
        ("delete", "deleted"),
        ("restore", "active"),
    ] {
        let (code, out, err) = f.run(&[cmd, "carol@corp.example"]);
        assert_eq!(code, 0, "{cmd}: {out}{err}");
        assert_eq!(
            f.read(&f.included()),
            INCLUDED.replace("state = \"active\"", &format!("state = \"{state}\"")),
            "{cmd}"
        );
    }
    // Nothing left behind (temporary files), nothing else touched.
    let files: Vec<PathBuf> = f.snapshot().into_iter().map(|(p, _)| p).collect();
    assert_eq!(files, vec![f.included(), f.main()]);

    // A new account goes into the main file.
    let (code, _, err) = f.run(&["disable", "dave@corp.example"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        f.read(&f.main()),
        format!("{POLICY}\n[accounts.\"dave@corp.example\"]\nstate = \"disabled\"\n")
    );
}

#[test]
fn an_invalid_edit_changes_no_byte_and_says_why() {
    let f = Files::new();
    let before = f.snapshot();
    let cases: [(&[&str], &str); 5] = [
        // The loader's own error, with the file, line and column of the edited text.
        (
            &[
                "depart",
                "alice@corp.example",
                "--successor",
                "bob@corp.example",
                "--autoreply",
                "nosuch",
            ],
            "handoff.toml:21:13: unknown template `nosuch`",
        ),
        (
            &[
                "depart",
                "alice@corp.example",
                "--successor",
                "alice@corp.example",
            ],
            "names itself as successor",
        ),
        (
            &["disable", "sales@corp.example"],
            "`sales@corp.example` is an alias",
        ),
        (
            &["disable", "someone@elsewhere.example"],
            "is not in a local domain",
        ),
        (&["freeze", "not an address"], "contains a space"),
    ];
    for (args, why) in cases {
        let (code, out, err) = f.run(args);
        assert_ne!(code, 0, "{args:?} succeeded: {out}");
        assert!(err.contains(why), "{args:?}: want `{why}` in:\n{err}");
        assert_eq!(f.snapshot(), before, "{args:?} changed a file");
    }
    // A policy that is already broken is not edited at all.
    std::fs::write(f.main(), format!("{POLICY}\n[oops\n")).unwrap();
    let before = f.snapshot();
    let (code, _, err) = f.run(&["disable", "carol@corp.example"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not load as it is"), "{err}");
    assert_eq!(f.snapshot(), before);
}

#[test]
fn import_applies_a_csv_all_or_nothing() {
    let f = Files::new();
    let csv = f.dir.path().join("leavers.csv");
    std::fs::write(
        &csv,
        "address,state,successor,forward,keep_copy,autoreply,until,then\n\
         alice@corp.example,departed,bob@corp.example,,false,departed,2027-01-31,deleted\n\
         carol@corp.example,frozen,,,,,,\n\
         team@corp.example,alias,,alice@corp.example carol@corp.example,,,,\n\
         erin@corp.example,disabled,,,,,,\n",
    )
    .unwrap();
    let (code, out, err) = f.run(&["import", "--csv", csv.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 rows applied"), "{out}");
    let main = f.read(&f.main());
    for kept in [
        "# Corp's mail policy. Keep this comment.",
        "local = [\"corp.example\"]   # only ours",
        "# The sales team.",
        "# Alice runs sales.",
        "state = \"departed\"   # until further notice",
    ] {
        assert!(main.contains(kept), "lost `{kept}`:\n{main}");
    }
    assert!(
        main.contains("\"team@corp.example\" = [\"alice@corp.example\", \"carol@corp.example\"]"),
        "{main}"
    );
    assert!(
        main.ends_with("\n[accounts.\"erin@corp.example\"]\nstate = \"disabled\"\n"),
        "{main}"
    );
    assert_eq!(
        f.read(&f.included()),
        INCLUDED.replace("state = \"active\"", "state = \"frozen\""),
        "carol is edited where she lives"
    );
    let ex = f.explain("team@corp.example");
    assert!(
        ex.contains("alice@corp.example: forward to bob@corp.example") && ex.contains("450 4.2.1"),
        "the new alias follows alice's departure and carol's freeze (which defers it):\n{ex}"
    );

    // Row mistakes and policy mistakes name the CSV line; nothing is written.
    let before = f.snapshot();
    let bad = f.dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "address,state,successor,autoreply\n\
         frank@corp.example,departed,bob@corp.example,\n\
         gina@corp.example,gone,,\n",
    )
    .unwrap();
    let (code, _, err) = f.run(&["import", "--csv", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.csv:3: unknown state `gone`"), "{err}");
    assert_eq!(f.snapshot().len(), before.len() + 1, "only bad.csv is new");
    std::fs::remove_file(&bad).unwrap();

    let bad = f.dir.path().join("bad2.csv");
    std::fs::write(
        &bad,
        "address,state,successor,autoreply\n\
         frank@corp.example,departed,bob@corp.example,\n\
         gina@corp.example,departed,bob@corp.example,nosuch\n\
         sales@corp.example,disabled,,\n",
    )
    .unwrap();
    let (code, _, err) = f.run(&["import", "--csv", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad2.csv:3: gina@corp.example: unknown template `nosuch`"),
        "{err}"
    );
    assert!(
        err.contains("bad2.csv:4: sales@corp.example:") && err.contains("is an alias"),
        "{err}"
    );
    assert!(!err.contains("bad2.csv:2"), "row 2 is fine: {err}");
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(f.snapshot(), before);
}

#[test]
fn a_running_daemon_picks_up_an_edit() {
    let d = Daemon::start(
        POLICY
            .replace("include = [\"accounts.d/*.toml\"]\n", "")
            .as_str(),
    );
    assert_eq!(d.metric("handoff_policy_generation"), Some(1.0));
    let (code, out, err) = d.cli(&[
        "depart",
        "alice@corp.example",
        "--successor",
        "bob@corp.example",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // The gauge moves just before the reload is logged, so wait for both.
    wait_for(Duration::from_secs(10), "generation 2, logged", || {
        (d.metric("handoff_policy_generation") == Some(2.0)
            && d.log_text().contains("policy reloaded"))
        .then_some(())
    });
    assert_eq!(
        d.metric(r#"handoff_policy_accounts{state="departed"}"#),
        Some(1.0)
    );

    // An invalid edit: the daemon sees no change at all.
    let (code, _, _) = d.cli(&["disable", "sales@corp.example"]);
    assert_eq!(code, 1);

    // `handoff status` asks the daemon.
    let (code, out, err) = d.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["source"], "daemon", "{out}");
    assert_eq!(s["generation"], 2, "{out}");
    let (_, text, _) = d.cli(&["status"]);
    assert!(text.contains("handoff: running"), "{text}");
    assert!(text.contains("policy generation: 2"), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.metric("handoff_policy_generation"),
        Some(2.0),
        "the refused edit was never written, so nothing reloaded"
    );
}

#[test]
fn status_reads_the_disk_when_no_daemon_runs() {
    let mut d = Daemon::start(
        POLICY
            .replace("include = [\"accounts.d/*.toml\"]\n", "")
            .as_str(),
    );
    d.kill();
    let (code, out, err) = d.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("handoff: not running (read from disk)"),
        "{out}"
    );
    assert!(out.contains("1 accounts (1 active"), "{out}");
    let journal = format!("journal: {} (", d.path("journal").display());
    assert!(out.contains(&journal), "{out}");
}

/// An admin command finds an account written with U-labels when given its A-label spelling (and
/// edits that entry, instead of adding a second one that `check` would call a duplicate); explain
/// names the domain both ways.
#[test]
fn admin_commands_and_explain_take_either_spelling_of_an_idn_domain() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("handoff.toml");
    let policy =
        "[domains]\nlocal = [\"公司.中国\"]\n\n[accounts.\"wang@公司.中国\"]\nstate = \"active\"\n";
    std::fs::write(&main, policy).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .args(args)
            .arg("--config")
            .arg(&main)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, out) = run(&["disable", "WANG@xn--55qx5d.XN--FIQS8S"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        std::fs::read_to_string(&main).unwrap(),
        policy.replace("state = \"active\"", "state = \"disabled\"")
    );
    let (code, out) = run(&[
        "explain",
        "wang@xn--55qx5d.xn--fiqs8s",
        "--at",
        "2026-06-01",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("wang@xn--55qx5d.xn--fiqs8s (wang@公司.中国) on 2026-06-01\n"),
        "{out}"
    );
    assert!(out.contains("550 5.2.1"), "{out}");
    let (code, out) = run(&["explain", "wang@公司.中国", "--at", "2026-06-01"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("550 5.2.1"), "{out}");
}

/// A 20,000-row import is linear in its rows (it was quadratic: 25 s in a release build). The
/// bound is generous for a debug build on a busy machine; the quadratic code takes minutes here.
/// Duplicates and blank lines deep in the file still name their CSV line.
#[test]
fn a_large_import_stays_linear_and_names_lines() {
    const ROWS: usize = 20_000;
    let f = Files::new();
    let mut text = String::from("address,state,successor,forward\n");
    for i in 0..ROWS {
        match i % 4 {
            3 => text.push_str(&format!(
                "l{i}@corp.example,alias,,u{}@corp.example\n",
                i - 1
            )),
            _ => text.push_str(&format!("u{i}@corp.example,departed,alice@corp.example,\n")),
        }
        if i % 1000 == 999 {
            text.push('\n');
        }
    }
    let csv = f.dir.path().join("many.csv");
    std::fs::write(&csv, &text).unwrap();
    let (code, out, err) = import_within_a_minute(&f, &csv);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{ROWS} rows applied")), "{out}");
    let main = f.read(&f.main());
    assert!(main.contains("# Alice runs sales."), "{main}");
    assert!(main.contains("[accounts.\"u19998@corp.example\"]"));

    // A duplicate on the last line: both lines named (20,000 rows + header + 20 blank lines).
    text.push_str("u5@corp.example,frozen,,\n");
    std::fs::write(&csv, &text).unwrap();
    let before = f.snapshot();
    let (code, _, err) = import_within_a_minute(&f, &csv);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("many.csv:20022: `u5@corp.example` is already on line 7"),
        "{err}"
    );
    assert_eq!(f.snapshot(), before);
}

/// `handoff import --csv CSV`, killed (and the test failed) when it takes over a minute.
fn import_within_a_minute(f: &Files, csv: &Path) -> (i32, String, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["import", "--csv"])
        .arg(csv)
        .arg("--config")
        .arg(f.main())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the pipes while waiting, so a long error list cannot block the child.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s).unwrap_or_default()
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s).unwrap_or_default()
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("import of {} took over a minute", csv.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        out.join().unwrap(),
        err.join().unwrap(),
    )
}
