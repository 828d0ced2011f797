//! The architecture, checked from the source: the pure modules (codecs, sessions, transaction,
//! engine, policy compiler, address, auto-reply rules and message building) use no tokio and none
//! of std's file, socket or process APIs, and reach no I/O edge of the crate (`runtime`, `fsops`).
//! I/O lives at the edges; this test fails the build of a change that forgets it.
//!
//! The files are parsed with `syn`, so comments and strings never count, and every path counts
//! wherever it is written: `use` trees (nested groups, globs, renames), paths in code and types,
//! attributes, and the tokens of macro calls.

use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The pure files and folders, relative to the crate root. A folder means every `.rs` under it.
const PURE: &[&str] = &[
    "src/address.rs",
    "src/engine.rs",
    "src/explain.rs",
    "src/loopmark.rs",
    "src/srs.rs",
    "src/transaction.rs",
    "src/policy",
    "src/milter/codec",
    "src/milter/session.rs",
    "src/lmtp/codec.rs",
    "src/lmtp/session.rs",
    "src/lmtp/session",
    "src/autoreply/rules.rs",
    "src/autoreply/build.rs",
    "src/import/mbox.rs",
    "src/import/message.rs",
    "src/import/csv.rs",
    "src/imap/proto.rs",
    "src/console/totp.rs",
    "src/csvtable.rs",
];

/// Inside the pure folders, the files that are an edge on purpose, and why.
const EDGES: &[(&str, &str)] = &[(
    "src/policy/load.rs",
    "the policy's one file edge: reads the main file and its includes, bounded, for the pure compiler",
)];

/// What a pure file may not use, anywhere (tests included), and why.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "tokio",
        "async I/O belongs to the front ends' servers and the runtime",
    ),
    ("std::fs", "files are read and written at the edges"),
    (
        "std::os::unix::fs",
        "files are read and written at the edges",
    ),
    ("std::os::unix::net", "sockets belong to the servers"),
    ("std::os::fd", "descriptors belong to the edges"),
    ("std::net::TcpStream", "sockets belong to the servers"),
    ("std::net::TcpListener", "sockets belong to the servers"),
    ("std::net::UdpSocket", "sockets belong to the servers"),
    ("std::net::ToSocketAddrs", "name resolution is I/O"),
    ("std::process", "processes belong to the edges"),
    ("std::thread", "threads belong to the runtime"),
    ("std::io::stdin", "the terminal belongs to the command line"),
    (
        "std::io::stdout",
        "the terminal belongs to the command line",
    ),
    (
        "std::io::stderr",
        "the terminal belongs to the command line",
    ),
    ("nix", "system calls belong to the edges"),
    ("libc", "system calls belong to the edges"),
    ("mio", "sockets belong to the servers"),
    ("socket2", "sockets belong to the servers"),
];

/// What a pure file's non-test code may not import from the crate: its I/O edges. (Tests of a
/// pure module may build a `PolicyStore` to drive it.)
const FORBIDDEN_OUTSIDE_TESTS: &[(&str, &str)] = &[
    (
        "crate::runtime",
        "the runtime is the I/O edge around the pure core",
    ),
    ("crate::fsops", "file handling is an edge"),
    ("crate::cli", "the command line is an edge"),
];

#[test]
fn the_pure_modules_use_no_tokio_and_no_file_socket_or_process_apis() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = pure_files(root);
    assert!(
        files.len() >= 10,
        "the pure files were not found under {}: {files:?}",
        root.display()
    );
    let mut found = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let rel = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        // A module's tests in a file of their own (`#[cfg(test)] mod tests;`) are test code.
        let test_file = file.file_stem().is_some_and(|s| s == "tests");
        for v in violations(&text, test_file).unwrap_or_else(|e| panic!("{rel}: {e}")) {
            found.push(format!("{rel}:{}: {} ({})", v.line, v.path, v.why));
        }
    }
    assert!(
        found.is_empty(),
        "pure modules reach I/O (move it to an edge):\n{}",
        found.join("\n")
    );
}

