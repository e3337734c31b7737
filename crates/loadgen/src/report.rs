//! Figures: collected by the scenarios, printed as a table and written as JSON. A figure may
//! have a raw-baseline counterpart (then its ratio is shown) and a target (then whether it is
//! met is shown). Nothing here fails a run: speed is reported, never asserted.

use std::{io::Write as _, path::Path};

use hdrhistogram::Histogram;
use serde::Serialize;

/// What a figure is compared with.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// Confab's figure is at least this.
    AtLeast { value: f64 },
    /// Confab's figure is at most this.
    AtMost { value: f64 },
    /// Confab's figure over raw's is at least this.
    RatioAtLeast { value: f64 },
    /// Confab's figure over raw's is at most this.
    RatioAtMost { value: f64 },
}

impl Target {
    fn describe(&self, unit: &str) -> String {
        match self {
            Self::AtLeast { value } => format!(">= {} {unit}", number(*value)),
            Self::AtMost { value } => format!("<= {} {unit}", number(*value)),
            Self::RatioAtLeast { value } => format!(">= {value}x raw"),
            Self::RatioAtMost { value } => format!("<= {value}x raw"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: String,
    pub figure: String,
    pub unit: String,
    pub confab: Option<f64>,
    pub raw: Option<f64>,
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub met: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Free-form facts about the runs (sizes, checks passed, CPU split).
    pub notes: Vec<String>,
}

/// Figures of one scenario run, by server, before they are paired up.
#[derive(Debug, Default, Clone)]
pub struct Measured {
    pub values: Vec<(String, String, f64)>,
}

impl Measured {
    pub fn put(&mut self, figure: &str, unit: &str, value: f64) {
        self.values.push((figure.into(), unit.into(), value));
    }

    /// Records a histogram (in microseconds) as p50, p99 and max, in milliseconds.
    pub fn put_latency(&mut self, figure: &str, histogram: &Histogram<u64>) {
        if histogram.is_empty() {
            return;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        self.put(
            &format!("{figure} p50"),
            "ms",
            ms(histogram.value_at_quantile(0.50)),
        );
        self.put(
            &format!("{figure} p99"),
            "ms",
            ms(histogram.value_at_quantile(0.99)),
        );
        self.put(&format!("{figure} max"), "ms", ms(histogram.max()));
    }

    fn get(&self, figure: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|(f, _, _)| f == figure)
            .map(|(_, _, v)| *v)
    }
}

impl Report {
    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("loadgen: {note}");
        self.notes.push(note);
    }

    /// Adds the figures of one scenario: Confab's (and raw's, when measured), with the targets
    /// `targets` names by figure.
    pub fn add(
        &mut self,
        scenario: &str,
        confab: Option<&Measured>,
        raw: Option<&Measured>,
        targets: &[(&str, Target)],
    ) {
        let names: Vec<(String, String)> = confab
            .or(raw)
            .map(|m| {
                m.values
                    .iter()
                    .map(|(f, u, _)| (f.clone(), u.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (figure, unit) in names {
            let c = confab.and_then(|m| m.get(&figure));
            let r = raw.and_then(|m| m.get(&figure));
            let ratio = match (c, r) {
                (Some(c), Some(r)) if r > 0.0 => Some(c / r),
                _ => None,
            };
            let target = targets.iter().find(|(f, _)| *f == figure).map(|(_, t)| *t);
            let met = target.and_then(|t| match t {
                Target::AtLeast { value } => c.map(|c| c >= value),
                Target::AtMost { value } => c.map(|c| c <= value),
                Target::RatioAtLeast { value } => ratio.map(|r| r >= value),
                Target::RatioAtMost { value } => ratio.map(|r| r <= value),
            });
            self.figures.push(Figure {
                scenario: scenario.into(),
                figure,
                unit,
                confab: c,
                raw: r,
                ratio,
                target,
                met,
            });
        }
    }

    pub fn print_table(&self) {
        if self.figures.is_empty() {
            return;
        }
        let rows: Vec<[String; 7]> = self
            .figures
            .iter()
            .map(|f| {
                [
                    f.scenario.clone(),
                    format!("{} ({})", f.figure, f.unit),
                    f.confab.map(number).unwrap_or_else(|| "-".into()),
                    f.raw.map(number).unwrap_or_else(|| "-".into()),
                    f.ratio
                        .map(|r| format!("{r:.2}x"))
                        .unwrap_or_else(|| "-".into()),
                    f.target
                        .map(|t| t.describe(&f.unit))
                        .unwrap_or_else(|| "-".into()),
                    match f.met {
                        Some(true) => "yes".into(),
                        Some(false) => "NO".into(),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        let header = [
            "scenario", "figure", "confab", "raw", "ratio", "target", "met",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = std::io::stdout().lock();
        let line = |out: &mut std::io::StdoutLock, cells: &[String]| {
            let cells: Vec<String> = cells
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    // Numbers (confab, raw, ratio) right-aligned, words left.
                    if (2..5).contains(&i) {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        };
        line(&mut out, &header.map(String::from));
        let _ = writeln!(
            out,
            "|{}|",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &rows {
            line(&mut out, row);
        }
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string(self)?;
        if path == Path::new("-") {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n")?;
        }
        Ok(())
    }
}

/// A figure as people read it: integers with thousands separators, small values with decimals.
fn number(value: f64) -> String {
    if value.abs() >= 1000.0 {
        let digits = format!("{:.0}", value.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if value < 0.0 { format!("-{out}") } else { out }
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records a duration in microseconds, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.max(1));
}
