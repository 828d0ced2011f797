//! Progress of the long archive commands (`verify`, `prune`, `export`, `reindex`, and a search
//! that must first bring the index up to the journal), on stderr so that
//! stdout (verify's head hash, export's file names) stays what scripts read.
//!
//! The journal counts ([`journal::Progress`]); this file decides what a person sees:
//! - stderr is a terminal: a bar with the bytes read, the records, the rate and the time left
//!   (indicatif), shown once the command has run for a second, cleared when it ends;
//! - otherwise (systemd, cron, CI, a pipe): a plain line every [`EVERY`], and a last line when
//!   the command ends, if it printed any (a short command prints nothing);
//! - `--quiet`: nothing.
//!
//! The total is in bytes (the segments' lengths, known before the walk); records are counted
//! as they go, so the time left comes from the bytes.

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressState};

use crate::journal;
use crate::journal::progress::{line, per_sec};

/// How often the plain reporter prints a line.
pub const EVERY: Duration = Duration::from_secs(5);

/// Test knob: the plain reporter's interval (`50ms`, `2s`), so that a test sees lines from a
/// journal that takes a moment rather than minutes. Not meant for operators.
pub const EVERY_ENV: &str = "HANDOFF_PROGRESS_EVERY";

/// A command that ends within this time shows no bar (a bar that flashes is noise).
const BAR_AFTER: Duration = Duration::from_secs(1);

/// What the bar shows (what the plain line says, short enough for 80 columns); the bar
/// itself takes the width left.
const BAR: &str = "{prefix}: {binary_bytes}/{binary_total_bytes} {percent}%, {records} records, \
                   {records_per_sec}/s, {eta} left [{wide_bar}]";

/// How often the bar is given new figures (it redraws at most as often).
const BAR_TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct ProgressArg {
    /// Show no progress on stderr (by default: a bar on a terminal, else a line every 5 s)
    #[arg(long, short)]
    pub quiet: bool,
}

/// Shows a command's progress (see the module docs).
pub struct Reporter {
    verb: &'static str,
    start: Instant,
    total: u64,
    bytes: u64,
    records: u64,
    shown: Shown,
}

enum Shown {
    Off,
    Bar {
        bar: ProgressBar,
        /// The records, for the bar's `{records}` and `{records_per_sec}`: read when it draws.
        records: Arc<AtomicU64>,
        visible: bool,
        next: Instant,
    },
    Lines {
        every: Duration,
        next: Instant,
        printed: bool,
    },
}

impl Reporter {
    /// The reporter for `verb` (`verify`, `prune`, `export`): nothing with `quiet`, a bar when
    /// stderr is a terminal, plain lines otherwise.
    pub fn new(verb: &'static str, arg: &ProgressArg) -> Reporter {
        let start = Instant::now();
        let shown = if arg.quiet {
            Shown::Off
        } else if std::io::stderr().is_terminal() {
            let records = Arc::new(AtomicU64::new(0));
            Shown::Bar {
                bar: bar(verb, &records),
                records,
                visible: false,
                next: start,
            }
        } else {
            let every = every();
            Shown::Lines {
                every,
                next: start + every,
                printed: false,
            }
        };
        Reporter {
            verb,
            start,
            total: 0,
            bytes: 0,
            records: 0,
            shown,
        }
    }

    /// The walk is over: the bar goes; the plain reporter, when it printed any line and the
    /// walk `succeeded`, prints a last one. Called before the command prints its result or
    /// its error (a bar cleared after an error line would take that line with it).
    pub fn finish(self, succeeded: bool) {
        if succeeded && let Shown::Lines { printed: true, .. } = self.shown {
            eprintln!("{}", self.line(Instant::now(), true));
        }
    }

    fn line(&self, now: Instant, done: bool) -> String {
        line(
            self.verb,
            self.bytes,
            self.total,
            self.records,
            now - self.start,
            done,
        )
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Shown::Bar { bar, .. } = &self.shown {
            bar.finish_and_clear();
        }
    }
}

impl journal::Progress for Reporter {
    fn total(&mut self, bytes: u64) {
        self.total = bytes;
        if let Shown::Bar { bar, .. } = &self.shown {
            bar.set_length(bytes.max(self.bytes));
        }
    }

    fn advance(&mut self, bytes: u64, records: u64) {
        self.bytes += bytes;
        self.records += records;
        if matches!(self.shown, Shown::Off) {
            return;
        }
        let now = Instant::now();
        let line = match &self.shown {
            Shown::Lines { next, .. } if now >= *next => Some(self.line(now, false)),
            _ => None,
        };
        let elapsed = now - self.start;
        match &mut self.shown {
            Shown::Off => {}
            Shown::Lines {
                every,
                next,
                printed,
            } => {
                if let Some(line) = line {
                    eprintln!("{line}");
                    *printed = true;
                    *next = now + *every;
                }
            }
            Shown::Bar {
                bar,
                records,
                visible,
                next,
            } => {
                if now < *next {
                    return;
                }
                *next = now + BAR_TICK;
                if self.bytes > self.total {
                    bar.set_length(self.bytes);
                }
                // The records first: setting the position draws.
                records.store(self.records, Ordering::Relaxed);
                bar.set_position(self.bytes);
                if !*visible && elapsed >= BAR_AFTER {
                    *visible = true;
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                }
            }
        }
    }
}

/// The bar, hidden until the command has run for [`BAR_AFTER`]; `records` is read when it
/// draws.
fn bar(verb: &'static str, records: &Arc<AtomicU64>) -> ProgressBar {
    let (count, rate) = (records.clone(), records.clone());
    let style = indicatif::ProgressStyle::with_template(BAR)
        // A constant template: it parses (`the_bar_template_parses` holds it).
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key(
            "records",
            move |_: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = write!(w, "{}", HumanCount(count.load(Ordering::Relaxed)));
            },
        )
        .with_key(
            "records_per_sec",
            move |state: &ProgressState, w: &mut dyn fmt::Write| {
                let n = rate.load(Ordering::Relaxed);
                let _ = write!(w, "{}", HumanCount(per_sec(n, state.elapsed())));
            },
        )
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden())
        .with_style(style)
        .with_prefix(verb)
}

/// The plain reporter's interval: [`EVERY`], or the test knob [`EVERY_ENV`].
pub(super) fn every() -> Duration {
    let Ok(v) = std::env::var(EVERY_ENV) else {
        return EVERY;
    };
    match v.parse::<jiff::SignedDuration>().map(Duration::try_from) {
        Ok(Ok(d)) if !d.is_zero() => d,
        _ => {
            eprintln!(
                "handoff archive: warning: {EVERY_ENV}={v:?} is not a duration such as 5s: using {}s",
                EVERY.as_secs()
            );
            EVERY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_template_parses() {
        assert!(indicatif::ProgressStyle::with_template(BAR).is_ok());
    }
}
