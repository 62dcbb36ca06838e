//! The error kinds stay one stable, tested list: the README's table is `ErrorKind::ALL` (names,
//! order, meanings), every kind is produced by the code and named by some test (a kind added
//! without a test fails here), and no kind is written as a bare string outside the enum.
//!
//! The sources are read as text: comments are left out, and in `src/` only `#[cfg(test)]` items
//! count as tests.

use quire_exporters::error_kind::ErrorKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kind as code names it: `ErrorKind::NotFound`.
fn variant(kind: ErrorKind) -> String {
    format!("ErrorKind::{kind:?}")
}

/// `(kind, meaning)` of each row of the README's `## Error kinds` table.
fn readme_table() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let (_, section) = readme
        .split_once("\n## Error kinds\n")
        .expect("README.md has a section `## Error kinds`");
    let section = section.split("\n## ").next().unwrap();
    let mut lines = section
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with('|'));
    let cells = |line: &str| -> Vec<String> {
        line.strip_prefix('|')
            .and_then(|l| l.strip_suffix('|'))
            .unwrap_or_else(|| panic!("not a table row: {line:?}"))
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    assert_eq!(
        cells(lines.next().expect("a table")),
        ["kind", "meaning"],
        "the table's header"
    );
    assert_eq!(cells(lines.next().unwrap()), ["---", "---"]);
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let row = cells(line);
            assert_eq!(row.len(), 2, "{line}");
            let kind = row[0]
                .strip_prefix('`')
                .and_then(|k| k.strip_suffix('`'))
                .unwrap_or_else(|| panic!("the kind is written as code: {line}"));
            (kind.to_string(), row[1].clone())
        })
        .collect()
}

#[test]
fn the_readme_lists_exactly_the_error_kinds_in_order_with_their_meanings() {
    let table = readme_table();
    let expected: Vec<(String, String)> = ErrorKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), k.description().to_string()))
        .collect();
    for (i, (row, kind)) in table.iter().zip(&expected).enumerate() {
        assert_eq!(row, kind, "row {} of the README's table", i + 1);
    }
    assert_eq!(table.len(), expected.len(), "{table:?}");
}

// ---- Reading the sources ----

/// A source file with its comments left out, and the same text with the contents of string
/// and character literals blanked too (to find the braces and attributes of the code itself).
struct Source {
    path: PathBuf,
    /// Without comments.
    code: String,
    /// `code` with literal contents as spaces: the same byte offsets.
    structure: String,
}

impl Source {
    fn read(path: &Path) -> Source {
        let text = std::fs::read_to_string(path).unwrap();
        let (code, structure) = scan(&text);
        Source {
            path: path.to_path_buf(),
            code,
            structure,
        }
    }

    /// The `#[cfg(test)]` items (test modules and functions), as code.
    fn test_items(&self) -> Vec<&str> {
        self.cfg_test_spans()
            .into_iter()
            .map(|(start, end)| &self.code[start..end])
            .collect()
    }

    /// The code outside `#[cfg(test)]` items.
    fn non_test_code(&self) -> String {
        let mut out = String::new();
        let mut at = 0;
        for (start, end) in self.cfg_test_spans() {
            out.push_str(&self.code[at..start]);
            at = end;
        }
        out.push_str(&self.code[at..]);
        out
    }

