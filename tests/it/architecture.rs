//! The shape of the code, checked: the module graph of `src/` is a tree-like DAG (no cycle),
//! and the layers that talk to vendors and disks know nothing of the terminal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The source text of the file at `path`, comments removed.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Top-level module → its source text (a directory module's files joined), comments removed.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("a name")
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            out.entry(top).or_default().push_str(&code_of(&path));
        }
    }
    out
}

/// The top-level modules a source text names through `crate::`.
fn uses(code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            // `crate::{a, b::c}`: every top-level name in the group.
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or(""))
                .collect(),
            None => vec![
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or(""),
            ],
        };
        found.extend(
            names
                .into_iter()
                .filter(|n| known.contains(*n))
                .map(str::to_string),
        );
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(name, code)| {
            let mut deps = uses(code, &known);
            deps.remove(name);
            (name.clone(), deps)
        })
        .collect()
}

/// A cycle in `g`, if there is one, as the path that closes it.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    // The check sees the modules it must (a broken scan would pass vacuously).
    for m in [
        "api",
        "commands",
        "config",
        "pipeline",
        "provider",
        "scheduler",
    ] {
        assert!(g.contains_key(m), "module {m} not found: {g:?}");
    }
    assert!(g["provider"].contains("api") && g["commands"].contains("pipeline"));
    if let Some(cycle) = find_cycle(&g) {
        panic!("module cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g = graph();
    g.get_mut("api").expect("api").insert("config".into());
    let cycle = find_cycle(&g).expect("config → api → config");
    assert!(cycle.contains(&"api".to_string()) && cycle.contains(&"config".to_string()));
}

#[test]
fn the_http_clients_decoders_and_policy_know_nothing_of_the_terminal() {
    let mods = modules();
    let layers = [
        "api",
        "provider",
        "download",
        "scheduler",
        "transfer",
        "ratelimit",
        "retry",
        "state",
        "lock",
        "naming",
        "ids",
        "error",
    ];
    for name in layers {
        let code = mods
            .get(name)
            .unwrap_or_else(|| panic!("module {name} not found"));
        for forbidden in ["crate::progress", "indicatif", "eprintln!", "println!"] {
            assert!(
                !code.contains(forbidden),
                "{name} uses {forbidden}: report through `log` instead"
            );
        }
    }
}

/// The module graph as ARCHITECTURE.md draws it: in its "module graph" block, each line
/// `a ─► b, c` says that `a` uses `b` and `c` (and nothing else of the crate's; a module that
/// uses nothing has a line `a ─► ·`).
fn drawn_graph() -> BTreeMap<String, BTreeSet<String>> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("read ARCHITECTURE.md");
    let block = doc
        .split("<!-- module graph: checked by tests/it/architecture.rs -->")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("ARCHITECTURE.md has the checked module graph block");
    let mut drawn: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in block.lines() {
        let Some((from, to)) = line.split_once('─') else {
            continue;
        };
        let to = to.trim_start_matches(['─', '►', ' ']);
        let deps = to
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(str::trim)
            .filter(|d| !d.is_empty() && *d != "·")
            .map(|d| match from.trim().strip_prefix("download::") {
                // Inside the directory, siblings are named alone.
                Some(_) => format!("download::{d}"),
                None => d.to_string(),
            });
        drawn
            .entry(from.trim().to_string())
            .or_default()
            .extend(deps);
    }
    drawn
}

/// The modules inside `src/download/` (`download::send`, …) → those of them each uses through
/// `super::` (the directory's `mod.rs`, which holds them all together, is left out).
fn download_graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/download");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("read src/download") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|n| n.to_str()).expect("a name");
        if name != "mod" && path.extension().is_some_and(|e| e == "rs") {
            let code = code_of(&path);
            files.insert(
                name.to_string(),
                code.replace("crate::download::", "super::"),
            );
        }
    }
    let known: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(name, code)| {
            let mut deps = uses(&code.replace("super::", "crate::"), &known);
            deps.remove(name);
            let prefixed = |n: &String| format!("download::{n}");
            (prefixed(name), deps.iter().map(prefixed).collect())
        })
        .collect()
}

/// Where the drawn graph and the code's differ, one line each.
fn differences(
    code: &BTreeMap<String, BTreeSet<String>>,
    drawn: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (module, deps) in code {
        match drawn.get(module) {
            None => wrong.push(format!("{module} is not drawn (it uses {deps:?})")),
            Some(d) if d != deps => wrong.push(format!(
                "{module}: drawn using {d:?}, the code uses {deps:?}"
            )),
            Some(_) => {}
        }
    }
    for module in drawn.keys().filter(|m| !code.contains_key(*m)) {
        wrong.push(format!("{module} is drawn but is no module"));
    }
    wrong
}

#[test]
fn the_drawn_module_graph_is_the_codes() {
    let mut code = graph();
    let inside = download_graph();
    assert!(inside.contains_key("download::classify"), "{inside:?}");
    if let Some(cycle) = find_cycle(&inside) {
        panic!("module cycle in src/download: {}", cycle.join(" → "));
    }
    code.extend(inside);
    let wrong = differences(&code, &drawn_graph());
    assert!(
        wrong.is_empty(),
        "ARCHITECTURE.md's module graph is out of date:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_drawing_check_sees_an_edge_missing_or_added() {
    let mut code = graph();
    code.extend(download_graph());
    let mut drawn = drawn_graph();
    drawn
        .get_mut("download::stream")
        .expect("drawn")
        .remove("download::integrity");
    drawn.get_mut("lock").expect("drawn").insert("api".into());
    assert_eq!(differences(&code, &drawn).len(), 2);
}
