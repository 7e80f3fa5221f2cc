//! The benchmark's MySQL client must stay out of the production binary:
//! nothing that `bulwark` depends on (in the lock file, which CI builds
//! with `--locked`) may reach `mysql_async`.
use std::collections::{BTreeMap, BTreeSet};

fn lock_file() -> toml::Table {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
    let text = std::fs::read_to_string(path).expect("reading Cargo.lock");
    text.parse().expect("parsing Cargo.lock")
}

/// Package name -> the names of its dependencies (every version merged:
/// a name reached at any version counts).
fn dependency_graph(lock: &toml::Table) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for package in lock["package"].as_array().expect("[[package]] entries") {
        let name = package["name"].as_str().expect("package name").to_string();
        let deps = graph.entry(name).or_default();
        for dep in package.get("dependencies").and_then(|d| d.as_array()).into_iter().flatten() {
            // "name", "name version" or "name version (source)".
            let dep = dep.as_str().expect("dependency string");
            deps.insert(dep.split(' ').next().unwrap_or(dep).to_string());
        }
    }
    graph
}

fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(graph.get(&name).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn the_bulwark_binary_does_not_depend_on_the_mysql_client() {
    let graph = dependency_graph(&lock_file());
    let bulwark = reachable(&graph, "bulwark");
    assert!(bulwark.contains("bulwark-db"), "the walk reaches bulwark's own crates: {bulwark:?}");
    assert!(!bulwark.contains("mysql_async"), "bulwark reaches mysql_async through its dependencies");
    assert!(!bulwark.contains("bulwark-dbbench"), "bulwark depends on the benchmark crate");
    assert!(reachable(&graph, "bulwark-dbbench").contains("mysql_async"), "the benchmark still has its client");
}