    /// Byte spans of the items under `#[cfg(test)]`: to the end of the item's block (or its `;`).
    fn cfg_test_spans(&self) -> Vec<(usize, usize)> {
        let s = self.structure.as_bytes();
        let mut spans = Vec::new();
        let mut from = 0;
        while let Some(i) = self.structure[from..].find("#[cfg(test)]") {
            let start = from + i;
            let mut j = start + "#[cfg(test)]".len();
            while j < s.len() && s[j] != b'{' && s[j] != b';' {
                j += 1;
            }
            if j < s.len() && s[j] == b'{' {
                let mut depth = 0usize;
                while j < s.len() {
                    match s[j] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                assert!(
                    j < s.len(),
                    "{}: unbalanced braces after #[cfg(test)]",
                    self.path.display()
                );
            }
            let end = (j + 1).min(s.len());
            spans.push((start, end));
            from = end;
        }
        spans
    }
}

/// Splits Rust source into (code without comments, the same with literal contents blanked).
fn scan(text: &str) -> (String, String) {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let mut structure = String::with_capacity(text.len());
    let blank = |c: char, structure: &mut String| {
        for _ in 0..c.len_utf8() {
            structure.push(if c == '\n' { '\n' } else { ' ' });
        }
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            // Left out, but its line breaks kept: line numbers stay those of the file.
            let mut depth = 0;
            code.push(' ');
            structure.push(' ');
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        code.push('\n');
                        structure.push('\n');
                    }
                    i += 1;
                }
            }
            continue;
        }
        let prev_ident = i > 0 && ident(chars[i - 1]);
        // Raw strings: r"..." and r#"..."# (also br"...").
        if c == 'r' && !(prev_ident && chars[i - 1] != 'b') && matches!(next, Some('"') | Some('#'))
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) == Some(&'"') {
                let opening: String = chars[i..=j].iter().collect();
                code.push_str(&opening);
                structure.push_str(&opening);
                j += 1;
                while let Some(&d) = chars.get(j) {
                    if d == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                        let closing: String = chars[j..=j + hashes].iter().collect();
                        code.push_str(&closing);
                        structure.push_str(&closing);
                        j += hashes + 1;
                        break;
                    }
                    code.push(d);
                    blank(d, &mut structure);
                    j += 1;
                }
                i = j;
                continue;
            }
        }
        if c == '"' {
            code.push('"');
            structure.push('"');
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                if d == '\\' {
                    code.push(d);
                    blank(d, &mut structure);
                    if let Some(&e) = chars.get(i + 1) {
                        code.push(e);
                        blank(e, &mut structure);
                    }
                    i += 2;
                    continue;
                }
                i += 1;
                if d == '"' {
                    code.push('"');
                    structure.push('"');
                    break;
                }
                code.push(d);
                blank(d, &mut structure);
            }
            continue;
        }
        if c == '\'' {
            // A character literal ('x', '\n', '\''), not a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 2..chars.len()).find(|&j| chars[j] == '\'' && j > i + 2)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                code.push('\'');
                structure.push('\'');
                for &d in &chars[i + 1..end] {
                    code.push(d);
                    blank(d, &mut structure);
                }
                code.push('\'');
                structure.push('\'');
                i = end + 1;
                continue;
            }
        }
        code.push(c);
        structure.push(c);
        i += 1;
    }
    (code, structure)
}

/// `.rs` files under `dir`, recursively, in name order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The workspace's packages: the root and each folder beside it with a Cargo.toml.
fn packages() -> Vec<PathBuf> {
    let mut dirs = vec![root()];
    let mut members: Vec<PathBuf> = std::fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .collect();
    members.sort();
    dirs.extend(members);
    dirs
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What defines the kinds and what checks the list, not tests of the kinds themselves.
fn is_the_list(path: &Path) -> bool {
    let rel = relative(path);
    rel == "tests/error_kinds.rs" || rel == "exporters/src/error_kind.rs"
}

/// The test code of the workspace, by file: whole files under `tests/`, `#[cfg(test)]` items
/// under `src/`.
fn test_code() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for package in packages() {
        for path in rust_files(&package.join("tests")) {
            if !is_the_list(&path) {
                out.insert(relative(&path), Source::read(&path).code);
            }
        }
        for path in rust_files(&package.join("src")) {
            if is_the_list(&path) {
                continue;
            }
            let source = Source::read(&path);
            let items = source.test_items().join("\n");
            if !items.is_empty() {
                out.insert(relative(&path), items);
            }
        }
    }
    out
}

/// The code (not tests) of the workspace's `src/` folders, by file.
fn production_code() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for package in packages() {
        for path in rust_files(&package.join("src")) {
            out.insert(relative(&path), Source::read(&path).non_test_code());
        }
    }
    out
}

/// Whether `code` names `kind` as the string `"kind"` or as `ErrorKind::Variant` (not
/// `std::io::ErrorKind::NotFound`).
fn mentions(code: &str, kind: ErrorKind) -> bool {
    code.contains(&format!("\"{}\"", kind.as_str())) || names_variant(code, kind)
}

