//! Files that survive a crash whole: written to a hidden temporary file beside the
//! target (`.<name>.tmp`), synced, renamed over the old one, and the directory synced,
//! so after a crash a reader finds the old contents or the new, never half of them.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` durably; a new file gets the process's default mode.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_file(path, bytes, None)
}

/// Replaces `path` with `bytes` durably; on Unix the file is created with `mode` (e.g.
/// `0o600` for a private key), so it is never readable more widely, even briefly.
pub fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_file(path, bytes, Some(mode))
}

fn write_file(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let temp = temp_path(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

fn temp_path(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(".tmp");
    Ok(path.with_file_name(temp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of its own for each test.
    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("streamcdn-support-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("replaces");
        let path = dir.join("state.json");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_gets_the_mode_asked_for() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("mode");
        let path = dir.join("key.pem");
        write_with_mode(&path, b"secret", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        assert!(write(Path::new("/"), b"x").is_err());
    }
}
