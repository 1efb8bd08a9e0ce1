//! The machine-readable form of a benchmark figure, shared by every benchmark.
//!
//! A benchmark measures opstore against a baseline doing the same work in the
//! same run (a raw driver, a hand-written query, a plain map) and reports each
//! measurement as a [`Figure`]: both values, their ratio, and the goal the ratio
//! (or the value itself) is held to. [`report`] prints each figure twice: a line
//! for people and a `BENCH {json}` line that `cargo xtask bench` collects into
//! `docs/performance.md`.
//!
//! ```
//! use opstore_testkit::bench::{Better, Figure, Goal};
//!
//! let f = Figure::new("memory", "get by id", "ns/op", 180.0, "HashMap + clone", 100.0)
//!     .goal(Goal::ratio(Better::Lower, 2.0));
//! assert!(f.met);
//! let line = f.bench_line();
//! assert!(line.starts_with("BENCH {"));
//! assert_eq!(Figure::parse_line(&line), Some(f));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// The prefix of a figure's machine-readable line.
pub const LINE_PREFIX: &str = "BENCH ";

/// Which direction of a ratio or value is the good one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Smaller is better (times, latencies).
    Lower,
    /// Larger is better (throughput, speed-ups).
    Higher,
}

/// What a goal's bound is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GoalOn {
    /// The ratio opstore / baseline.
    Ratio,
    /// opstore's value itself, in the figure's unit (an absolute goal).
    Value,
}

/// The bound a figure is held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    /// The goal as people read it, e.g. `ratio <= 1.05`.
    pub text: String,
    /// The bound.
    pub bound: f64,
    /// Whether the bound applies to the ratio or to the value.
    pub on: GoalOn,
    /// Which side of the bound meets the goal.
    pub better: Better,
}

impl Goal {
    /// A bound on the ratio opstore / baseline.
    pub fn ratio(better: Better, bound: f64) -> Goal {
        let op = match better {
            Better::Lower => "<=",
            Better::Higher => ">=",
        };
        Goal {
            text: format!("ratio {op} {bound}"),
            bound,
            on: GoalOn::Ratio,
            better,
        }
    }

    /// A bound on opstore's value itself, in `unit`.
    pub fn value(better: Better, bound: f64, unit: &str) -> Goal {
        let op = match better {
            Better::Lower => "<=",
            Better::Higher => ">=",
        };
        Goal {
            text: format!("value {op} {bound} {unit}"),
            bound,
            on: GoalOn::Value,
            better,
        }
    }

    /// Whether `x` is on the good side of the bound (inclusive).
    pub fn holds(&self, x: f64) -> bool {
        match self.better {
            Better::Lower => x <= self.bound,
            Better::Higher => x >= self.bound,
        }
    }
}

/// One measurement of opstore against its baseline from the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The benchmark group: `memory`, `postgres`, `mongo`, `scylla`, `processors`, `jobs`.
    pub group: String,
    /// What was measured, e.g. `get by id`.
    pub scenario: String,
    /// opstore's value, in `unit`.
    pub value: f64,
    /// The unit of `value` and `baseline_value`, e.g. `us/op` or `events/s`.
    pub unit: String,
    /// What opstore is compared with, e.g. `hand-written sqlx`.
    pub baseline: String,
    /// The baseline's value, in `unit`.
    pub baseline_value: f64,
    /// `value / baseline_value`.
    pub ratio: f64,
    /// Which direction of the ratio is better: `lower` for times, `higher` for rates.
    pub better: Better,
    /// The goal, if the scenario has one.
    pub goal: Option<Goal>,
    /// Whether the goal is met (`true` when there is no goal).
    pub met: bool,
    /// Extra detail for people: spread over rounds, sizes, absolute figures.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Figure {
    /// A figure without a goal. Whether lower or higher is better follows from
    /// the unit: rates (`/s`) are better higher, everything else lower.
    pub fn new(
        group: &str,
        scenario: &str,
        unit: &str,
        value: f64,
        baseline: &str,
        baseline_value: f64,
    ) -> Figure {
        let better = if unit.ends_with("/s") {
            Better::Higher
        } else {
            Better::Lower
        };
        Figure {
            group: group.to_owned(),
            scenario: scenario.to_owned(),
            value,
            unit: unit.to_owned(),
            baseline: baseline.to_owned(),
            baseline_value,
            ratio: value / baseline_value,
            better,
            goal: None,
            met: true,
            detail: String::new(),
        }
    }

    /// Overrides which direction of the ratio is better.
    pub fn better(mut self, better: Better) -> Figure {
        self.better = better;
        self
    }

    /// Overrides the ratio, for scenarios that take the median of per-round
    /// ratios rather than the ratio of medians.
    pub fn with_ratio(mut self, ratio: f64) -> Figure {
        self.ratio = ratio;
        self.met = self.goal_met();
        self
    }

    /// Sets the goal and whether it is met.
    pub fn goal(mut self, goal: Goal) -> Figure {
        self.goal = Some(goal);
        self.met = self.goal_met();
        self
    }

    /// Sets the detail shown to people.
    pub fn detail(mut self, detail: impl Into<String>) -> Figure {
        self.detail = detail.into();
        self
    }

    fn goal_met(&self) -> bool {
        match &self.goal {
            None => true,
            Some(goal) => match goal.on {
                GoalOn::Ratio => goal.holds(self.ratio),
                GoalOn::Value => goal.holds(self.value),
            },
        }
    }

    /// The machine-readable line: `BENCH ` followed by the figure as one-line JSON.
    pub fn bench_line(&self) -> String {
        // A figure holds only strings, numbers and booleans: serializing cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{LINE_PREFIX}{json}")
    }

    /// The figure in a line of output, if the line is a `BENCH` line.
    pub fn parse_line(line: &str) -> Option<Figure> {
        let json = line.trim().strip_prefix(LINE_PREFIX)?;
        serde_json::from_str(json).ok()
    }
}

