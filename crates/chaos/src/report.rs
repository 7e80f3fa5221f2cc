//! The chaos report: each scenario's outcome saved as JSON, and the
//! markdown table rebuilt from every saved outcome.
use crate::scenario::Outcome;
use serde_json::Value;
use std::path::Path;

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