fn names_variant(code: &str, kind: ErrorKind) -> bool {
    let variant = variant(kind);
    code.match_indices(&variant).any(|(i, _)| {
        let after = code[i + variant.len()..].chars().next();
        !code[..i].ends_with("io::") && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn every_error_kind_is_produced_by_the_code_and_named_by_a_test() {
    let tests = test_code();
    assert!(
        tests.contains_key("tests/run.rs") && tests.contains_key("pipeline/src/sources.rs"),
        "test files found: {:?}",
        tests.keys().collect::<Vec<_>>()
    );
    let code = production_code();
    let mut untested = Vec::new();
    let mut unproduced = Vec::new();
    for &kind in ErrorKind::ALL {
        let named_in: Vec<&String> = tests
            .iter()
            .filter(|(_, text)| mentions(text, kind))
            .map(|(file, _)| file)
            .collect();
        if named_in.is_empty() {
            untested.push(kind.as_str());
        }
        let produced = code
            .iter()
            .any(|(file, text)| !is_the_list(&root().join(file)) && names_variant(text, kind));
        if !produced {
            unproduced.push(kind.as_str());
        }
    }
    assert!(
        untested.is_empty(),
        "error kinds no test produces (name it in a test as \"kind\" or ErrorKind::Variant): \
         {untested:?}"
    );
    assert!(
        unproduced.is_empty(),
        "error kinds no code produces: {unproduced:?}"
    );
}

/// The literal after `at` in `code` when it is a string literal: `"pdf_corrupt"`.
fn literal_at(code: &str, at: usize) -> Option<&str> {
    let rest = code[at..].trim_start();
    let rest = rest.strip_prefix('"')?;
    rest.find('"').map(|end| &rest[..end])
}

#[test]
fn no_error_kind_is_written_as_a_string_outside_the_enum() {
    // Code (not tests) must name kinds as ErrorKind variants: a string assigned to a kind could
    // be a kind outside the README's list.
    let assigning = [
        "kind: \"",
        "kind:\"",
        ".fail(\"",
        "\"kind\": \"",
        "\"kind\":\"",
    ];
    let mut found = Vec::new();
    for (file, text) in production_code() {
        for pattern in assigning {
            for (i, _) in text.match_indices(pattern) {
                let line = text[..i].matches('\n').count() + 1;
                found.push(format!("{file}:{line}: {pattern}…"));
            }
        }
    }
    assert!(found.is_empty(), "kinds written as strings: {found:#?}");

    // Tests may compare a record's kind with a string: it must be one of the list.
    let known: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    let mut unknown = Vec::new();
    let mut compared = 0;
    for (file, text) in test_code() {
        let flat: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for pattern in ["[\"kind\"],", "[\"kind\"]==", "\"kind\":"] {
            for (i, _) in flat.match_indices(pattern) {
                let Some(value) = literal_at(&flat, i + pattern.len()) else {
                    continue;
                };
                compared += 1;
                if !known.contains(&value) {
                    unknown.push(format!("{file}: {pattern}\"{value}\""));
                }
            }
        }
    }
    assert!(compared >= 5, "the check found only {compared} comparisons");
    assert!(unknown.is_empty(), "kinds not in ErrorKind: {unknown:#?}");
}

#[test]
fn the_source_reader_sees_code_comments_literals_and_test_items() {
    let text = r##"
        // ErrorKind::Io in a comment
        fn f<'a>(x: &'a str) -> char { let _ = "} ErrorKind::NotFound"; let _ = r#"{"#; '}' }
        /* ErrorKind::EmptyFile
           in a block comment */
        #[cfg(test)]
        mod tests {
            fn g() { let _ = ('{', "}"); h(ErrorKind::PdfCorrupt); }
        }
        fn after() { std::io::ErrorKind::NotFound; }
    "##;
    let (code, structure) = scan(text);
    assert_eq!(code.len(), structure.len());
    assert_eq!(
        code.matches('\n').count(),
        text.matches('\n').count(),
        "lines kept"
    );
    assert!(!code.contains("ErrorKind::Io") && !code.contains("ErrorKind::EmptyFile"));
    let source = Source {
        path: PathBuf::from("example.rs"),
        code,
        structure,
    };
    let items = source.test_items();
    assert_eq!(items.len(), 1);
    assert!(names_variant(items[0], ErrorKind::PdfCorrupt));
    assert!(!items[0].contains("after"));
    let rest = source.non_test_code();
    assert!(rest.contains("fn after()") && !rest.contains("PdfCorrupt"));
    assert!(mentions(&rest, ErrorKind::NotFound), "in a string");
    assert!(!names_variant(
        "std::io::ErrorKind::NotFound",
        ErrorKind::NotFound
    ));
    assert!(!names_variant(
        "ErrorKind::PdfCorrupted",
        ErrorKind::PdfCorrupt
    ));
}
