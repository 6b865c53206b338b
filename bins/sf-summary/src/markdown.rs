//! The report as GitHub-flavoured Markdown, fitted to a byte budget.
//!
//! GitHub refuses a step summary over 1 MiB, and check-run text over 65,535 characters. Rather than
//! cut the text (which can leave a table or a link half written), [`render_fitting`] renders whole
//! documents with fewer rows per table until one fits, failed cells kept first, and says how many
//! rows were left out.

use std::fmt::Write as _;

use sf_core::record::Status;

use crate::report::{CellReport, Failure, Report, StepOutcome, Totals};

/// How long one error message may be in the summary; the JSON has it whole.
const MESSAGE_LIMIT: usize = 400;
/// CDN links shown per row.
const LINKS_PER_ROW: usize = 3;

/// A rendered summary and what it left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub markdown: String,
    pub cells_shown: usize,
    pub cells_omitted: usize,
}

/// Render the largest document (most rows per table) that fits in `budget` bytes.
pub fn render_fitting(report: &Report, title: &str, budget: usize) -> Rendered {
    let most = report
        .pipelines
        .iter()
        .map(|p| p.cells.len())
        .max()
        .unwrap_or(0);
    let full = render(report, title, most);
    if full.len() <= budget {
        return Rendered {
            markdown: full,
            cells_shown: report.totals.cells as usize,
            cells_omitted: 0,
        };
    }
    // Largest row cap that fits, by bisection: the size grows with the cap.
    let (mut lo, mut hi) = (0usize, most);
    let mut best: Option<String> = None;
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let doc = render(report, title, mid);
        if doc.len() <= budget {
            lo = mid;
            best = Some(doc);
        } else {
            hi = mid - 1;
        }
    }
    let doc = match best {
        Some(d) => d,
        None => render(report, title, 0),
    };
    let shown: usize = report.pipelines.iter().map(|p| p.cells.len().min(lo)).sum();
    if doc.len() <= budget {
        return Rendered {
            markdown: doc,
            cells_shown: shown,
            cells_omitted: report.totals.cells as usize - shown,
        };
    }
    let minimal = minimal(report, title);
    if minimal.len() <= budget {
        Rendered {
            markdown: minimal,
            cells_shown: 0,
            cells_omitted: report.totals.cells as usize,
        }
    } else {
        Rendered {
            markdown: String::new(),
            cells_shown: 0,
            cells_omitted: report.totals.cells as usize,
        }
    }
}

/// The title and totals alone, for when not even empty tables fit.
fn minimal(report: &Report, title: &str) -> String {
    let mut out = format!(
        "## {}\n\n{}\n\n{}",
        escape(title),
        totals_line(&report.totals),
        left_out_line(report)
    );
    out.push_str("_The per-cell tables do not fit in this summary; `sf-summary --format json` lists every cell._\n");
    out
}

/// Result files the summary could not use, when there are any (the warnings name each).
fn left_out_line(report: &Report) -> String {
    match report.files_left_out {
        0 => String::new(),
        n => format!(
            "**{n} result {} left out** (not JSON, another schema version, or fields that do not parse): the warnings name {}.\n\n",
            plural(n, "file", "files"),
            plural(n, "it", "them")
        ),
    }
}

/// The whole document with at most `cap` rows per pipeline table.
pub fn render(report: &Report, title: &str, cap: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## {}\n", escape(title));
    if report.totals.cells == 0 && report.run_steps.is_empty() {
        out.push_str("No result records were found.\n");
        out.push_str(&left_out_line(report));
        return out;
    }
    let _ = writeln!(out, "{}\n", totals_line(&report.totals));
    out.push_str(&left_out_line(report));
    for p in &report.pipelines {
        let shown = &p.cells[..p.cells.len().min(cap)];
        let omitted = p.cells.len() - shown.len();
        let _ = writeln!(
            out,
            "### Pipeline `{}`: {}\n",
            code(&p.pipeline),
            count(&p.totals)
        );
        out.push_str("| | cell | Slurm | toolchain | arch | build | size | sha256 | signed by | CDN | duration |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for c in shown {
            row(&mut out, c);
        }
        if omitted > 0 {
            let _ = writeln!(
                out,
                "\n_{omitted} more {} not shown, to stay within GitHub's summary size limit; `sf-summary --format json` lists them all._",
                plural(omitted as u64, "cell", "cells")
            );
        }
        out.push('\n');
        let skipped: Vec<(&CellReport, &crate::report::Note)> = shown
            .iter()
            .flat_map(|c| c.skipped.iter().map(move |n| (c, n)))
            .collect();
        if !skipped.is_empty() {
            out.push_str("#### Skipped\n\n");
            for (c, n) in skipped {
                let _ = writeln!(
                    out,
                    "- `{}` {}: {}",
                    code(&c.id),
                    code_span(&n.step),
                    escape(&shorten(&n.reason))
                );
            }
            out.push('\n');
        }
        let failures: Vec<(&CellReport, &Failure)> = shown
            .iter()
            .flat_map(|c| c.failures.iter().map(move |f| (c, f)))
            .collect();
        if !failures.is_empty() {
            out.push_str("#### Failures\n\n");
            for (c, f) in failures {
                failure(&mut out, &c.id, f);
            }
            out.push('\n');
        }
    }
    if !report.run_steps.is_empty() {
        out.push_str(
            "### Steps for the whole run\n\n| | step | duration | note |\n|---|---|---|---|\n",
        );
        for s in &report.run_steps {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                icon(s.status),
                code_span(&s.step),
                duration(s.duration_ms),
                step_note(s)
            );
        }
        out.push('\n');
        for s in &report.run_steps {
            if let Some(f) = &s.error {
                failure(&mut out, "run", f);
            }
        }
    }
    out
}

