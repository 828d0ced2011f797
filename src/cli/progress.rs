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
use indicatif::{
    BinaryBytes, HumanCount, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState,
};

use crate::journal;

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

fn per_sec(n: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (n as f64 / secs) as u64
    } else {
        0
    }
}

/// One plain progress line: `verify: 2.30 GiB of 5.70 GiB (40%), 412,000 records, 95,000
/// records/s, about 6s left`; with `done`, `…, done in 10s`. The percentage is of bytes and
/// never passes 100 (a segment still being appended to can outgrow the total: the total
/// shown is then what was read); nothing to read is 100 %. Before any byte is read there is
/// no rate to tell the time left from.
pub fn line(
    verb: &str,
    bytes: u64,
    total: u64,
    records: u64,
    elapsed: Duration,
    done: bool,
) -> String {
    let total = total.max(bytes);
    let percent = (bytes * 100).checked_div(total).unwrap_or(100);
    let when = if done {
        format!("done in {:#}", HumanDuration(elapsed))
    } else {
        let secs = elapsed.as_secs_f64();
        if bytes == 0 || secs <= 0.0 {
            "time left unknown".to_string()
        } else {
            let left = (total - bytes) as f64 * secs / bytes as f64;
            format!(
                "about {:#} left",
                HumanDuration(Duration::from_secs_f64(left.ceil()))
            )
        }
    };
    format!(
        "{verb}: {} of {} ({percent}%), {} records, {} records/s, {when}",
        BinaryBytes(bytes),
        BinaryBytes(total),
        HumanCount(records),
        HumanCount(per_sec(records, elapsed)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn a_line_gives_bytes_percent_records_rate_and_time_left() {
        assert_eq!(
            line(
                "verify",
                2 * GIB,
                5 * GIB,
                400_000,
                Duration::from_secs(4),
                false
            ),
            "verify: 2.00 GiB of 5.00 GiB (40%), 400,000 records, 100,000 records/s, about 6s left"
        );
    }

    #[test]
    fn the_last_line_says_how_long_it_took() {
        assert_eq!(
            line(
                "prune",
                3 * GIB,
                3 * GIB,
                1_000_000,
                Duration::from_secs(10),
                true
            ),
            "prune: 3.00 GiB of 3.00 GiB (100%), 1,000,000 records, 100,000 records/s, done in 10s"
        );
    }

    /// The time left is rounded up to a second (10.01 s left is not "about 10s"), the
    /// percentage down (49.98 % is not done half), and a rate under one record a second
    /// shows as 0.
    #[test]
    fn time_left_rounds_up_percent_down_and_slow_rates_show_as_zero() {
        assert_eq!(
            line("export", 1000, 2001, 5, Duration::from_secs(10), false),
            "export: 1000 B of 1.95 KiB (49%), 5 records, 0 records/s, about 11s left"
        );
    }

    #[test]
    fn nothing_to_read_is_complete_and_no_rate_means_no_time_left() {
        assert_eq!(
            line("verify", 0, 0, 0, Duration::ZERO, false),
            "verify: 0 B of 0 B (100%), 0 records, 0 records/s, time left unknown"
        );
        assert_eq!(
            line("verify", 0, 10 * GIB, 0, Duration::from_secs(3), false),
            "verify: 0 B of 10.00 GiB (0%), 0 records, 0 records/s, time left unknown"
        );
    }

    /// A segment appended to during the walk makes the bytes read pass the total: the line
    /// never says more than 100 %, nor more read than there was.
    #[test]
    fn reading_past_the_total_shows_100_percent_of_what_was_read() {
        assert_eq!(
            line("verify", 1100, 1000, 10, Duration::from_secs(1), false),
            "verify: 1.07 KiB of 1.07 KiB (100%), 10 records, 10 records/s, about 0s left"
        );
    }

    #[test]
    fn the_bar_template_parses() {
        assert!(indicatif::ProgressStyle::with_template(BAR).is_ok());
    }
}
