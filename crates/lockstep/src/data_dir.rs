//! The data directory's identity marker and lock. A node writes `LOCKSTEP` into a new data
//! directory (format version, storage backend, cluster id, node id) and refuses to start on
//! a directory written for another backend, cluster or node — rather than mix data. While
//! it runs it holds an exclusive lock on `LOCK` in the directory (with its process id in
//! the file), so a second process on the same directory refuses to start.

use std::io::Write;
use std::path::{Path, PathBuf};

use lockstep_core::NodeId;

/// Name of the marker file.
pub const MARKER: &str = "LOCKSTEP";
/// Name of the lock file.
pub const LOCK: &str = "LOCK";
const FORMAT: &str = "1";

/// The data directory cannot be used by this node.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// An I/O error on the directory or the marker.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The directory belongs to something else.
    #[error("data directory {path} was written {found}, but this node is configured {expected}; refusing to start")]
    Mismatch {
        /// The directory.
        path: PathBuf,
        /// What the marker says.
        found: String,
        /// What the configuration says.
        expected: String,
    },
    /// Another process (or another node in this one) holds the directory's lock.
    #[error("data directory {path} is in use by another node ({}); refusing to start", holder.map_or("its process id is unknown".to_string(), |p| format!("process {p}")))]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The process id the holder wrote into the lock file, if readable.
        holder: Option<u32>,
    },
    /// The directory has files but no marker.
    #[error("data directory {0} is not empty and has no {MARKER} marker: it was not written by lockstep (or by an older version); refusing to start")]
    Foreign(PathBuf),
}

/// What a data directory is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Storage backend name.
    pub backend: String,
    /// Cluster id.
    pub cluster_id: String,
    /// Node id.
    pub node_id: NodeId,
}

impl Identity {
    fn render(&self) -> String {
        format!(
            "format={FORMAT}\nbackend={}\ncluster_id={}\nnode_id={}\n",
            self.backend, self.cluster_id, self.node_id
        )
    }

    fn describe(&self) -> String {
        format!(
            "for backend `{}`, cluster `{}`, node {}",
            self.backend, self.cluster_id, self.node_id
        )
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The exclusive lock on a data directory: held until dropped (the operating system
/// releases it when the process dies, however it dies).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Takes the exclusive lock on `dir` (creating `dir/LOCK`), and writes this process's id
/// into the lock file. Fails with [`DataDirError::Locked`], naming the holder's process id
/// when it can be read, if another process or node holds it.
pub fn lock(dir: &Path) -> Result<DirLock, DataDirError> {
    let path = dir.join(LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => {}
        Err(fs4::TryLockError::Error(e)) => return Err(io(&path)(e)),
        Err(fs4::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(DataDirError::Locked {
                path: dir.to_path_buf(),
                holder,
            });
        }
    }
    file.set_len(0).map_err(io(&path))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(io(&path))?;
    Ok(DirLock { _file: file })
}

/// Creates or checks the marker in `dir` for `id`. A missing `dir` (and missing parents)
/// is created durably: the parent of each new directory is synced.
pub fn claim(dir: &Path, id: &Identity) -> Result<(), DataDirError> {
    lockstep_core::storage::create_dir_all_synced(dir).map_err(io(dir))?;
    let marker = dir.join(MARKER);
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let mut found = Identity {
                backend: String::new(),
                cluster_id: String::new(),
                node_id: 0,
            };
            let mut format = "";
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("format", v)) => format = v,
                    Some(("backend", v)) => found.backend = v.to_string(),
                    Some(("cluster_id", v)) => found.cluster_id = v.to_string(),
                    Some(("node_id", v)) => found.node_id = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            if format != FORMAT || found != *id {
                return Err(DataDirError::Mismatch {
                    path: dir.to_path_buf(),
                    found: if format == FORMAT {
                        found.describe()
                    } else {
                        format!("in marker format `{format}`")
                    },
                    expected: id.describe(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{MARKER}.tmp"));
            // A crash while claiming leaves only the temporary marker: start over.
            let _ = std::fs::remove_file(&tmp);
            let has_files = std::fs::read_dir(dir).map_err(io(dir))?.next().is_some();
            if has_files {
                return Err(DataDirError::Foreign(dir.to_path_buf()));
            }
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(id.render().as_bytes()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, &marker).map_err(io(&marker))?;
            lockstep_core::storage::sync_dir(dir).map_err(io(dir))?;
            Ok(())
        }
        Err(e) => Err(io(&marker)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(backend: &str, cluster: &str, node: NodeId) -> Identity {
        Identity {
            backend: backend.into(),
            cluster_id: cluster.into(),
            node_id: node,
        }
    }

    #[test]
    fn a_directory_is_claimed_once_and_then_only_by_the_same_identity() {
        let d = tempfile::tempdir().unwrap();
        claim(d.path(), &id("file", "a", 1)).unwrap();
        claim(d.path(), &id("file", "a", 1)).unwrap();
        for (other, word) in [
            (id("sled", "a", 1), "backend `sled`"),
            (id("file", "b", 1), "cluster `b`"),
            (id("file", "a", 2), "node 2"),
        ] {
            let err = claim(d.path(), &other).unwrap_err().to_string();
            assert!(
                err.contains("refusing to start") && err.contains(word),
                "{err}"
            );
        }
    }

    #[test]
    fn a_claim_interrupted_before_the_rename_is_redone() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(format!("{MARKER}.tmp")), b"format=1\n").unwrap();
        claim(d.path(), &id("file", "a", 1)).unwrap();
        claim(d.path(), &id("file", "a", 1)).unwrap();
    }

    #[test]
    fn a_missing_nested_directory_is_created_and_claimed() {
        let d = tempfile::tempdir().unwrap();
        let nested = d.path().join("node").join("data");
        claim(&nested, &id("file", "a", 1)).unwrap();
        assert!(nested.join(MARKER).is_file());
        claim(&nested, &id("file", "a", 1)).unwrap();
    }

    #[test]
    fn a_non_empty_directory_without_a_marker_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("something"), b"x").unwrap();
        let err = claim(d.path(), &id("file", "a", 1)).unwrap_err();
        assert!(matches!(err, DataDirError::Foreign(_)), "{err}");
    }
}
