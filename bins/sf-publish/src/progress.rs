//! Progress of a publish on stderr: a bar on a terminal, one-line reports in CI logs and pipes.
//!
//! Bytes done are what the destination has taken (multipart parts count as they land, so a
//! multi-GB tarball moves visibly) plus what was found already there unchanged; the total is what
//! the run plans to write. A bar redraws in place, which only a terminal shows; a CI log keeps
//! every redraw as a new line, so there the report is a line every `--progress-secs` seconds or
//! each time another tenth of the bytes is done, whichever comes first, and one line at the end.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::publish::Publisher;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A bar redrawn in place.
    Bar,
    /// A line now and then.
    Lines,
}

/// A bar only where it can be drawn and is looked at: stderr is a terminal that understands cursor
/// movement, and this is not a GitHub Actions job (its log is not a terminal, even when the runner
/// gives the job a pseudo-terminal).
pub fn style(stderr_is_terminal: bool, env: impl Fn(&str) -> Option<String>) -> Style {
    let in_actions = env(sf_core::env::GITHUB_ACTIONS).as_deref() == Some("true");
    let dumb = env("TERM").as_deref() == Some("dumb");
    if stderr_is_terminal && !in_actions && !dumb {
        Style::Bar
    } else {
        Style::Lines
    }
}

/// The style for this process.
pub fn style_here() -> Style {
    style(std::io::stderr().is_terminal(), |k| std::env::var(k).ok())
}

/// One reading of the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub done: u64,
    pub total: u64,
    pub uploaded: u64,
    pub skipped: u64,
    pub elapsed: Duration,
}

impl Snapshot {
    fn of(p: &Publisher, start: Instant) -> Self {
        let s = &p.stats;
        let done = p.store.sent() + s.skipped_bytes.load(Ordering::Relaxed);
        Snapshot {
            done,
            // Index manifests are merged as they are found, so a run can write a little more than
            // it planned.
            total: s.planned_bytes.load(Ordering::Relaxed).max(done),
            uploaded: s.get(&s.uploaded),
            skipped: s.get(&s.skipped),
            elapsed: start.elapsed(),
        }
    }

    /// Whole percent done; `None` while nothing is planned (reindex writes what it finds).
    pub fn percent(&self) -> Option<u64> {
        (self.total > 0).then(|| (u128::from(self.done) * 100 / u128::from(self.total)) as u64)
    }

    /// Average bytes per second since the start.
    pub fn rate(&self) -> u64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.done as f64 / secs) as u64
        } else {
            0
        }
    }

    /// The one-line report.
    pub fn line(&self, dest: &str) -> String {
        let amount = match self.percent() {
            Some(pc) => format!(
                "{pc}%, {} of {}",
                HumanBytes(self.done),
                HumanBytes(self.total)
            ),
            None => format!("{}", HumanBytes(self.done)),
        };
        format!(
            "sf-publish: progress: {amount} at {}/s; {} objects uploaded, {} unchanged, to {dest}",
            HumanBytes(self.rate()),
            self.uploaded,
            self.skipped
        )
    }
}

/// When the next line is due: `every` after the last one, or as soon as another tenth is done.
#[derive(Debug)]
pub struct LinePacer {
    every: Duration,
    last_at: Duration,
    last_tenth: u64,
}

impl LinePacer {
    pub fn new(every: Duration) -> Self {
        LinePacer {
            every,
            last_at: Duration::ZERO,
            last_tenth: 0,
        }
    }

    /// Whether to print a line for this reading (and note that it was printed).
    pub fn due(&mut self, s: &Snapshot) -> bool {
        let tenth = s.percent().map_or(0, |p| p / 10);
        let due = s.elapsed >= self.last_at + self.every || tenth > self.last_tenth;
        if due {
            self.last_at = s.elapsed;
            self.last_tenth = tenth;
        }
        due
    }
}

/// The bar's look: elapsed time, a bar as wide as the terminal leaves room for, bytes, rate,
/// objects (on one line, so it redraws in place).
pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
    )
    .expect("the template is valid")
    .progress_chars("#>-")
}

/// A bar drawing to `target`.
pub fn new_bar(target: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), target);
    bar.set_style(bar_style());
    bar
}

/// Show a reading on the bar.
pub fn draw(bar: &ProgressBar, s: &Snapshot) {
    bar.set_length(s.total);
    bar.set_position(s.done);
    bar.set_message(format!("{} uploaded, {} unchanged", s.uploaded, s.skipped));
}

