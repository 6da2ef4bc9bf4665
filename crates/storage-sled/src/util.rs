//! Helpers shared by the log store and the state machine.

use std::path::Path;

use crate::error::{Result, SledStoreError};

/// Opens (or creates) a sled database in `dir` after checking that the directory is either
/// missing, empty, or already a sled database (so a directory written by another backend is
/// refused instead of being filled with sled files).
pub(crate) fn open_db(dir: &Path) -> Result<sled::Db> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            let empty = entries.next().is_none();
            let is_sled = dir.join("conf").is_file() && dir.join("db").is_file();
            if !empty && !is_sled {
                return Err(SledStoreError::Incompatible {
                    path: dir.to_path_buf(),
                    detail: "the directory is not empty and holds no sled database (no `conf` \
                             and `db` files); was it written by another storage backend?"
                        .to_owned(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(SledStoreError::Io {
                op: "read directory",
                path: dir.to_path_buf(),
                source: e,
            })
        }
    }
    // sled releases its file lock only when its background flusher lets go of the last
    // handle, shortly after the previous `Db` was dropped: wait a bounded time for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(dir).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => {
                return r.map_err(|e| SledStoreError::sled(format!("open of {}", dir.display()), e))
            }
        }
    }
}

/// Renders a key for error messages: UTF-8 text if printable, else hex.
pub(crate) fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("`{s}`"),
        _ => {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

/// Checks (or, on a store without one, writes) the format marker `key` in `tree`.
pub(crate) fn check_format(
    location: &Path,
    tree: &sled::Tree,
    tree_name: &str,
    key: &[u8],
    expected: &[u8],
) -> Result<()> {
    match tree
        .get(key)
        .map_err(|e| SledStoreError::sled(format!("get in `{tree_name}`"), e))?
    {
        Some(v) if v.as_ref() == expected => Ok(()),
        Some(v) => Err(SledStoreError::Incompatible {
            path: location.to_path_buf(),
            detail: format!(
                "tree `{tree_name}` has format marker {}, this build reads {}",
                show_key(&v),
                show_key(expected)
            ),
        }),
        None => {
            tree.insert(key, expected)
                .map_err(|e| SledStoreError::sled(format!("insert in `{tree_name}`"), e))?;
            Ok(())
        }
    }
}

/// Makes a sled database's flushed writes durable on Linux as well.
///
/// On Linux, sled 0.34's [`sled::Tree::flush`] writes its log buffers with `pwrite` and waits
/// for them with `sync_file_range`, which neither flushes the disk's write cache nor the
/// file's metadata (such as its grown size); its `fsync` of the data file happens only in a
/// background thread every `flush_every_ms`. Values too large to inline in its log go to
/// files under `blobs/`, which sled never syncs. So after every flush this `fdatasync`s the
/// `db` file and any blob file not synced before (and the `blobs` directory when one
/// appeared).
#[derive(Debug)]
pub(crate) struct Durability {
    dir: std::path::PathBuf,
    db_file: std::fs::File,
    synced_blobs: std::collections::HashSet<std::ffi::OsString>,
}

impl Durability {
    /// Opens the `db` file of the sled database in `dir` (for syncing), and syncs `dir`
    /// itself so the files sled created there are durable.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| SledStoreError::Io { op, path, source }
        };
        let db_path = dir.join("db");
        let db_file = std::fs::File::open(&db_path).map_err(io("open", &db_path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db_file,
            synced_blobs: Default::default(),
        })
    }

    /// The syncs described on [`Durability`] around `db.flush()`: blob files first (they
    /// are written when a value is inserted, before the log message pointing at them is
    /// flushed), then the flush, then the `db` file.
    pub(crate) fn flush(&mut self, db: &sled::Db) -> Result<()> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| SledStoreError::Io { op, path, source }
        };
        let blobs = self.dir.join("blobs");
        match std::fs::read_dir(&blobs) {
            Ok(list) => {
                let mut present = std::collections::HashSet::new();
                let mut new = false;
                for ent in list {
                    let name = ent.map_err(io("read directory", &blobs))?.file_name();
                    if !self.synced_blobs.contains(&name) {
                        let p = blobs.join(&name);
                        match std::fs::File::open(&p) {
                            Ok(f) => f.sync_data().map_err(io("fdatasync", &p))?,
                            // Removed by sled's garbage collection meanwhile.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(io("open", &p)(e)),
                        }
                        new = true;
                    }
                    present.insert(name);
                }
                if new {
                    std::fs::File::open(&blobs)
                        .and_then(|d| d.sync_all())
                        .map_err(io("fsync directory", &blobs))?;
                }
                self.synced_blobs = present;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read directory", &blobs)(e)),
        }
        db.flush().map_err(|e| SledStoreError::sled("flush", e))?;
        let db_path = self.dir.join("db");
        self.db_file.sync_data().map_err(io("fdatasync", &db_path))
    }
}
