//! The chaos report: each scenario's outcome saved as JSON, and the
//! markdown table rebuilt from every saved outcome.
use serde_json::{json, Value};
use std::path::Path;

/// One scenario's measurements (a row of the report).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub name: String,
    pub stack: String,
    pub faults: String,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub write_errors: u64,
    /// Errors of requests in flight at a kill -9.
    pub kill_errors: u64,
    pub acked: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub ryw_violations: u64,
    pub split_brain_terms: u64,
    pub terms: String,
    pub converged: bool,
    pub checksum: String,
    /// Worst failover over the primary faults (s): from the fault to the
    /// first acknowledged write that started after it.
    pub failover: Option<f64>,
    /// Worst election over the primary faults (s): from the fault to the
    /// first node seen as primary in a newer term (the monitor's view).
    pub election: Option<f64>,
    /// Longest time without any acknowledged write after the warmup (s).
    pub max_write_gap: f64,
    /// Floating address switches ([`crate::floating::Switch::to_json`]).
    pub floating: Vec<Value>,
    pub notes: Vec<String>,
    pub error_samples: Vec<String>,
    pub problems: Vec<String>,
}

impl Outcome {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "name": self.name, "stack": self.stack, "faults": self.faults, "seconds": self.seconds,
            "requests": self.requests, "errors": self.errors, "write_errors": self.write_errors, "kill_errors": self.kill_errors,
            "acked": self.acked, "lost": self.lost, "duplicates": self.duplicates,
            "ryw_violations": self.ryw_violations, "split_brain_terms": self.split_brain_terms,
            "terms": self.terms, "converged": self.converged, "checksum": self.checksum,
            "failover": self.failover, "election": self.election, "max_write_gap": self.max_write_gap,
            "floating": self.floating, "notes": self.notes,
            "error_samples": self.error_samples, "problems": self.problems,
        })
    }
}

fn fmt_s(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2} s")).unwrap_or_else(|| "–".into())
}

/// Save this outcome and rebuild the whole report from every saved one.
pub(crate) fn write_report(dir: &Path, o: &Outcome) {
    let results = dir.join("chaos-results");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join(format!("{}.json", o.name)), serde_json::to_string_pretty(&o.to_json()).unwrap())
        .unwrap();
    let mut all: Vec<Value> = std::fs::read_dir(&results)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    all.sort_by_key(|v: &Value| {
        (v["stack"].as_str().unwrap_or("") != "db", v["name"].as_str().unwrap_or("").to_string())
    });
    let md = render(&all) + &crate::floating::render(&all);
    std::fs::write(dir.join("chaos-report.md"), &md).unwrap();
    println!("\n{}{}", render(&[o.to_json()]), crate::floating::render(&[o.to_json()]));
    eprintln!("chaos: report in {}", dir.join("chaos-report.md").display());
}

/// The markdown report: one table row per scenario, then each scenario's
/// faults, notes and error kinds.
pub(crate) fn render(all: &[Value]) -> String {
    let mut s = String::from(
        "| scenario | stack | requests | errors (at a kill) | acked writes | lost | dup | RYW viol. | primaries/term | replicas | new primary | writes back | max write gap |\n\
         |---|---|--:|--:|--:|--:|--:|--:|---|---|--:|--:|--:|\n",
    );
    for v in all {
        let u = |k: &str| v[k].as_u64().unwrap_or(0);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} s |\n",
            v["name"].as_str().unwrap_or("?"),
            v["stack"].as_str().unwrap_or("?"),
            u("requests"),
            if u("kill_errors") > 0 {
                format!("{} ({})", u("errors"), u("kill_errors"))
            } else {
                u("errors").to_string()
            },
            u("acked"),
            u("lost"),
            u("duplicates"),
            u("ryw_violations"),
            if u("split_brain_terms") == 0 {
                "≤ 1 ✓".to_string()
            } else {
                format!("✗ {} terms", u("split_brain_terms"))
            },
            if v["converged"] == true { "identical ✓" } else { "✗ differ" },
            fmt_s(v["election"].as_f64()),
            fmt_s(v["failover"].as_f64()),
            v["max_write_gap"].as_f64().unwrap_or(0.0),
        ));
    }
    s.push('\n');
    for v in all {
        s.push_str(&format!(
            "- **{}** ({:.0} s): {}. Terms: {}.",
            v["name"].as_str().unwrap_or("?"),
            v["seconds"].as_f64().unwrap_or(0.0),
            v["faults"].as_str().unwrap_or(""),
            v["terms"].as_str().unwrap_or(""),
        ));
        for n in v["notes"].as_array().into_iter().flatten() {
            s.push_str(&format!(" {}.", n.as_str().unwrap_or("")));
        }
        let errs: Vec<&str> = v["error_samples"].as_array().into_iter().flatten().filter_map(|e| e.as_str()).collect();
        if !errs.is_empty() {
            s.push_str(&format!(" Errors: {}.", errs.join("; ")));
        }
        for p in v["problems"].as_array().into_iter().flatten() {
            s.push_str(&format!(" **FAILED:** {}.", p.as_str().unwrap_or("")));
        }
        s.push('\n');
    }
    s
}
