//! The source tree keeps its shape: no module of `gateway/src` imports
//! another that imports it back, directly or round about, so every call
//! flows one way (`docs/ARCHITECTURE.md`, "Stages").
//!
//! Imports are read from the code (`crate::` and `super::` paths outside
//! comments and test modules); a path names the deepest module file it
//! reaches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

#[test]
fn no_module_imports_one_that_imports_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&root);
    assert!(
        graph.len() > 40,
        "read only {} modules from {}",
        graph.len(),
        root.display()
    );
    let cycles = cycles(&graph);
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_cycle_finder_finds_a_round_about_cycle() {
    let module = |name: &str| vec![name.to_string()];
    let mut graph = BTreeMap::new();
    graph.insert(module("a"), BTreeSet::from([module("b")]));
    graph.insert(module("b"), BTreeSet::from([module("c")]));
    graph.insert(module("c"), BTreeSet::from([module("a")]));
    graph.insert(module("d"), BTreeSet::from([module("a")]));
    assert_eq!(cycles(&graph), vec!["a -> b -> c -> a".to_string()]);
}

/// Every module file under `root` with the modules it imports.
fn imports(root: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let files = rust_files(root);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|file| (module_of(root, file), file.clone()))
        .collect();
    let known: BTreeSet<&Module> = modules.keys().collect();
    modules
        .iter()
        .map(|(module, file)| {
            let text = std::fs::read_to_string(file).expect("readable source");
            let code = without_comments_and_tests(&text);
            // `super` is the parent module, whether the file is `a/b.rs` or `a/b/mod.rs`.
            let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
            let mut found = BTreeSet::new();
            for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
                for path in paths_after(&code, prefix) {
                    let mut full = base.clone();
                    full.extend(path);
                    if let Some(target) = deepest_known(&full, &known)
                        && &target != module
                        && !module.starts_with(&target)
                    {
                        found.insert(target);
                    }
                }
            }
            (module.clone(), found)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

/// `edge/acme/mod.rs` → `edge::acme`; `lib.rs` and `main.rs` → the root.
fn module_of(root: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(root).expect("under the root");
    let mut parts: Module = relative
        .with_extension("")
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of `text` without `//` comments and without the `mod tests`
/// that closes a file (tests may reach anywhere).
fn without_comments_and_tests(text: &str) -> String {
    let code: Vec<&str> = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect();
    let joined = code.join("\n");
    match joined.find("#[cfg(test)]\nmod ") {
        Some(start) => joined[..start].to_string(),
        None => joined,
    }
}

/// Module paths that follow `prefix`, with `{a, b::c}` groups expanded.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut path = Vec::new();
        let mut tail = rest;
        loop {
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let (name, after) = tail.split_at(end);
            if name.is_empty() {
                if let Some(group) = after.strip_prefix('{') {
                    let close = group.find('}').unwrap_or(group.len());
                    for item in group[..close].split(',') {
                        let mut grouped = path.clone();
                        grouped.extend(item.trim().split("::").map(str::to_string));
                        paths.push(grouped);
                    }
                }
                break;
            }
            path.push(name.to_string());
            match after.strip_prefix("::") {
                Some(next) => tail = next,
                None => break,
            }
        }
        if !path.is_empty() {
            paths.push(path);
        }
    }
    paths
}

fn deepest_known(path: &[String], known: &BTreeSet<&Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|length| path[..length].to_vec())
        .find(|candidate| known.contains(candidate))
}

/// Each cycle once, as `a -> b -> a`, found by depth-first search.
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        module: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
        found: &mut Vec<String>,
    ) {
        marks.insert(module.clone(), Mark::Open);
        stack.push(module.clone());
        for next in graph.get(module).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let start = stack.iter().position(|m| m == next).unwrap_or(0);
                    let names: Vec<String> = stack[start..]
                        .iter()
                        .chain(std::iter::once(next))
                        .map(|m| m.join("::"))
                        .collect();
                    found.push(names.join(" -> "));
                }
                Some(Mark::Done) => {}
                None => visit(next, graph, marks, stack, found),
            }
        }
        stack.pop();
        marks.insert(module.clone(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = Vec::new();
    for module in graph.keys() {
        if !marks.contains_key(module) {
            visit(module, graph, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}
