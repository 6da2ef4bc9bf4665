//! Durable creation of directories, shared by the storage backends and the node's data
//! directory.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

/// Makes the entries of the directory `dir` (files and directories created, renamed or
/// removed in it) durable: opens it and `fsync`s it.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing ancestors, like [`std::fs::create_dir_all`], and makes each
/// directory it creates durable by `fsync`ing that directory's parent right after creating
/// it (so a crash or power loss cannot lose a directory that was reported created, nor the
/// files later made durable inside it). Succeeds without syncing anything when `dir` already
/// exists; fails if `dir` or an ancestor exists but is not a directory.
///
/// A directory created concurrently by someone else is synced as if this call had created
/// it: the other creator may not have synced it.
pub fn create_dir_all_synced(dir: &Path) -> std::io::Result<()> {
    // The missing directories, deepest first.
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", at.display()),
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => at = p,
                    // A relative path's first component: its parent is the working directory.
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
        tracing::debug!(dir = %d.display(), "created directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_directories_are_created_and_an_existing_one_is_fine() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("a").join("b").join("c");
        create_dir_all_synced(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all_synced(&deep).unwrap();
        create_dir_all_synced(base.path()).unwrap();
        let file = base.path().join("a").join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(create_dir_all_synced(&file).is_err());
        assert!(create_dir_all_synced(&file.join("below")).is_err());
    }
}
