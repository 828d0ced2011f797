//! A CSV file whose first row names its columns, as `handoff import --csv` and `handoff archive
//! import --csv` read one (pure: text in, cells out). Columns may come in any order and in any
//! case; every mistake is reported as `NAME:LINE: message`, all of them at once, and the lines
//! are counted in linear time however many rows there are.

/// Calls `row(line, cells)` for each row that is not empty, its cells in `columns` order (`""`
/// for a column the file does not have), and returns every mistake: the header's (an unknown
/// or repeated column, a missing one of `required`, indexes into `columns`; then no row is
/// read), the reader's, and those `row` returns for its line (without the `NAME:LINE: ` that
/// is put in front of them here).
pub fn each_row<const N: usize>(
    name: &str,
    text: &str,
    columns: &[&str; N],
    required: &[usize],
    mut row: impl FnMut(u64, [&str; N]) -> Vec<String>,
) -> Vec<String> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(::csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut errors = Vec::new();
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.to_ascii_lowercase()).collect(),
        Err(e) => return vec![format!("{name}:1: {e}")],
    };
    let mut index = [None; N];
    for (i, col) in header.iter().enumerate() {
        match columns.iter().position(|c| c == col) {
            Some(j) if index[j].is_none() => index[j] = Some(i),
            Some(_) => errors.push(format!("{name}:1: column `{col}` appears twice")),
            None => errors.push(format!(
                "{name}:1: unknown column `{col}` (known: {})",
                columns.join(", ")
            )),
        }
    }
    for &required in required {
        if index[required].is_none() {
            errors.push(format!(
                "{name}:1: the header has no `{}` column",
                columns[required]
            ));
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    let mut lines = LineCounter::default();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                // The csv crate's message; it never quotes a cell (so never a password).
                errors.push(format!("{name}:{line}: {e}"));
                continue;
            }
        };
        let line = record
            .position()
            .map_or(0, |p| lines.line_of(text, p.byte()));
        let cells: [&str; N] =
            std::array::from_fn(|j| index[j].and_then(|i| record.get(i)).unwrap_or(""));
        if cells.iter().all(|c| c.is_empty()) {
            continue;
        }
        errors.extend(
            row(line, cells)
                .into_iter()
                .map(|m| format!("{name}:{line}: {m}")),
        );
    }
    errors
}

/// Counts newlines up to increasing byte offsets, each byte once.
#[derive(Default)]
struct LineCounter {
    /// Bytes counted so far, and the newlines among them.
    at: usize,
    newlines: u64,
}

impl LineCounter {
    /// The 1-based line a record starts on. The reader's own line count can lag behind after a
    /// blank line it skipped, so count from the record's byte offset, past any blank lines.
    /// Offsets come in increasing order (records in file order); a smaller one counts again from
    /// the start.
    fn line_of(&mut self, text: &str, byte: u64) -> u64 {
        let at = usize::try_from(byte).unwrap_or(usize::MAX).min(text.len());
        let rest = &text.as_bytes()[at..];
        let start = at
            + rest
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
        if start < self.at {
            *self = LineCounter::default();
        }
        self.newlines += text.as_bytes()[self.at..start]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        self.at = start;
        self.newlines + 1
    }
}