/// Progress shown while a publish runs; [`Reporter::finish`] shows the last reading.
#[derive(Debug)]
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    p: Publisher,
    start: Instant,
    every: Duration,
    bar: Option<ProgressBar>,
}

/// Start reporting on `p` (inside the runtime).
pub fn start(p: &Publisher, style: Style, every: Duration) -> Reporter {
    let start = Instant::now();
    let p1 = p.clone();
    let (task, bar) = match style {
        Style::Bar => {
            let bar = new_bar(ProgressDrawTarget::stderr());
            let b = bar.clone();
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    draw(&b, &Snapshot::of(&p1, start));
                }
            });
            (task, Some(bar))
        }
        Style::Lines => {
            let dest = p.store.destination().to_string();
            let task = tokio::spawn(async move {
                let mut pacer = LinePacer::new(every);
                // Often enough to catch each tenth, rarely enough to cost nothing.
                let mut tick = tokio::time::interval(every.min(Duration::from_millis(250)));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let s = Snapshot::of(&p1, start);
                    if pacer.due(&s) {
                        eprintln!("{}", s.line(&dest));
                    }
                }
            });
            (task, None)
        }
    };
    Reporter {
        task,
        p: p.clone(),
        start,
        every,
        bar,
    }
}

impl Reporter {
    /// Stop, and show the last reading.
    pub fn finish(self) {
        self.task.abort();
        let s = Snapshot::of(&self.p, self.start);
        match &self.bar {
            Some(bar) => {
                draw(bar, &s);
                bar.finish();
            }
            // A run shorter than one interval says nothing more: its report on stdout is enough.
            None if s.elapsed >= self.every => {
                eprintln!("{}", s.line(&self.p.store.destination().to_string()))
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_bar_only_on_a_terminal_outside_actions() {
        assert_eq!(style(true, env(&[("TERM", "xterm-256color")])), Style::Bar);
        assert_eq!(style(true, env(&[])), Style::Bar);
        assert_eq!(style(false, env(&[("TERM", "xterm")])), Style::Lines);
        assert_eq!(
            style(true, env(&[("GITHUB_ACTIONS", "true")])),
            Style::Lines
        );
        assert_eq!(style(true, env(&[("TERM", "dumb")])), Style::Lines);
        assert_eq!(
            style(false, env(&[("GITHUB_ACTIONS", "true")])),
            Style::Lines
        );
    }

    fn snap(done: u64, total: u64, secs: u64) -> Snapshot {
        Snapshot {
            done,
            total,
            uploaded: 1,
            skipped: 2,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_line_says_how_far_how_fast_and_where() {
        let l = snap(512 << 20, 1 << 30, 4).line("s3://b/p");
        assert_eq!(
            l,
            "sf-publish: progress: 50%, 512.00 MiB of 1.00 GiB at 128.00 MiB/s; 1 objects uploaded, 2 unchanged, to s3://b/p"
        );
        let l = snap(1 << 20, 0, 1).line("s3://b/p");
        assert!(
            l.starts_with("sf-publish: progress: 1.00 MiB at 1.00 MiB/s;"),
            "{l}"
        );
        assert_eq!(snap(5, 0, 0).rate(), 0);
    }

    #[test]
    fn lines_come_every_interval_or_every_tenth() {
        let mut p = LinePacer::new(Duration::from_secs(10));
        let total = 1000;
        assert!(!p.due(&snap(50, total, 1)), "nothing new yet");
        assert!(p.due(&snap(100, total, 2)), "a tenth done");
        assert!(!p.due(&snap(150, total, 3)));
        assert!(p.due(&snap(160, total, 12)), "ten seconds passed");
        assert!(!p.due(&snap(170, total, 13)));
        assert!(
            p.due(&snap(900, total, 14)),
            "several tenths at once: one line"
        );
        assert!(!p.due(&snap(950, total, 15)));
    }

    #[test]
    fn the_bar_draws_to_a_target_without_a_terminal() {
        for target in [ProgressDrawTarget::hidden(), ProgressDrawTarget::stderr()] {
            let bar = new_bar(target);
            draw(&bar, &snap(3 << 20, 10 << 20, 1));
            assert_eq!(bar.position(), 3 << 20);
            assert_eq!(bar.length(), Some(10 << 20));
            assert_eq!(bar.message(), "1 uploaded, 2 unchanged");
            // A run that writes more than it planned grows the bar instead of overflowing it.
            draw(&bar, &snap(12 << 20, 12 << 20, 2));
            bar.finish();
            assert!(bar.is_finished());
            assert_eq!(bar.length(), Some(12 << 20));
        }
    }
}
