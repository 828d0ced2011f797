//! Load errors as admins read them: `FILE:LINE:COL: message`, all of them, in file order.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One policy file as read from disk. Kept so that errors can name lines and reloads can tell
/// whether anything changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// Index of a file in the [`Sources`] of one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub(crate) usize);

/// A place in a policy file: which file and the byte range of the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: FileId,
    pub span: Range<usize>,
}

/// Every file of one load: the main file first, then its includes in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    pub files: Vec<SourceFile>,
}

impl Sources {
    pub fn path(&self, id: FileId) -> &Path {
        &self.files[id.0].path
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, id: FileId, offset: usize) -> (usize, usize) {
        let text = &self.files[id.0].text;
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    /// `path:line` of an origin, for messages that point at a second place.
    pub fn describe(&self, origin: &Origin) -> String {
        let (line, _) = self.line_col(origin.file, origin.span.start);
        format!("{}:{}", self.path(origin.file).display(), line)
    }

    /// A digest of every file's path and text: equal digests mean nothing to reload.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_usize(self.files.len());
        for f in &self.files {
            f.path.hash(&mut h);
            f.text.hash(&mut h);
        }
        h.finish()
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One load error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// All the errors of one load, sorted by file and line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// Collects errors during one load; positions become lines and columns at the end, once every
/// included file has been read.
#[derive(Default)]
pub(crate) struct Collector {
    out: Vec<(FileId, usize, String)>,
}

impl Collector {
    pub fn error(&mut self, file: FileId, offset: usize, message: impl Into<String>) {
        self.out.push((file, offset, message.into()));
    }

    pub fn at(&mut self, origin: &Origin, message: impl Into<String>) {
        self.error(origin.file, origin.span.start, message);
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn finish(mut self, sources: &Sources) -> Diagnostics {
        self.out.sort_by_key(|a| (a.0, a.1));
        self.out.dedup();
        let list = self
            .out
            .into_iter()
            .map(|(file, offset, message)| {
                let (line, column) = sources.line_col(file, offset);
                Diagnostic {
                    path: sources.path(file).to_path_buf(),
                    line,
                    column,
                    message,
                }
            })
            .collect();
        Diagnostics(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let sources = Sources {
            files: vec![SourceFile {
                path: "p.toml".into(),
                text: "a = 1\n名前 = \"x\"\n".into(),
            }],
        };
        assert_eq!(sources.line_col(FileId(0), 0), (1, 1));
        assert_eq!(sources.line_col(FileId(0), 6), (2, 1));
        // `=` after two 3-byte characters and a space.
        assert_eq!(sources.line_col(FileId(0), 13), (2, 4));
        assert_eq!(sources.line_col(FileId(0), 999), (3, 1));
    }
}
