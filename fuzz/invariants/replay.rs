/// Runs `check` on every file of `fuzz/corpus/<target>/` (seeds, and inputs that once
/// crashed or found new code); a panic names the file. For crates under `crates/`.
fn replay_corpus(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        eprintln!("replaying {}", path.display());
        check(&std::fs::read(&path).expect("a readable corpus file"));
        files += 1;
    }
    assert!(files > 0, "{} is empty", dir.display());
}
