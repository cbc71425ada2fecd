//! Benchmark output: one JSON object per measurement (DESIGN.md "Benchmark
//! output"), printed as JSON lines with `--json` and as a table otherwise.

use serde_json::{Map, Value};

/// One measurement.
pub type Row = Map<String, Value>;

/// Build a row from key/value pairs.
#[macro_export]
macro_rules! row {
    ($($k:literal : $v:expr),* $(,)?) => {{
        let mut m = serde_json::Map::new();
        $( m.insert($k.to_string(), serde_json::json!($v)); )*
        m
    }};
}

fn cell(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                if f >= 1e6 {
                    format!("{:.3e}", f)
                } else if f >= 100.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f:.2}")
                }
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Print rows as JSON lines or as an aligned table.
pub fn print(rows: &[Row], json: bool) {
    if json {
        for r in rows {
            println!("{}", Value::Object(r.clone()));
        }
        return;
    }
    print!("{}", render(rows));
}

/// Rows as an aligned table, one line per row after a header line.
pub fn render(rows: &[Row]) -> String {
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        for k in r.keys() {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let cells: Vec<Vec<String>> =
        rows.iter().map(|r| cols.iter().map(|c| r.get(c).map(cell).unwrap_or_default()).collect()).collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].len()).max().unwrap_or(0).max(c.len()))
        .collect();
    let mut out = String::new();
    let mut line = |vals: Vec<&str>| {
        let s: Vec<String> = vals.iter().zip(&widths).map(|(v, w)| format!("{v:>w$}")).collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(cols.iter().map(String::as_str).collect());
    for r in &cells {
        line(r.iter().map(String::as_str).collect());
    }
    out
}
