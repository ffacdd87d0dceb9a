//! What happens on disk once a file's rows are committed: its rejects CSV
//! in `bad_records`, then the file itself moved to `processed`, deleted or
//! kept (`after_commit`). Every step is idempotent and safe to redo after a
//! crash: the table already says the file is done, so it is never read
//! again, only disposed of again. Every file written here appears whole
//! (`fsutil::AtomicFile`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::core::pipeline::AfterCommit;
use crate::db::files::StoredReject;
use crate::fsutil::{AtomicFile, Stamp};
use crate::source::FileTask;

/// Where a pipeline's finished files and rejects go.
#[derive(Debug, Clone)]
pub struct Disposal {
    pub processed: PathBuf,
    pub bad_records: PathBuf,
    pub after_commit: AfterCommit,
}

/// A disk operation after the commit failed; it is retried, the rows stay
/// committed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("rejects file {path}: {source}")]
    Rejects { path: PathBuf, source: io::Error },
    #[error("reading the rejects: {0}")]
    Database(#[from] crate::db::DbError),
    #[error("move to {to}: {source}")]
    Move { to: PathBuf, source: io::Error },
    #[error("delete: {0}")]
    Delete(io::Error),
    #[error("disk work task: {0}")]
    Task(String),
}

/// `<bad_records>/<file>.rejects.csv` being written: line, reason,
/// detail, raw; appended page by page (a file may have millions), put in
/// place by `finish`.
pub struct RejectsFile {
    file: AtomicFile,
    /// The plain name, and the one with the file's fingerprint for when an
    /// earlier file of the same name left its own rejects file there.
    plain: PathBuf,
    tagged: PathBuf,
}

impl RejectsFile {
    pub fn create(d: &Disposal, file: &FileTask) -> Result<RejectsFile, DiskError> {
        let plain = d.bad_records.join(format!("{}.rejects.csv", file.name));
        let tagged = d.bad_records.join(format!("{}.{}.rejects.csv", file.name, short_fingerprint(&file.fingerprint)));
        let error = |source| DiskError::Rejects { path: plain.clone(), source };
        let mut f = AtomicFile::create(&plain).map_err(error)?;
        f.writer().write_all(b"line,reason,detail,raw\n").map_err(error)?;
        Ok(RejectsFile { file: f, plain, tagged })
    }

    pub fn append(&mut self, page: &[StoredReject]) -> Result<(), DiskError> {
        let error = |source| DiskError::Rejects { path: self.plain.clone(), source };
        let mut w = csv::Writer::from_writer(self.file.writer());
        for r in page {
            w.write_record([r.line.to_string().as_bytes(), r.reason.as_bytes(), r.detail.as_bytes(), &r.raw])
                .map_err(|e| error(io::Error::other(e)))?;
        }
        w.flush().map_err(error)
    }

    /// Puts the file in place. An earlier file of the same name is never
    /// overwritten: this one takes the tagged name (and replaces only what
    /// an earlier run of this very identity left there); the same content
    /// already in place is left as it is.
    pub fn finish(mut self) -> Result<PathBuf, DiskError> {
        let error = |path: &Path, source| DiskError::Rejects { path: path.to_owned(), source };
        match self.file.commit(&self.plain, false) {
            Ok(()) => Ok(self.plain),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.file.same_as(&self.plain).map_err(|e| error(&self.plain, e))? {
                    return Ok(self.plain);
                }
                self.file.commit(&self.tagged, true).map_err(|e| error(&self.tagged, e))?;
                Ok(self.tagged)
            }
            Err(e) => Err(error(&self.plain, e)),
        }
    }
}

/// Moves, deletes or keeps the source file. A file already gone counts as
/// disposed of (it may have been moved before a crash, or deleted by
/// someone). `Ok(true)`: this identity is still at its path (kept).
pub fn dispose(d: &Disposal, file: &FileTask) -> Result<bool, DiskError> {
    // Only this identity is moved: a new file that took the name since (a
    // producer reusing it) is left for the Watcher, never moved unread.
    // The same inode, size and mtime as when it was identified: the same
    // file (an lstat, no open). Anything else is hashed again.
    let unchanged =
        std::fs::symlink_metadata(&file.path).is_ok_and(|m| m.file_type().is_file() && Stamp::of(&m) == file.stamp);
    let present = unchanged
        || crate::fsutil::open_regular(&file.path)
            .and_then(|(f, meta)| {
                let size = meta.len();
                Ok(size == file.size && crate::fsutil::fingerprint(&f, size)? == file.fingerprint)
            })
            .unwrap_or(false);
    if !present {
        return Ok(false);
    }
    match d.after_commit {
        AfterCommit::Keep => Ok(true),
        AfterCommit::Delete => std::fs::remove_file(&file.path).map(|()| false).map_err(DiskError::Delete),
        AfterCommit::Move => {
            // Never overwrite an earlier file of the same name: this one
            // gets its fingerprint in its name instead (and replaces only
            // what an earlier run of this very identity left there).
            // The name as it is on disk (bytes: it need not be UTF-8).
            let name = file.path.file_name().unwrap_or(file.name.as_ref());
            let plain = d.processed.join(name);
            match crate::fsutil::move_file(&file.path, &plain, false) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let tagged =
                        d.processed.join(crate::fsutil::tagged_name(name, short_fingerprint(&file.fingerprint)));
                    crate::fsutil::move_file(&file.path, &tagged, true)
                        .map_err(|source| DiskError::Move { to: tagged, source })
                }
                moved => moved.map_err(|source| DiskError::Move { to: plain, source }),
            }
            .map(|()| false)
        }
    }
}

