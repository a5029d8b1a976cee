//! Dependencies inside a crate point one way too: the graph of references between a
//! crate's module files (`use crate::...`, `crate::a::b`, `super::...`, children) has no
//! circles. `scripts/check-module-graph.py` checks every workspace crate; this runs it,
//! and shows on a throwaway crate that it does catch a circle and nothing but one.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the checker from the workspace root, on `root` if given (else on the workspace).
fn run_checker(root: Option<&Path>) -> Output {
    let workspace = workspace_root();
    let script = workspace.join("scripts/check-module-graph.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).current_dir(&workspace);
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "python3 is not installed, and the module graph check needs it: \
             install it with `apt-get install python3` (Debian/Ubuntu) and run the test again"
        ),
        Err(e) => panic!("could not run python3 {}: {e}", script.display()),
    }
}

/// [`run_checker`] with `--strict`: intra-doc links and test code count too, as in the
/// architecture review's check.
fn run_strict_checker(root: Option<&Path>) -> Output {
    let workspace = workspace_root();
    let script = workspace.join("scripts/check-module-graph.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg("--strict").current_dir(&workspace);
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "python3 is not installed, and the module graph check needs it: \
             install it with `apt-get install python3` (Debian/Ubuntu) and run the test again"
        ),
        Err(e) => panic!("could not run python3 {}: {e}", script.display()),
    }
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn workspace_module_graphs_have_no_circles() {
    let out = run_checker(None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "scripts/check-module-graph.py found modules that depend on each other in a circle \
         (or could not run); move what both sides need into a module of its own:\n{}",
        describe(&out)
    );
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "streamcdn-module-graph-{tag}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The one line that closes the circle alpha -> beta -> alpha, a grouped `use crate::{...}`.
const BACK_EDGE: &str = "use crate::{alpha::Y, gamma::{self, Z}};";
const NO_BACK_EDGE: &str = "use crate::gamma::{self, Z};";

const ALPHA: &str = r#"use crate::beta::X;

pub struct Y;

pub fn make() -> X {
    let _ = crate::gamma::Z;
    X
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes() {
        let _ = make();
    }
}
"#;

const BETA: &str = r##"// use crate::alpha::Y; -- a comment is not a reference
BACK_EDGE_LINE

/// Not `crate::alpha::Y` either: doc text never counts.
pub struct X;

pub const NAME: &str = "crate::alpha::Y";
pub const RAW: &str = r#"use crate::alpha::{Y};"#;

pub fn z() -> Z {
    let _ = gamma::Z;
    Z
}

#[cfg(test)]
mod tests {
    // Test code may depend on anything: none of these close a circle.
    use super::*;
    use crate::alpha::Y;

    #[test]
    fn both() {
        let _ = (X, Y, crate::alpha::make());
    }
}
"##;

const GAMMA: &str = "pub struct Z;\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n";

fn fake_workspace(back_edge: bool) -> TempDir {
    let dir = TempDir::new(if back_edge { "circle" } else { "acyclic" });
    let src = dir.0.join("crates/fake/src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        dir.0.join("Cargo.toml"),
        "[workspace]\nresolver = \"2\"\nmembers = [\"crates/*\"]\n",
    )
    .unwrap();
    fs::write(
        dir.0.join("crates/fake/Cargo.toml"),
        "[package]\nname = \"fake\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    fs::write(
        src.join("lib.rs"),
        "//! Docs saying `use crate::alpha::Y;` are no reference.\n\
         pub mod alpha;\npub mod beta;\npub mod gamma;\n",
    )
    .unwrap();
    fs::write(src.join("alpha.rs"), ALPHA).unwrap();
    let line = if back_edge { BACK_EDGE } else { NO_BACK_EDGE };
    fs::write(src.join("beta.rs"), BETA.replace("BACK_EDGE_LINE", line)).unwrap();
    fs::write(src.join("gamma.rs"), GAMMA).unwrap();
    dir
}

#[test]
fn checker_fails_on_a_circle_and_only_on_one() {
    let circular = fake_workspace(true);
    let out = run_checker(Some(&circular.0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the checker missed the circle alpha <-> beta:\n{}",
        describe(&out)
    );
    assert!(
        stdout.contains("circle between 2 modules: alpha, beta"),
        "the report should name both modules of the circle:\n{}",
        describe(&out)
    );
    assert!(
        stdout.contains("beta.rs:2"),
        "the report should point at the line that closes the circle:\n{}",
        describe(&out)
    );

    let acyclic = fake_workspace(false);
    let out = run_checker(Some(&acyclic.0));
    assert_eq!(
        out.status.code(),
        Some(0),
        "without its back edge the fake crate has no circle (comments, strings and test \
         modules don't count), yet the checker failed:\n{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no circles"),
        "{}",
        describe(&out)
    );
}

#[test]
fn workspace_module_graphs_have_no_circles_counting_doc_links_and_tests() {
    let out = run_strict_checker(None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "scripts/check-module-graph.py --strict found modules that refer to each other in a \
         circle through a doc link or test code; write the link as plain `code`, or move \
         what both sides need into a module of its own:\n{}",
        describe(&out)
    );
}

#[test]
fn a_doc_link_closes_a_circle_only_for_the_strict_checker() {
    let linked = fake_workspace(false);
    let beta = linked.0.join("crates/fake/src/beta.rs");
    let text = fs::read_to_string(&beta).unwrap();
    let text = text.replace(
        "pub struct X;",
        "pub struct X;\n\n/// Made by [`crate::alpha::make`].\npub struct W;",
    );
    fs::write(&beta, text).unwrap();

    let out = run_checker(Some(&linked.0));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = run_strict_checker(Some(&linked.0));
    assert_eq!(
        out.status.code(),
        Some(1),
        "the doc link beta -> alpha closes alpha -> beta:\n{}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("circle between 2 modules: alpha, beta") && stdout.contains("beta.rs:7"),
        "{}",
        describe(&out)
    );

    // Test code is a module of its own: beta's tests using alpha is no circle.
    let acyclic = fake_workspace(false);
    let out = run_strict_checker(Some(&acyclic.0));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