impl fmt::Display for Figure {
    /// The line for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{:<28} opstore {:>12.3} {}  {} {:>12.3}  ratio {:.3} ({} is better)",
            self.group,
            self.scenario,
            self.value,
            self.unit,
            self.baseline,
            self.baseline_value,
            self.ratio,
            match self.better {
                Better::Lower => "lower",
                Better::Higher => "higher",
            }
        )?;
        if let Some(goal) = &self.goal {
            let verdict = if self.met { "met" } else { "NOT met" };
            write!(f, "  goal {}: {verdict}", goal.text)?;
        }
        if !self.detail.is_empty() {
            write!(f, "\n    {}", self.detail)?;
        }
        Ok(())
    }
}

/// Prints each figure for people and as a `BENCH` line.
pub fn report(figures: &[Figure]) {
    for figure in figures {
        println!("{figure}");
        println!("{}", figure.bench_line());
    }
}

/// How big a benchmark run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// The sizes and round counts the goals were set with.
    Full,
    /// Fewer rounds and smaller sizes, every scenario still run: what
    /// `cargo xtask bench` uses so the whole run fits in ten minutes on two cores.
    Quick,
    /// The smallest sizes that still run every scenario once, for tests of the
    /// output: the figures mean nothing.
    Smoke,
}

impl Scale {
    /// `Quick` when `OPSTORE_BENCH_QUICK` is set to anything but empty or `0`
    /// (`smoke` selects `Smoke`), else `Full`.
    pub fn from_env() -> Scale {
        match std::env::var("OPSTORE_BENCH_QUICK") {
            Ok(v) if v == "smoke" => Scale::Smoke,
            Ok(v) if !v.is_empty() && v != "0" => Scale::Quick,
            _ => Scale::Full,
        }
    }

    /// The size or count for this scale.
    pub fn pick<T>(self, full: T, quick: T, smoke: T) -> T {
        match self {
            Scale::Full => full,
            Scale::Quick => quick,
            Scale::Smoke => smoke,
        }
    }
}

/// The median of some samples (`NaN` when there are none).
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}

/// Why a benchmark run stopped. Any error converts into it with `?`, keeping
/// its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError {
    message: String,
}

impl BenchError {
    /// An error with this message.
    pub fn msg(message: impl Into<String>) -> BenchError {
        BenchError {
            message: message.into(),
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for BenchError {
    fn from(e: E) -> BenchError {
        BenchError {
            message: e.to_string(),
        }
    }
}

/// The result of a benchmark step.
pub type BenchResult<T> = Result<T, BenchError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_better_higher_and_its_goal_is_judged_on_the_ratio() {
        let f = Figure::new("jobs", "worker", "jobs/s", 900.0, "apalis", 1000.0)
            .goal(Goal::ratio(Better::Higher, 2.0));
        assert_eq!(f.better, Better::Higher);
        assert!(!f.met);
    }

    #[test]
    fn a_value_goal_is_judged_on_the_value() {
        let f = Figure::new("postgres", "feed p99", "ms", 8.0, "insert p99", 2.0)
            .goal(Goal::value(Better::Lower, 10.0, "ms"));
        assert!(f.met);
    }

    #[test]
    fn other_lines_are_not_figures() {
        assert_eq!(Figure::parse_line("memory bench: 100000 items"), None);
        assert_eq!(Figure::parse_line("BENCH not json"), None);
    }
}