fn short_fingerprint(fp: &str) -> &str {
    let hash = fp.rsplit('-').next().unwrap_or(fp);
    &hash[..hash.len().min(12)]
}

/// Removes `.*.tmp` files (what `AtomicFile` leaves when the process is
/// killed midway) from a folder only the daemon writes: the work they
/// belonged to is redone from the table when the file is claimed again.
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") && entry.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %entry.path().display(), "removed a leftover temp file"),
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a leftover temp file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(dir: &Path, name: &str, content: &[u8]) -> FileTask {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let (f, _) = crate::fsutil::open_regular(&path).unwrap();
        FileTask {
            file_id: 1,
            fingerprint: crate::fsutil::fingerprint(&f, meta.len()).unwrap(),
            path,
            name: name.into(),
            size: meta.len(),
            stamp: Stamp::of(&meta),
            gzip: false,
            offset: 0,
            line: 1,
        }
    }

    fn disposal(root: &Path, after_commit: AfterCommit) -> Disposal {
        let d = Disposal { processed: root.join("processed"), bad_records: root.join("bad"), after_commit };
        std::fs::create_dir_all(&d.processed).unwrap();
        std::fs::create_dir_all(&d.bad_records).unwrap();
        d
    }

    /// A second file of the same name never replaces the first one's
    /// rejects; the same content again is left as it is; nothing of the
    /// temp file stays.
    #[test]
    fn rejects_files_never_overwrite_another_files() {
        let root = tempfile::tempdir().unwrap();
        let d = disposal(root.path(), AfterCommit::Move);
        let page = |line| {
            vec![StoredReject { line, reason: "too_long".into(), detail: "x: long".into(), raw: b"a,\"b\"".to_vec() }]
        };
        let first = task(&root.path().join("processed"), "a.csv", b"one");
        let write = |file: &FileTask, line| {
            let mut r = RejectsFile::create(&d, file).unwrap();
            r.append(&page(line)).unwrap();
            r.finish().unwrap()
        };
        let plain = write(&first, 2);
        assert_eq!(plain, d.bad_records.join("a.csv.rejects.csv"));
        assert_eq!(
            std::fs::read_to_string(&plain).unwrap(),
            "line,reason,detail,raw\n2,too_long,x: long,\"a,\"\"b\"\"\"\n"
        );
        assert_eq!(write(&first, 2), plain, "the same content again");
        let second = task(&root.path().join("processed"), "a.csv", b"two!");
        let tagged = write(&second, 3);
        assert_ne!(tagged, plain);
        assert!(std::fs::read_to_string(&plain).unwrap().starts_with("line,reason,detail,raw\n2,"));
        let names: Vec<String> = std::fs::read_dir(&d.bad_records)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    /// Only the identity that was read is disposed of; a file gone counts as
    /// done; keep leaves it.
    #[test]
    fn dispose_moves_only_the_identity_read() {
        let root = tempfile::tempdir().unwrap();
        let incoming = root.path().join("in");
        std::fs::create_dir_all(&incoming).unwrap();
        let d = disposal(root.path(), AfterCommit::Move);
        let f = task(&incoming, "a.csv", b"one");
        assert!(!dispose(&d, &f).unwrap());
        assert!(d.processed.join("a.csv").exists() && !f.path.exists());
        assert!(!dispose(&d, &f).unwrap(), "already gone");
        let replaced = task(&incoming, "a.csv", b"other content");
        assert!(!dispose(&d, &FileTask { stamp: f.stamp.clone(), ..f.clone() }).unwrap());
        assert!(replaced.path.exists(), "a new file under the name is never moved unread");
        let keep = disposal(root.path(), AfterCommit::Keep);
        assert!(dispose(&keep, &replaced).unwrap());
    }
}
