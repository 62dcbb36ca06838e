//! The shape of the code, checked: no import loop between files of a crate. A file uses another
//! when it names a path into it (`use crate::a::b`, `super::x`, or such a path inline); a loop
//! (a uses b, b uses a, directly or through others) means two files that cannot be read or
//! changed one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates of the workspace: their source folder and root file.
fn crates() -> Vec<(PathBuf, &'static str)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut crates = vec![(root.join("src"), "main.rs")];
    for name in ["pipeline", "onnx", "exporters", "constrained"] {
        let src = root.join(name).join("src");
        if src.join("lib.rs").is_file() {
            crates.push((src, "lib.rs"));
        }
    }
    crates
}

/// Module path (`["run", "generate"]`) → file, for every module file of a crate.
fn modules(src: &Path, root_file: &str) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    for entry in walk(src) {
        let rel = entry.strip_prefix(src).unwrap();
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let file = parts.pop().unwrap();
        if file == root_file && parts.is_empty() {
            out.insert(Vec::new(), entry.clone());
            continue;
        }
        match file.as_str() {
            "mod.rs" => {}
            f => parts.push(f.trim_end_matches(".rs").to_string()),
        }
        out.insert(parts, entry.clone());
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The code of a file without comments, string literals and `#[cfg(test)]` modules (tests may
/// reach anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            // A char literal such as '"' or '{' (lifetimes are left alone).
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let len = if rest.starts_with('\\') {
                    rest.find('\'').map(|i| i + 1)
                } else if rest.chars().nth(1) == Some('\'') {
                    Some(2)
                } else {
                    None
                };
                match len {
                    Some(n) => {
                        for _ in 0..n {
                            chars.next();
                        }
                        out.push_str("' '");
                    }
                    None => out.push(c),
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Every `crate::`/`super::`/`self::` path a file names, expanded (`use a::{b, c::d}` gives
/// `a::b` and `a::c::d`), as segments.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|h| rest.starts_with(h));
        match head {
            Some(_) if starts_word => {
                let (tree, end) = read_tree(&bytes, i);
                found.extend(expand(&tree));
                i = end;
            }
            _ => i += 1,
        }
    }
    found
}

/// The path tree starting at `i`: segments joined by `::`, possibly ending in `{...}`.
fn read_tree(chars: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    let mut depth = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            c if depth > 0 && (c.is_whitespace() || c == ',' || c == '*') => {}
            c if c.is_alphanumeric() || c == '_' || c == ':' => {}
            _ if depth == 0 => break,
            _ => {}
        }
        if depth == 0 && c == '}' {
            i += 1;
            break;
        }
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![segments(&tree)];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[from..]);
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .flat_map(|item| expand(&format!("{prefix}{item}")))
        .collect()
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .filter(|s| !s.is_empty() && *s != "*")
        .map(str::to_string)
        .collect()
}

/// The module file a path leads into, from the module `current`.
fn resolve(
    current: &[String],
    path: &[String],
    modules: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<PathBuf> {
    let mut module: Vec<String> = current.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => module.clear(),
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                module.pop();
                rest = &rest[1..];
            }
            return descend(module, rest, modules);
        }
        Some("self") => {}
        _ => return None,
    }
    descend(module, &rest[1..], modules)
}

fn descend(
    mut module: Vec<String>,
    rest: &[String],
    modules: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<PathBuf> {
    for segment in rest {
        module.push(segment.clone());
        if !modules.contains_key(&module) {
            module.pop();
            break;
        }
    }
    modules.get(&module).cloned()
}

/// A loop in `graph`, if any, as the files along it.
fn find_loop(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// The file-level use graph of one crate.
fn use_graph(src: &Path, root_file: &str) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let modules = modules(src, root_file);
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let code = code(&std::fs::read_to_string(file).unwrap());
        let mut uses = BTreeSet::new();
        for path in paths(&code) {
            if let Some(target) = resolve(module, &path, &modules) {
                if &target != file {
                    uses.insert(target);
                }
            }
        }
        graph.insert(file.clone(), uses);
    }
    graph
}

#[test]
fn no_import_loop_between_files() {
    for (src, root_file) in crates() {
        let graph = use_graph(&src, root_file);
        assert!(graph.len() > 3, "{} has its files", src.display());
        if let Some(cycle) = find_loop(&graph) {
            let names: Vec<String> = cycle
                .iter()
                .map(|p| p.strip_prefix(&src).unwrap().display().to_string())
                .collect();
            panic!("import loop in {}: {}", src.display(), names.join(" -> "));
        }
    }
}

#[test]
fn the_loop_finder_finds_loops() {
    // The check must be able to fail: a two-file loop and a path through braces.
    let a = PathBuf::from("a.rs");
    let b = PathBuf::from("b.rs");
    let c = PathBuf::from("c.rs");
    let graph = BTreeMap::from([
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([c.clone()])),
        (c.clone(), BTreeSet::from([a.clone()])),
    ]);
    assert_eq!(find_loop(&graph).unwrap().len(), 4);
    let found = paths(&code(
        "use super::{x::Y, z};\n// crate::comment::ignored\nlet s = \"crate::in_string\";\nfn f() { crate::run::task::Task::Ocr }",
    ));
    assert_eq!(
        found,
        vec![
            segments("super::x::Y"),
            segments("super::z"),
            segments("crate::run::task::Task::Ocr"),
        ]
    );
}