/// The checker itself must be able to fail: every way of writing a forbidden path is caught, and
/// comments, strings and look-alike names are not.
#[test]
fn the_purity_check_catches_every_way_of_writing_a_forbidden_path() {
    let caught = |src: &str| -> Vec<String> {
        violations(src, false)
            .unwrap()
            .into_iter()
            .map(|v| v.path)
            .collect()
    };
    assert_eq!(
        caught("use tokio::net::TcpStream;"),
        ["tokio::net::TcpStream"]
    );
    assert_eq!(caught("use std::{fs, io};"), ["std::fs"]);
    assert_eq!(caught("use std::fs as f;"), ["std::fs"]);
    assert_eq!(caught("use std::net::*;"), ["std::net::*"]);
    assert_eq!(
        caught("use std::net::{SocketAddr, ToSocketAddrs};"),
        ["std::net::ToSocketAddrs"]
    );
    assert_eq!(
        caught("fn f() { let _ = std::fs::read(\"x\"); }"),
        ["std::fs::read"]
    );
    assert_eq!(
        caught("fn f() { let _ = ::std::fs::read(\"x\"); }"),
        ["std::fs::read"]
    );
    assert_eq!(
        caught("async fn f() { tokio::task::yield_now().await }"),
        ["tokio::task::yield_now"]
    );
    assert_eq!(
        caught("fn f() { tokio::select! { _ = g() => {} } }"),
        ["tokio::select"]
    );
    assert_eq!(
        caught("fn f() { println!(\"{:?}\", std::fs::metadata(\"/\")); }"),
        ["std::fs::metadata"]
    );
    assert_eq!(caught("#[tokio::test] async fn t() {}"), ["tokio::test"]);
    assert_eq!(
        caught("fn f(s: std::process::Child) {}"),
        ["std::process::Child"]
    );
    assert_eq!(
        caught("use crate::runtime::store::PolicyStore;"),
        ["crate::runtime::store::PolicyStore"]
    );
    assert_eq!(
        caught("fn f() { crate::fsops::Dir::open(); }"),
        ["crate::fsops::Dir::open"]
    );
    // Test code may drive a pure module with a runtime type, not with I/O.
    assert!(
        caught("#[cfg(test)] mod tests { use crate::runtime::store::PolicyStore; }").is_empty()
    );
    assert_eq!(
        caught("#[cfg(test)] mod tests { use std::fs; }"),
        ["std::fs"]
    );
    let in_test_file =
        violations("use crate::runtime::store::PolicyStore; use std::fs;", true).unwrap();
    assert_eq!(
        in_test_file
            .iter()
            .map(|v| v.path.as_str())
            .collect::<Vec<_>>(),
        ["std::fs"]
    );
    // Not I/O: value types of std::net, names that only look alike, comments and strings.
    assert!(caught("use std::net::{IpAddr, SocketAddr};").is_empty());
    assert!(caught("use crate::runtime_free::X; fn fsx() {}").is_empty());
    assert!(
        caught(
            "// use tokio::net;\n/// tokio::spawn\nfn f() -> &'static str { \"std::fs::read\" }"
        )
        .is_empty()
    );
    assert!(caught("fn f() { log::debug!(\"tokio {}\", 1); }").is_empty());
}

struct Violation {
    line: usize,
    path: String,
    why: &'static str,
}

fn pure_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in PURE {
        let path = root.join(entry);
        if path.is_dir() {
            walk(&path, &mut out);
        } else if path.is_file() {
            out.push(path);
        }
    }
    out.retain(|f| !EDGES.iter().any(|(edge, _)| f.ends_with(edge)));
    out.sort();
    out.dedup();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn violations(src: &str, test_file: bool) -> Result<Vec<Violation>, syn::Error> {
    let file = syn::parse_file(src)?;
    let mut checker = Checker {
        in_test: usize::from(test_file),
        found: Vec::new(),
    };
    checker.visit_file(&file);
    Ok(checker.found)
}

