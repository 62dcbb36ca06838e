//! `quire completions SHELL` and `quire man`: generated from the command-line definition, they
//! name every subcommand `quire --help` lists (and not the hidden worker).

use std::process::{Command, Output};

fn quire(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(args)
        .output()
        .expect("run quire");
    assert_eq!(
        out.status.code(),
        Some(0),
        "quire {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The subcommands of `quire --help`, from its "Commands:" section.
fn subcommands() -> Vec<String> {
    let help = String::from_utf8(quire(&["--help"]).stdout).unwrap();
    let names: Vec<String> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|n| n != "help")
        .collect();
    for expected in ["setup", "run", "watch", "completions", "man"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    names
}

#[test]
fn completions_of_each_shell_name_every_subcommand() {
    let names = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let script = String::from_utf8(quire(&["completions", shell]).stdout).unwrap();
        for name in &names {
            assert!(script.contains(name.as_str()), "{shell}: no {name}");
        }
        assert!(!script.contains("pdf-worker"), "{shell}: the hidden worker");
        // Options of a subcommand are completed too.
        assert!(script.contains("ep-fallback"), "{shell}");
    }
    assert!(String::from_utf8(quire(&["completions", "bash"]).stdout)
        .unwrap()
        .contains("complete -F _quire"));
    let bad = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid value 'tcsh'"));
}

#[test]
fn man_page_names_every_subcommand_and_dir_writes_one_page_each() {
    let names = subcommands();
    let page = String::from_utf8(quire(&["man"]).stdout).unwrap();
    assert!(page.contains("\n.TH quire 1 "), "{page}");
    // The SUBCOMMANDS section refers to each command's own page, `quire-run(1)` (roff escapes
    // the dashes).
    for name in &names {
        let entry = format!("\n.TP\nquire\\-{}(1)\n", name.replace('-', "\\-"));
        assert!(page.contains(&entry), "no {entry:?} in {page}");
    }
    assert!(!page.contains("pdf\\-worker"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    quire(&["man", "--dir", dir.path().to_str().unwrap()]);
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = names.iter().map(|n| format!("quire-{n}.1")).collect();
    expected.push("quire.1".into());
    // Commands with subcommands of their own get a page for each.
    for sub in ["list", "pull", "verify"] {
        expected.push(format!("quire-model-{sub}.1"));
    }
    expected.sort();
    assert_eq!(files, expected);
    let run = std::fs::read_to_string(dir.path().join("quire-run.1")).unwrap();
    assert!(run.contains("\n.TH quire-run 1 "), "{run}");
    assert!(run.contains("\\-\\-ep\\-fallback"), "{run}");
}
