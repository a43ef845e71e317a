//! The bench's output: a table printed row by row as figures come in (so a
//! long run shows progress), targets judged beside the figures they judge,
//! and every figure gathered into one JSON line printed last.

use std::fmt::{self, Write as _};
use std::io::Write as _;

/// A JSON value, written by hand: the bench needs no serde for one line.
pub enum Json {
    Num(f64),
    Str(String),
    Bool(bool),
    Obj(Vec<(String, Json)>),
    Arr(Vec<Json>),
}

impl Json {
    fn entry(&mut self, key: &str) -> &mut Json {
        let Json::Obj(fields) = self else {
            unreachable!("figures are only put into objects")
        };
        let at = match fields.iter().position(|(k, _)| k == key) {
            Some(at) => at,
            None => {
                fields.push((key.to_owned(), Json::Obj(Vec::new())));
                fields.len() - 1
            }
        };
        &mut fields[at].1
    }

    /// Sets the value at a dotted path (`"contended.tasks.ratio"`), making
    /// the objects on the way.
    pub fn put(&mut self, path: &str, value: impl Into<Json>) {
        let mut at = self;
        for key in path.split('.') {
            at = at.entry(key);
        }
        *at = value.into();
    }
}

impl From<f64> for Json {
    fn from(v: f64) -> Self {
        Json::Num(v)
    }
}
impl From<u64> for Json {
    fn from(v: u64) -> Self {
        Json::Num(v as f64)
    }
}
impl From<usize> for Json {
    fn from(v: usize) -> Self {
        Json::Num(v as f64)
    }
}
impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::Str(v.to_owned())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Self {
        Json::Str(v)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // JSON has no NaN: a figure that could not be measured is null.
            Json::Num(v) if !v.is_finite() => f.write_str("null"),
            Json::Num(v) if v.fract() == 0.0 && v.abs() < 1e15 => write!(f, "{}", *v as i64),
            Json::Num(v) => write!(f, "{}", (v * 1e4).round() / 1e4),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Str(s) => {
                f.write_char('"')?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('"')
            }
            Json::Arr(items) => {
                f.write_char('[')?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
            Json::Obj(fields) => {
                f.write_char('{')?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{}:{v}", Json::Str(k.clone()))?;
                }
                f.write_char('}')
            }
        }
    }
}

/// A target judged against a figure.
pub struct Target {
    pub name: String,
    pub value: f64,
    /// Human form of the bound, e.g. `>= 0.95`.
    pub bound: String,
    pub pass: bool,
}

impl Target {
    /// Passes when `value >= min` (a figure that could not be measured
    /// misses).
    pub fn at_least(
        name: impl Into<String>,
        value: f64,
        min: f64,
        bound: impl Into<String>,
    ) -> Self {
        Target {
            name: name.into(),
            value,
            bound: bound.into(),
            pass: value >= min,
        }
    }

    /// Passes when `value <= max`.
    pub fn at_most(
        name: impl Into<String>,
        value: f64,
        max: f64,
        bound: impl Into<String>,
    ) -> Self {
        Target {
            name: name.into(),
            value,
            bound: bound.into(),
            pass: value <= max,
        }
    }
}

pub struct Report {
    pub json: Json,
    targets: Vec<Target>,
}

/// Column widths of a row: metric, value, target.
const METRIC: usize = 34;
const VALUE: usize = 14;
const TARGET: usize = 22;

impl Report {
    pub fn new() -> Self {
        Report {
            json: Json::Obj(Vec::new()),
            targets: Vec::new(),
        }
    }

    pub fn heading(&self, text: &str) {
        println!("\n{text}");
        println!("{}", "-".repeat(text.len()));
    }

    /// A heading followed by the column names of [`row`](Self::row)s.
    pub fn section(&self, text: &str) {
        self.heading(text);
        self.columns();
    }

    pub fn columns(&self) {
        print_row("", "", "target", "", "notes");
    }

    pub fn line(&self, text: &str) {
        if text.is_empty() {
            println!();
        } else {
            println!("  {text}");
        }
        flush();
    }

    /// A figure with a note beside it (a reference, a ratio), no target.
    pub fn row(&self, metric: &str, value: &str, note: &str) {
        print_row(metric, value, "", "", note);
    }

    /// A figure judged against a target: PASS or MISS beside it, and the
    /// target kept for the summary and the JSON.
    pub fn judged(&mut self, metric: &str, value: &str, note: &str, target: Target) {
        let verdict = if target.pass { "PASS" } else { "MISS" };
        print_row(metric, value, &target.bound, verdict, note);
        self.targets.push(target);
    }

    /// The summary of every target, then the JSON line (the last line of
    /// stdout, for scripts).
    pub fn finish(mut self, elapsed_s: f64) {
        let passed = self.targets.iter().filter(|t| t.pass).count();
        self.heading(&format!(
            "Targets: {passed} PASS, {} MISS",
            self.targets.len() - passed
        ));
        for t in &self.targets {
            let verdict = if t.pass { "PASS" } else { "MISS" };
            println!(
                "  {verdict}  {:<60} {:>10}  {}",
                t.name,
                short(t.value),
                t.bound
            );
        }
        println!("\n(finished in {elapsed_s:.1} s)");
        let targets = self
            .targets
            .iter()
            .map(|t| {
                let mut o = Json::Obj(Vec::new());
                o.put("name", t.name.as_str());
                o.put("value", t.value);
                o.put("bound", t.bound.as_str());
                o.put("pass", t.pass);
                o
            })
            .collect();
        self.json.put("targets", Json::Arr(targets));
        self.json.put("summary.passed", passed);
        self.json.put("summary.missed", self.targets.len() - passed);
        self.json.put("summary.elapsed_s", elapsed_s);
        println!("{}", self.json);
        flush();
    }
}

fn print_row(metric: &str, value: &str, target: &str, verdict: &str, note: &str) {
    let row =
        format!("  {metric:<METRIC$} {value:>VALUE$}   {target:<TARGET$} {verdict:<4}  {note}");
    println!("{}", row.trim_end());
    flush();
}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// A number in at most 4 significant digits, for the summary column.
pub fn short(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    let a = v.abs();
    if a >= 1000.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A duration in microseconds, shown in us or ms.
pub fn us(v: f64) -> String {
    if !v.is_finite() {
        "n/a".to_owned()
    } else if v >= 10_000.0 {
        format!("{:.1} ms", v / 1e3)
    } else {
        format!("{v:.0} us")
    }
}

/// A rate, with a thousands separator.
pub fn rate(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