struct Checker {
    /// Depth of `#[cfg(test)]` items around the current one.
    in_test: usize,
    found: Vec<Violation>,
}

impl Checker {
    fn check(&mut self, path: &str, line: usize) {
        let hit = |list: &[(&str, &'static str)]| {
            list.iter()
                .find(|(bad, _)| is_under(path, bad))
                .map(|(_, why)| *why)
        };
        let why = hit(FORBIDDEN).or_else(|| {
            if self.in_test == 0 {
                hit(FORBIDDEN_OUTSIDE_TESTS)
            } else {
                None
            }
        });
        if let Some(why) = why {
            self.found.push(Violation {
                line,
                path: path.to_string(),
                why,
            });
        }
    }

    /// Paths inside a macro call's tokens (`format!("{:?}", std::fs::read(p))`): runs of
    /// `ident :: ident …`, string literals skipped.
    fn check_tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let mut run: Vec<String> = Vec::new();
        let mut line = 0;
        let mut colons = 0;
        let flush = |this: &mut Checker, run: &mut Vec<String>, line: usize| {
            if run.len() > 1 || run.first().is_some_and(|s| s == "tokio") {
                this.check(&run.join("::"), line);
            }
            run.clear();
        };
        for tt in tokens {
            match tt {
                proc_macro2::TokenTree::Ident(ident) => {
                    if colons != 2 && !run.is_empty() {
                        flush(self, &mut run, line);
                    }
                    if run.is_empty() {
                        line = ident.span().start().line;
                    }
                    run.push(ident.to_string());
                    colons = 0;
                }
                proc_macro2::TokenTree::Punct(p) if p.as_char() == ':' => colons += 1,
                proc_macro2::TokenTree::Group(g) => {
                    flush(self, &mut run, line);
                    colons = 0;
                    self.check_tokens(g.stream());
                }
                _ => {
                    flush(self, &mut run, line);
                    colons = 0;
                }
            }
        }
        flush(self, &mut run, line);
    }

    fn check_use(&mut self, prefix: &str, tree: &syn::UseTree) {
        let join = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}::{name}")
            }
        };
        match tree {
            syn::UseTree::Path(p) => self.check_use(&join(&p.ident.to_string()), &p.tree),
            syn::UseTree::Name(n) if n.ident == "self" => {
                self.check(prefix, n.ident.span().start().line)
            }
            syn::UseTree::Name(n) => {
                self.check(&join(&n.ident.to_string()), n.ident.span().start().line)
            }
            syn::UseTree::Rename(r) => {
                self.check(&join(&r.ident.to_string()), r.ident.span().start().line)
            }
            syn::UseTree::Glob(g) => {
                let glob = join("*");
                // A glob reaches whatever it could name: `std::net::*` brings in the sockets.
                let reaches = FORBIDDEN
                    .iter()
                    .chain(FORBIDDEN_OUTSIDE_TESTS)
                    .any(|(bad, _)| is_under(bad, prefix));
                if reaches {
                    self.found.push(Violation {
                        line: g.star_token.spans[0].start().line,
                        path: glob,
                        why: "a glob import reaches I/O",
                    });
                }
            }
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.check_use(prefix, item);
                }
            }
        }
    }
}

/// `path` is `base` or inside it (`std::fs::read` is under `std::fs`; `std::fsx` is not).
fn is_under(path: &str, base: &str) -> bool {
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with("::"))
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Checker {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Impl(i) => &i.attrs,
            _ => &[],
        };
        let test = is_cfg_test(attrs);
        self.in_test += usize::from(test);
        syn::visit::visit_item(self, item);
        self.in_test -= usize::from(test);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        // `use ::std::fs` and `use std::fs` name the same crate.
        self.check_use("", &u.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let joined = path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect::<Vec<_>>()
            .join("::");
        if let Some(first) = path.segments.first() {
            self.check(&joined, first.ident.span().start().line);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.check_tokens(mac.tokens.clone());
    }
}

