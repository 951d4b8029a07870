//! The library's modules depend on each other one way, in the layer order of
//! ARCHITECTURE.md: a module may use its own layer and the layers below,
//! never one above, and nothing on the device side may use the CPU
//! reference. A source scan, no GPU: every `crate::` / `super::` path in
//! `src/` (comments stripped) is resolved to the module it names and
//! checked against the table below. A module missing from the table fails
//! the test, so a new module needs one line here (and one in ARCHITECTURE.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// (module path, layer, device side). Layers, bottom up: 0 the error type;
/// 1 what defines a method, and leaf utilities; 2 device-free math and the
/// reference; 3 the device context and the shaders; 4 the memory bank;
/// 5 the kernels; 6 the drivers: retrieval (single and batched), the dense
/// algebra on host data, the GPU Hopfield layers and networks, shard
/// partials and the sharded bank; 7 the experiments, which drive retrieval
/// like a user (through the public types only). The command line
/// (`src/cli`, a separate binary crate) and the Python package sit above
/// and see only the public API.
/// The longest listed prefix of a path decides, so a module can place its
/// submodules on other layers (`layer` device-free, `layer::gpu` with the
/// driver, so that a layer's forward pass can record through it).
const LAYERS: &[(&str, u8, bool)] = &[
    ("error", 0, false),
    ("method", 1, false),
    ("npy", 1, false),
    ("tolerance", 1, false),
    ("host", 1, false),
    ("feature", 2, false),
    ("stats", 2, false),
    ("planner", 2, false),
    ("cpu", 2, false),
    ("theory", 2, false),
    ("layer", 2, false),
    ("config", 2, false),
    ("context", 3, true),
    ("shaders", 3, true),
    ("bank", 4, true),
    ("kernels", 5, true),
    ("layer::gpu", 6, true),
    ("retrieve", 6, true),
    ("linalg", 6, true),
    ("partial", 6, true),
    ("sharded", 6, true),
    ("experiment", 7, true),
    // The tuner checks candidates against the reference before it times
    // them: like bench, a harness above the device side, not part of it.
    ("tune", 7, false),
];

/// Only tests and the command line check against the reference.
const REFERENCE: &str = "cpu";

/// The entry for `path` (a module path like `kernels::dense`): the longest prefix listed.
fn layer_of(path: &[String]) -> Option<(&'static str, u8, bool)> {
    LAYERS
        .iter()
        .filter(|(m, _, _)| {
            let parts: Vec<&str> = m.split("::").collect();
            parts.len() <= path.len() && parts.iter().zip(path).all(|(a, b)| a == b)
        })
        .max_by_key(|(m, _, _)| m.len())
        .copied()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file below `src/` (`src/kernels/mod.rs` -> `kernels`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The text without `//` comments (doc links are not imports).
fn strip_comments(text: &str) -> String {
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// Expand a use tree `a::{b, c::{d, e}}` into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    match tree.find('{') {
        None => vec![tree.to_string()],
        Some(open) => {
            let prefix = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').expect("balanced braces")];
            let mut items = Vec::new();
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[start..]);
            items
                .iter()
                .filter(|s| !s.trim().is_empty())
                .flat_map(|s| expand(s))
                .map(|s| format!("{prefix}{s}"))
                .collect()
        }
    }
}

/// Every crate-relative path the file names, each resolved against the
/// module it is written in: inline `mod name { ... }` blocks (closed by a
/// `}` at their own indentation) are one module further down.
fn file_imports(text: &str, module: &[String]) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    // (module path, indentation of its `mod` line, text so far)
    let mut stack: Vec<(Vec<String>, usize, String)> = vec![(module.to_vec(), usize::MAX, String::new())];
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        let t = t.strip_prefix("pub(crate) ").or_else(|| t.strip_prefix("pub ")).unwrap_or(t);
        if let Some(name) = t.strip_prefix("mod ").and_then(|r| r.strip_suffix(" {")) {
            let mut inner = stack.last().expect("the file's module").0.clone();
            inner.push(name.to_string());
            stack.push((inner, indent, String::new()));
            continue;
        }
        if t == "}" && stack.len() > 1 && stack.last().is_some_and(|s| s.1 == indent) {
            let (m, _, body) = stack.pop().expect("an inline module");
            out.extend(imports(&body, &m));
            continue;
        }
        let top = stack.last_mut().expect("the file's module");
        top.2.push_str(line);
        top.2.push('\n');
    }
    for (m, _, body) in stack {
        out.extend(imports(&body, &m));
    }
    out
}