fn step_note(s: &StepOutcome) -> String {
    match (&s.reason, &s.error) {
        (_, Some(f)) => escape(&shorten(&f.message)),
        (Some(r), None) => escape(&shorten(r)),
        (None, None) => String::new(),
    }
}

fn row(out: &mut String, c: &CellReport) {
    let dash = || "-".to_string();
    let links: Vec<String> = c
        .cdn_urls
        .iter()
        .take(LINKS_PER_ROW)
        .map(|u| link(u))
        .collect();
    let more = c.cdn_urls.len().saturating_sub(LINKS_PER_ROW);
    let mut cdn = links.join("<br>");
    if more > 0 {
        let _ = write!(cdn, "<br>+{more} more");
    }
    let _ = writeln!(
        out,
        "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        icon(c.status),
        code(&c.id),
        c.slurm_version.as_deref().map(escape).unwrap_or_else(dash),
        c.toolchain.as_deref().map(escape).unwrap_or_else(dash),
        c.arch.as_deref().map(escape).unwrap_or_else(dash),
        c.build.as_deref().map(escape).unwrap_or_else(dash),
        c.size.map(bytes).unwrap_or_else(dash),
        c.sha256
            .as_deref()
            .map(|h| format!("`{}…`", code(h.get(..12).unwrap_or(h))))
            .unwrap_or_else(dash),
        c.signed_by
            .as_deref()
            .map(|f| format!("`{}`", code(f)))
            .unwrap_or_else(dash),
        if cdn.is_empty() { dash() } else { cdn },
        duration(c.duration_ms),
    );
}

fn failure(out: &mut String, id: &str, f: &Failure) {
    let _ = writeln!(
        out,
        "- ❌ `{}` {} (exit {}): {}",
        code(id),
        code_span(&f.step),
        f.exit_code,
        escape(&shorten(&f.message))
    );
    for cause in f.chain.iter().take(5) {
        let _ = writeln!(out, "  - caused by: {}", escape(&shorten(cause)));
    }
    if let Some(logs) = &f.logs {
        let _ = writeln!(out, "  - logs: {}", code_span(logs));
    }
}

fn totals_line(t: &Totals) -> String {
    let mut parts = vec![format!("**{}**", count(t))];
    parts.push(format!("✅ {} succeeded", t.succeeded));
    parts.push(format!("❌ {} failed", t.failed));
    parts.push(format!("⏭️ {} skipped", t.skipped));
    parts.push(bytes(t.bytes));
    parts.push(format!("{} of step time", duration(t.duration_ms)));
    parts.join(" · ")
}

fn count(t: &Totals) -> String {
    format!("{} {}", t.cells, plural(t.cells, "cell", "cells"))
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn icon(s: Status) -> &'static str {
    match s {
        Status::Success => "✅",
        Status::Failed => "❌",
        Status::Skipped => "⏭️",
    }
}

/// A Markdown link whose text is the URL's last path segment.
fn link(url: &str) -> String {
    let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
    // Parentheses and spaces would end the link target early; percent-encode them.
    let target = url
        .replace(' ', "%20")
        .replace('(', "%28")
        .replace(')', "%29");
    format!("[{}]({})", escape(name), target)
}

/// Text safe inside a table cell or list item: no line breaks, no pipes, no HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' | '\t' => out.push(' '),
            '*' | '_' | '[' | ']' | '`' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text for inside a code span: backticks would end it, pipes would end the table cell.
fn code(s: &str) -> String {
    s.replace('`', "'")
        .replace('|', "¦")
        .replace(['\n', '\r'], " ")
}

fn code_span(s: &str) -> String {
    format!("`{}`", code(&shorten(s)))
}

/// At most [`MESSAGE_LIMIT`] characters, cut at a character boundary with an ellipsis.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(MESSAGE_LIMIT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Sizes in binary units, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `850ms`, `12.3s`, `4m 05s`, `2h 03m`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_durations() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_340), "12.3s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(duration(7_380_000), "2h 03m");
    }

    #[test]
    fn escaping_keeps_tables_whole() {
        assert_eq!(escape("a|b\nc <script>"), "a\\|b c &lt;script&gt;");
        assert_eq!(code("x`y|z"), "x'y¦z");
        let long = "é".repeat(MESSAGE_LIMIT + 10);
        assert_eq!(shorten(&long).chars().count(), MESSAGE_LIMIT + 1);
    }
}