/// No error type prints its cause in its own message and also returns it as `source()`: printed
/// with its chain, such an error names the cause twice ("cannot read x: denied: denied").
#[test]
fn no_error_prints_its_source_twice() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    assert!(files.len() > 50, "the sources were not found");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file.strip_prefix(root).unwrap().display().to_string();
        for v in doubled_sources(&text).unwrap_or_else(|e| panic!("{rel}: {e}")) {
            found.push(format!("{rel}: {v}"));
        }
    }
    assert!(
        found.is_empty(),
        "these variants print their source in their message and return it as source() too \
         (keep one: rename the field from `source`, drop #[from]/#[source], or drop it from the \
         message):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_doubled_source_check_can_fail() {
    let check = |src: &str| doubled_sources(src).unwrap();
    let doubled = r#"
        #[derive(Debug, thiserror::Error)]
        pub enum E {
            #[error("cannot read {}: {source}", path.display())]
            Read { path: String, source: std::io::Error },
            #[error("i/o: {0}")]
            Io(#[from] std::io::Error),
            #[error("bad: {inner:?}")]
            Bad { #[source] inner: X },
        }
        #[derive(Debug, thiserror::Error)]
        #[error("wrapping {0}")]
        pub struct W(#[source] X);
    "#;
    assert_eq!(check(doubled), ["E::Read", "E::Io", "E::Bad", "W"]);
    let fine = r#"
        #[derive(Debug, thiserror::Error)]
        pub enum E {
            #[error("cannot read {}: {cause}", path.display())]
            Read { path: String, cause: std::io::Error },
            #[error("i/o")]
            Io(#[from] std::io::Error),
            #[error(transparent)]
            Other(#[from] X),
            #[error("{0} bytes")]
            Big(usize),
        }
    "#;
    assert!(check(fine).is_empty());
}

/// The `Type::Variant` names of the error variants whose message names their source field.
fn doubled_sources(src: &str) -> Result<Vec<String>, syn::Error> {
    let file = syn::parse_file(src)?;
    let mut out = Vec::new();
    let mut visit = |item: String, attrs: &[syn::Attribute], fields: &syn::Fields| {
        let Some(message) = error_message(attrs) else {
            return;
        };
        let names_field = |field: &str| {
            // `{source}`, `{source:?}`, `{0}`, and arguments like `source.path()` or `.0`.
            message.contains(&format!("{{{field}}}"))
                || message.contains(&format!("{{{field}:"))
                || message.contains(&format!(".{field}"))
                || message.split([',', ' ', '(']).any(|w| w == field)
        };
        let doubled = fields.iter().enumerate().any(|(i, field)| {
            let is_source = field.ident.as_ref().is_some_and(|id| id == "source")
                || field
                    .attrs
                    .iter()
                    .any(|a| a.path().is_ident("source") || a.path().is_ident("from"));
            let name = match &field.ident {
                Some(id) => id.to_string(),
                None => i.to_string(),
            };
            is_source && names_field(&name)
        });
        if doubled {
            out.push(item);
        }
    };
    for item in &file.items {
        match item {
            syn::Item::Enum(e) if derives_error(&e.attrs) => {
                for v in &e.variants {
                    visit(format!("{}::{}", e.ident, v.ident), &v.attrs, &v.fields);
                }
            }
            syn::Item::Struct(s) if derives_error(&s.attrs) => {
                visit(s.ident.to_string(), &s.attrs, &s.fields);
            }
            _ => {}
        }
    }
    Ok(out)
}

fn derives_error(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("derive")
            && a.meta.require_list().is_ok_and(|l| {
                l.tokens
                    .to_string()
                    .split(',')
                    .any(|d| d.trim().ends_with("Error"))
            })
    })
}

/// The `#[error(...)]` attribute's tokens as text (format string and arguments), unless it is
/// `transparent`.
fn error_message(attrs: &[syn::Attribute]) -> Option<String> {
    let list = attrs
        .iter()
        .find(|a| a.path().is_ident("error"))?
        .meta
        .require_list()
        .ok()?;
    let text = list.tokens.to_string();
    (text != "transparent").then_some(text)
}