/// Every crate-relative path `text` names: use trees and inline
/// `crate::a::b` / `super::a` paths, resolved against `module`.
fn imports(text: &str, module: &[String]) -> BTreeSet<Vec<String>> {
    let code = strip_comments(text);
    let mut paths = Vec::new();
    // `use` statements (a line starting with `use` or `pub(...) use`),
    // possibly over several lines.
    let lines: Vec<&str> = code.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let t = t.strip_prefix("pub(crate) ").or_else(|| t.strip_prefix("pub ")).unwrap_or(t);
        if let Some(tree) = t.strip_prefix("use ") {
            let mut stmt = tree.to_string();
            while !stmt.contains(';') && i + 1 < lines.len() {
                i += 1;
                stmt.push_str(lines[i]);
            }
            let stmt = stmt.split(';').next().unwrap_or("");
            // `a as b` renames: keep the path.
            let words: Vec<&str> = stmt.split_whitespace().collect();
            let mut tree = String::new();
            let mut w = 0;
            while w < words.len() {
                if words[w] == "as" {
                    w += 2;
                    continue;
                }
                tree.push_str(words[w]);
                w += 1;
            }
            paths.extend(expand(&tree));
        }
        i += 1;
    }
    // Inline paths.
    for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("crate::") || word.starts_with("super::") {
            paths.push(word.to_string());
        }
    }
    let mut out = BTreeSet::new();
    for p in paths {
        let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let resolved: Vec<String> = match segs.first() {
            Some(&"crate") => segs[1..].iter().map(|s| s.to_string()).collect(),
            Some(&"super") => {
                let mut base = module.to_vec();
                let mut rest = &segs[..];
                while rest.first() == Some(&"super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().map(|s| s.to_string()));
                base
            }
            _ => continue,
        };
        let resolved: Vec<String> = resolved.into_iter().filter(|s| s != "self" && s != "*" && s != "tests").collect();
        if !resolved.is_empty() {
            out.insert(resolved);
        }
    }
    out
}

#[test]
fn modules_only_use_their_layer_and_the_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 10, "src/ looks empty: {files:?}");
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("below src/");
        // The binary (main.rs, cli/) is its own crate: the compiler limits it to the public API.
        if rel.starts_with("cli") || rel == Path::new("main.rs") || rel == Path::new("lib.rs") {
            continue;
        }
        let module = module_of(rel);
        let Some((name, layer, device)) = layer_of(&module) else {
            problems.push(format!("{}: module {} is not in the layer table", rel.display(), module.join("::")));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable source");
        for path in file_imports(&text, &module) {
            // Items of the crate root (re-exports) would bypass the table.
            let Some((used, used_layer, _)) = layer_of(&path) else {
                problems.push(format!("{}: uses crate::{}, which is in no layer", rel.display(), path.join("::")));
                continue;
            };
            if used == name {
                continue;
            }
            if used_layer > layer {
                problems.push(format!(
                    "{}: {name} (layer {layer}) uses {} (layer {used_layer}, above it)",
                    rel.display(),
                    path.join("::")
                ));
            }
            if device && used == REFERENCE {
                problems.push(format!("{}: the device side ({name}) uses the CPU reference", rel.display()));
            }
        }
    }
    assert!(problems.is_empty(), "layering violations:\n{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_what_it_must() {
    // A use tree, an inline path and a super path, resolved; comments ignored.
    let text = "use crate::{kernels::dense::{Tile, x}, error::Error};\n\
                // use crate::retrieve::Nothing;\n\
                let a = crate::cpu::dot(b, c);\n\
                use super::super::method::Method;\n\
                mod tests {\n    use super::Tile;\n}";
    let got = file_imports(text, &["kernels".into(), "dense".into()]);
    let want: BTreeSet<Vec<String>> = [
        vec!["kernels", "dense", "Tile"],
        vec!["kernels", "dense", "x"],
        vec!["error", "Error"],
        vec!["cpu", "dot"],
        vec!["method", "Method"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    assert_eq!(got, want);
    // An upward import is caught.
    assert!(layer_of(&["retrieve".into()]).unwrap().1 > layer_of(&["kernels".into(), "dense".into()]).unwrap().1);
    assert_eq!(layer_of(&["layer".into(), "gpu".into(), "forward".into()]).map(|l| l.1), Some(6));
}
