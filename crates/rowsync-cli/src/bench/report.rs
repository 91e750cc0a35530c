//! The one report of `rowsync bench`: every figure beside its reference
//! and its target, as a terminal table or as JSON (`--json`).
//!
//! A figure is worth something only beside what it is compared with, taken
//! in the same run: absolute rates on a shared machine are noise, ratios are
//! not. So each figure carries its reference (a plain write of the same
//! rows, measured side by side) and the ratio, and the target it is held to.

use serde::Serialize;

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// `capture`, `sync`, `latency` or `direct`.
    pub section: &'static str,
    /// What was measured, in words.
    pub name: String,
    /// The server's database (`sqlite`, `postgres`, `mysql`), or `local`
    /// for what involves the replica file alone.
    pub store: String,
    /// Rows in the scenario (writes, for latency).
    pub rows: usize,
    pub value: f64,
    pub unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    /// `value / reference.value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Whether the target is met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

/// What a figure is compared with, measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Reference {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

/// The bound a figure is held to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The ratio to the reference is at least this.
    RatioAtLeast(f64),
    /// The value is at most this.
    AtMost(f64),
}

impl Figure {
    pub fn new(section: &'static str, store: &str, rows: usize, name: &str, value: f64, unit: &'static str) -> Figure {
        Figure {
            section,
            name: name.into(),
            store: store.into(),
            rows,
            value,
            unit,
            reference: None,
            ratio: None,
            target: None,
            met: None,
        }
    }

    /// Compared with `value` of `name`, in the same unit of throughput.
    pub fn against(mut self, name: &str, value: f64, unit: &'static str) -> Figure {
        self.ratio = Some(self.value / value);
        self.reference = Some(Reference { name: name.into(), value, unit });
        self.judge()
    }

    pub fn target(mut self, target: Target) -> Figure {
        self.target = Some(target);
        self.judge()
    }

    fn judge(mut self) -> Figure {
        self.met = match self.target {
            Some(Target::RatioAtLeast(bound)) => self.ratio.map(|ratio| ratio >= bound),
            Some(Target::AtMost(bound)) => Some(self.value <= bound),
            None => None,
        };
        self
    }
}

/// The machine a report was measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_mb: u64,
    pub os: String,
    pub sqlite: String,
}

impl Machine {
    pub fn this_one() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
            .map_or_else(|| std::env::consts::ARCH.to_string(), |(_, name)| name.trim().to_string());
        let memory_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines().find_map(|line| {
                    line.strip_prefix("MemTotal:").and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
                })
            })
            .map_or(0, |kb: u64| kb / 1024);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mb,
            os: std::env::consts::OS.into(),
            sqlite: rusqlite::version().into(),
        }
    }
}

/// Everything one `rowsync bench` measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub rowsync: &'static str,
    pub command: String,
    pub machine: Machine,
    pub figures: Vec<Figure>,
}

impl Report {
    /// Figures whose target is missed.
    pub fn missed(&self) -> usize {
        self.figures.iter().filter(|f| f.met == Some(false)).count()
    }

    /// The report as a terminal table.
    pub fn table(&self) -> String {
        let machine = &self.machine;
        let mut out = format!(
            "rowsync {} on {} ({} cores, {} MB, {}, SQLite {})\n$ {}\n\n",
            self.rowsync, machine.cpu, machine.cores, machine.memory_mb, machine.os, machine.sqlite, self.command
        );
        let header = ["section", "store", "rows", "figure", "value", "reference", "ratio", "target", ""];
        let rows: Vec<[String; 9]> = self
            .figures
            .iter()
            .map(|f| {
                [
                    f.section.to_string(),
                    f.store.clone(),
                    f.rows.to_string(),
                    f.name.clone(),
                    quantity(f.value, f.unit),
                    f.reference
                        .as_ref()
                        .map_or_else(String::new, |r| format!("{} {}", r.name, quantity(r.value, r.unit))),
                    f.ratio.map_or_else(String::new, |ratio| format!("{ratio:.2}x")),
                    match f.target {
                        Some(Target::RatioAtLeast(bound)) => format!(">= {bound:.2}x"),
                        Some(Target::AtMost(bound)) => format!("<= {}", quantity(bound, f.unit)),
                        None => String::new(),
                    },
                    match f.met {
                        Some(true) => "met".into(),
                        Some(false) => "MISSED".into(),
                        None => String::new(),
                    },
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut text = String::new();
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                // Numbers read best right-aligned.
                let right = matches!(i, 2 | 4 | 6);
                let pad = width - cell.chars().count();
                let (before, after) = if right { (pad, 0) } else { (0, pad) };
                text += &format!("{}{cell}{}  ", " ".repeat(before), " ".repeat(after));
            }
            text.trim_end().to_string() + "\n"
        };
        out += &line(&header.map(String::from));
        for row in &rows {
            out += &line(row);
        }
        let judged = self.figures.iter().filter(|f| f.met.is_some()).count();
        out += &format!("\n{} of {judged} targets met\n", judged - self.missed());
        out
    }
}

/// `value` with its unit, in a form that reads at a glance.
fn quantity(value: f64, unit: &str) -> String {
    if unit == "ms" || unit == "MB" || unit == "%" {
        format!("{value:.1} {unit}")
    } else {
        format!("{} {unit}", thousands(value.round() as u64))
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_is_judged_by_its_ratio_or_its_bound() {
        let push = Figure::new("sync", "sqlite", 10, "push", 30.0, "changes/s")
            .against("plain insert", 100.0, "rows/s")
            .target(Target::RatioAtLeast(0.5));
        assert_eq!((push.ratio, push.met), (Some(0.3), Some(false)));
        let latency = Figure::new("latency", "sqlite", 10, "median", 12.0, "ms").target(Target::AtMost(20.0));
        assert_eq!(latency.met, Some(true));
        assert_eq!(Figure::new("direct", "sqlite", 1, "x", 1.0, "rows/s").met, None);
    }

    #[test]
    fn the_table_shows_each_figure_beside_its_reference_and_counts_the_targets() {
        let report = Report {
            rowsync: "0.1.0",
            command: "rowsync bench".into(),
            machine: Machine { cpu: "cpu".into(), cores: 2, memory_mb: 1024, os: "linux".into(), sqlite: "3".into() },
            figures: vec![
                Figure::new("sync", "postgres", 100000, "push", 23456.0, "changes/s")
                    .against("plain batched insert", 234560.0, "rows/s")
                    .target(Target::RatioAtLeast(0.3)),
                Figure::new("latency", "sqlite", 200, "median", 7.24, "ms").target(Target::AtMost(20.0)),
            ],
        };
        let table = report.table();
        let cells = |what: &str| -> Vec<String> {
            let line = table.lines().find(|line| line.contains(what)).unwrap_or_else(|| panic!("{table}"));
            line.split("  ").map(str::trim).filter(|cell| !cell.is_empty()).map(String::from).collect()
        };
        let push = [
            "sync",
            "postgres",
            "100000",
            "push",
            "23,456 changes/s",
            "plain batched insert 234,560 rows/s",
            "0.10x",
            ">= 0.30x",
            "MISSED",
        ];
        assert_eq!(cells("push"), push, "{table}");
        assert_eq!(cells("median"), ["latency", "sqlite", "200", "median", "7.2 ms", "<= 20.0 ms", "met"], "{table}");
        assert!(table.ends_with("1 of 2 targets met\n"), "{table}");
    }
}
