//! The docs stay true (issue 18): every relative link and anchor in
//! README.md and docs/ resolves; every environment variable the function
//! reads and every errorType it returns appears in them, and they name no
//! variable and no `PredictionOne.*` errorType that the code does not know.
//! Plain file reading: no server, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// README.md and every Markdown page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![Path::new(ROOT).join("README.md")];
    let docs = Path::new(ROOT).join("docs");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&docs)
        .expect("docs/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    found.sort();
    pages.extend(found);
    pages
}

/// The text outside fenced code blocks.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation (but `-` and `_`)
/// dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a page has, as GitHub makes them (a repeated heading gets
/// `-1`, `-2`, ...).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose(text).lines() {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of the inline links `[text](target)` in a page's prose.
fn links(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut out = Vec::new();
    let bytes = prose.as_bytes();
    let mut i = 0;
    while let Some(at) = prose[i..].find("](") {
        let start = i + at + 2;
        let mut depth = 0;
        let mut end = start;
        while end < bytes.len() {
            match bytes[end] {
                b'(' => depth += 1,
                b')' if depth == 0 => break,
                b')' => depth -= 1,
                b'\n' => break,
                _ => {}
            }
            end += 1;
        }
        let target = prose[start..end].trim();
        // `[x](y "title")`: the target is the first word.
        let target = target.split_whitespace().next().unwrap_or_default();
        if !target.is_empty() {
            out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
        }
        i = end.max(start);
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let here = page.parent().unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                here.join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: {target} (no such file)", page.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if !anchors(&text).contains(&anchor.to_lowercase()) {
                    broken.push(format!("{}: {target} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(checked > 20, "the links were found ({checked})");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Words of the form `P1_...` in a text.
fn variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("P1_") {
        let before = rest[..at].chars().next_back();
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && word.len() > 3 {
            out.insert(word.trim_end_matches('_').to_string());
        }
        rest = &rest[at + 3..];
    }
    out
}

/// Every file under a directory, with one of the extensions.
fn files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path, extensions));
        } else if path
            .extension()
            .is_some_and(|x| extensions.iter().any(|e| x == *e))
        {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_variable_the_function_reads_is_documented_and_no_other() {
    let config = std::fs::read_to_string(Path::new(ROOT).join("src/config.rs")).unwrap();
    let read: BTreeSet<String> = variables(&config);
    assert!(read.len() >= 20, "the scan found the variables: {read:?}");
    // What any of the code knows: the function, its tests and scripts.
    let mut known = BTreeSet::new();
    for dir in ["src", "tests", "scripts", "infra", "bench", "examples"] {
        for file in files(
            &Path::new(ROOT).join(dir),
            &["rs", "py", "sh", "yaml", "json", "toml"],
        ) {
            known.extend(variables(
                &std::fs::read_to_string(file).unwrap_or_default(),
            ));
        }
    }
    let mut documented = BTreeSet::new();
    for page in pages() {
        documented.extend(variables(&std::fs::read_to_string(page).unwrap()));
    }
    let undocumented: Vec<_> = read.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "read but not documented: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "documented but unknown to the code: {unknown:?}"
    );
}

#[test]
fn every_error_type_is_documented_and_no_other() {
    let mut docs = String::new();
    for page in pages() {
        docs.push_str(&std::fs::read_to_string(page).unwrap());
    }
    let types = p1_key_broker::error::ERROR_TYPES;
    let missing: Vec<_> = types
        .iter()
        .filter(|t| !docs.contains(&format!("`{t}`")))
        .collect();
    assert!(missing.is_empty(), "errorTypes not documented: {missing:?}");
    // Every `PredictionOne.*` name the docs use is one the code returns.
    let mut unknown = BTreeSet::new();
    let mut rest = docs.as_str();
    while let Some(at) = rest.find("PredictionOne.") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '*')
            .collect();
        let name = name.trim_end_matches('.');
        if !name.ends_with('*') && !types.contains(&name) {
            unknown.insert(name.to_string());
        }
        rest = &rest[at + 14..];
    }
    assert!(
        unknown.is_empty(),
        "errorTypes the code does not return: {unknown:?}"
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug("Exactly one retraining per uploaded file"),
        "exactly-one-retraining-per-uploaded-file"
    );
    assert_eq!(
        slug("`P1_SWEEP_ENSURE` and more!"),
        "p1_sweep_ensure-and-more"
    );
    assert_eq!(
        slug("Scale, on paper: 10,000 models"),
        "scale-on-paper-10000-models"
    );
    let a = anchors("# A\n## B b\n```\n# not\n```\n## B b\n");
    assert_eq!(
        a,
        BTreeSet::from(["a".into(), "b-b".into(), "b-b-1".into()])
    );
    assert_eq!(
        links("see [x](a.md#b) and [y](#c \"t\")\n```\n[z](no)\n```"),
        ["a.md#b", "#c"]
    );
}
