//! The shape of the code, checked: imports between files of `src/` run one
//! way (no file reaches itself through `crate::`/`super::`/`self::`
//! paths), files and functions stay short enough to read, and the
//! architecture invariants of ARCHITECTURE.md hold (which modules may know
//! candle, HTTP and `anyhow`; the config imports no code module).
//!
//! Run alone with `cargo test --release --test it layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest file, in lines.
const MAX_FILE_LINES: usize = 700;
/// Longest function, in lines, unless its doc comment says "Long because".
const MAX_FN_LINES: usize = 80;

struct Source {
    /// Module path (`["answer", "check"]`; `mod.rs` and `lib.rs` name their folder).
    module: Vec<String>,
    /// Relative path, for messages.
    path: String,
    text: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p: PathBuf = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(&root).unwrap().with_extension("");
                let mut module: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                    module.pop();
                }
                out.push(Source {
                    module,
                    path: format!("src/{}", rel.with_extension("rs").display()),
                    text: std::fs::read_to_string(&p).unwrap(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The text without comments (line and block) and string literals, so
/// that paths in docs and strings are not taken for imports.
fn code_of(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if b[i] == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == '\'' && b.get(i + 2) == Some(&'\'') {
            i += 3; // a char literal such as '"'
        } else if b[i] == '\'' && b.get(i + 1) == Some(&'\\') {
            i += 2;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The code without inline `mod name { … }` blocks (tests): paths inside
/// them are relative to the inline module, and tests are not layers.
fn without_inline_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("mod ") {
        let head = &rest[at + 4..];
        let name_len = head
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(head.len());
        let after = head[name_len..].trim_start();
        let starts_word = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if !(starts_word && name_len > 0 && after.starts_with('{')) {
            out.push_str(&rest[..at + 4]);
            rest = &rest[at + 4..];
            continue;
        }
        out.push_str(&rest[..at]);
        let open = at + 4 + name_len + (head[name_len..].len() - after.len());
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Every path that starts with `crate::`, `super::` or `self::`, expanded
/// through `{…}` groups, as segment lists relative to the crate root.
fn paths(src: &Source, code: &str) -> Vec<Vec<String>> {
    let here = src.module.clone();
    let is_dir_module = src.path.ends_with("mod.rs") || src.path.ends_with("lib.rs");
    let parent: Vec<String> = if is_dir_module {
        here.iter()
            .take(here.len().saturating_sub(1))
            .cloned()
            .collect()
    } else {
        here[..here.len() - 1].to_vec()
    };
    let self_base = here.clone();
    let mut out = Vec::new();
    // A child module declared here (`mod vector;`) is reached by its bare
    // name too (`vector::VectorIndex`, `use vector::X`).
    let children = declared_children(code);
    let mut prefixes: Vec<(String, Vec<String>)> = vec![
        ("crate::".into(), Vec::new()),
        ("super::".into(), parent),
        ("self::".into(), self_base.clone()),
    ];
    if is_dir_module {
        for c in children {
            prefixes.push((
                format!("{c}::"),
                self_base.iter().cloned().chain([c]).collect(),
            ));
        }
    }
    for (word, base) in &prefixes {
        let word = word.as_str();
        let mut from = 0;
        while let Some(at) = code[from..].find(word) {
            let start = from + at;
            from = start + word.len();
            let before = code[..start].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let tail = &code[from..];
            expand(base, tail, &mut out);
        }
    }
    out
}

/// What lib.rs re-exports at the crate root (`pub use kb::Kb;`): the
/// name, and the path it stands for.
fn root_reexports(all: &[Source]) -> BTreeMap<String, Vec<String>> {
    let Some(lib) = all.iter().find(|s| s.path == "src/lib.rs") else {
        return BTreeMap::new();
    };
    let mut paths = Vec::new();
    for line in code_of(&lib.text).lines() {
        if let Some(rest) = line.trim().strip_prefix("pub use ") {
            expand(&[], rest.trim_end_matches(';'), &mut paths);
        }
    }
    paths
        .into_iter()
        .filter_map(|p| Some((p.last()?.clone(), p)))
        .collect()
}

/// The modules a file declares with `mod name;` (not inline ones).
fn declared_children(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

/// Reads one path (or `{a, b::c}` group) at the start of `tail`.
fn expand(base: &[String], tail: &str, out: &mut Vec<Vec<String>>) {
    let mut segs = base.to_vec();
    let mut rest = tail;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            let inner = &group[..end];
            let mut depth = 0;
            let mut item_start = 0;
            for (i, c) in inner
                .char_indices()
                .chain(std::iter::once((inner.len(), ',')))
            {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let item = inner[item_start..i].trim();
                        if !item.is_empty() {
                            expand(&segs, item, out);
                        }
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            break;
        }
        segs.push(name.clone());
        rest = &rest[name.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out.push(segs);
}

/// `from`'s imports, as the files they land in.
fn edges(all: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<&[String], &str> = all
        .iter()
        .filter(|s| s.path != "src/main.rs")
        .map(|s| (s.module.as_slice(), s.path.as_str()))
        .collect();
    let reexports = root_reexports(all);
    let mut out = BTreeMap::new();
    for s in all.iter().filter(|s| s.path != "src/main.rs") {
        let code = without_inline_modules(&code_of(&s.text));
        let mut to = BTreeSet::new();
        for mut p in paths(s, &code) {
            // `crate::Kb` is `crate::kb::Kb`, re-exported by lib.rs.
            if let Some(real) = p.first().and_then(|name| reexports.get(name)) {
                p.splice(..1, real.iter().cloned());
            }
            // The longest module prefix of the path is the file it lands in.
            let target = (1..=p.len())
                .rev()
                .find_map(|n| by_module.get(&p[..n]).copied());
            if let Some(t) = target.filter(|t| *t != s.path) {
                to.insert(t.to_string());
            }
        }
        out.insert(s.path.clone(), to);
    }
    out
}

/// The files on a loop through `start`, if any.
fn loop_through(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, trail)) = stack.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if next == start {
                return Some(trail);
            }
            if seen.insert(next.clone()) {
                let mut t = trail.clone();
                t.push(next.clone());
                stack.push((next.clone(), t));
            }
        }
    }
    None
}

#[test]
fn no_file_of_src_imports_itself_around_a_loop() {
    let all = sources();
    let edges = edges(&all);
    assert!(edges.len() > 30, "the checker found too few files");
    assert!(
        edges["src/answer/mod.rs"].contains("src/answer/check.rs"),
        "the checker must see `self::` imports"
    );
    assert!(
        edges["src/server/state.rs"].contains("src/kb.rs"),
        "the checker must see `crate::Kb` as an import of kb.rs"
    );
    let loops: Vec<String> = edges
        .keys()
        .filter_map(|f| loop_through(&edges, f))
        .map(|l| l.join(" -> "))
        .collect();
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn files_and_functions_stay_short() {
    let mut long = Vec::new();
    for s in sources() {
        let lines: Vec<&str> = s.text.lines().collect();
        if lines.len() > MAX_FILE_LINES {
            long.push(format!("{}: {} lines", s.path, lines.len()));
        }
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let indent = line.len() - t.len();
            let is_fn = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "pub(super) fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) async fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p));
            if !is_fn || t.ends_with(';') {
                continue;
            }
            let end = lines[i + 1..]
                .iter()
                .position(|l| {
                    l.get(..indent).is_some_and(|h| h.trim().is_empty())
                        && l.get(indent..).is_some_and(|r| r.starts_with('}'))
                })
                .map_or(lines.len(), |n| i + 1 + n);
            let doc: String = lines[..i]
                .iter()
                .rev()
                .take_while(|l| {
                    let l = l.trim_start();
                    l.starts_with("///") || l.starts_with("#[")
                })
                .map(|l| l.to_string())
                .collect();
            if end - i + 1 > MAX_FN_LINES && !doc.contains("Long because") {
                long.push(format!(
                    "{}:{}: {} ({} lines)",
                    s.path,
                    i + 1,
                    t,
                    end - i + 1
                ));
            }
        }
    }
    assert!(long.is_empty(), "too long (files over {MAX_FILE_LINES} lines, functions over {MAX_FN_LINES} without a doc comment saying why):\n{}", long.join("\n"));
}

/// Files of `src/` whose code names `word`, outside the allowed folders.
fn users_of(word: &str, allowed: &[&str]) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|s| !allowed.iter().any(|a| s.path.starts_with(a)))
        .filter(|s| code_of(&s.text).contains(word))
        .map(|s| s.path)
        .collect()
}

#[test]
fn the_architecture_invariants_hold() {
    assert_eq!(
        users_of("candle_core", &["src/models/"]),
        Vec::<String>::new(),
        "only models/ knows candle"
    );
    assert_eq!(
        users_of("candle_nn", &["src/models/"]),
        Vec::<String>::new()
    );
    assert_eq!(
        users_of("tokenizers::", &["src/models/"]),
        Vec::<String>::new()
    );
    assert_eq!(
        users_of("axum", &["src/server/"]),
        Vec::<String>::new(),
        "only server/ knows HTTP"
    );
    assert_eq!(
        users_of("anyhow", &["src/main.rs", "src/cli/"]),
        Vec::<String>::new(),
        "the library has its own errors"
    );
    // The config is plain data at the bottom: it imports only the error type.
    let all = sources();
    let edges = edges(&all);
    for (file, to) in edges.iter().filter(|(f, _)| f.starts_with("src/config/")) {
        for t in to {
            assert!(
                t.starts_with("src/config/") || t == "src/error.rs",
                "{file} imports {t}: the config imports no code module"
            );
        }
    }
    // Leaves import no code module either.
    for leaf in ["src/text.rs", "src/hash.rs", "src/rng.rs", "src/error.rs"] {
        let to: Vec<&String> = edges[leaf]
            .iter()
            .filter(|t| *t != "src/error.rs")
            .collect();
        assert!(to.is_empty(), "{leaf} is a leaf but imports {to:?}");
    }
    // The library never reaches up to its front ends.
    for (file, to) in &edges {
        if !file.starts_with("src/server/") && !file.starts_with("src/cli/") {
            assert!(
                to.iter()
                    .all(|t| !t.starts_with("src/server/") && !t.starts_with("src/cli/")),
                "{file} imports a front end: {to:?}"
            );
        }
    }
}

#[test]
fn the_checker_sees_a_loop_when_there_is_one() {
    let a = Source {
        module: vec!["a".into()],
        path: "src/a.rs".into(),
        text: "use crate::b::{X, y::Z};".into(),
    };
    let b = Source {
        module: vec!["b".into()],
        path: "src/b.rs".into(),
        text: "// crate::a::Ignored in a comment\nfn f() { let s = \"crate::a\"; super::a::g(); }\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::y::Q;\n}".into(),
    };
    let y = Source {
        module: vec!["b".into(), "y".into()],
        path: "src/b/y.rs".into(),
        text: String::new(),
    };
    let edges = edges(&[a, b, y]);
    assert_eq!(
        edges["src/a.rs"],
        ["src/b.rs".to_string(), "src/b/y.rs".to_string()].into()
    );
    assert_eq!(edges["src/b.rs"], ["src/a.rs".to_string()].into());
    assert!(loop_through(&edges, "src/a.rs").is_some());
    // A folder module that uses its child by bare name, and the child that
    // imports the folder module back, are a loop too.
    let m = Source {
        module: vec!["m".into()],
        path: "src/m/mod.rs".into(),
        text: "mod c;\npub use c::Thing;\nfn f() -> c::Other { todo!() }".into(),
    };
    let c = Source {
        module: vec!["m".into(), "c".into()],
        path: "src/m/c.rs".into(),
        text: "use super::Shared;".into(),
    };
    let edges = self::edges(&[m, c]);
    assert!(edges["src/m/mod.rs"].contains("src/m/c.rs"), "{edges:?}");
    assert!(loop_through(&edges, "src/m/mod.rs").is_some());
}
