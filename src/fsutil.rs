//! File-system operations with the care the guarantees need: no following
//! links, no blocking on FIFOs, fsync before rename, and moves that work
//! across file systems.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens a file for reading only if it is a regular file: `O_NOFOLLOW`
/// refuses symlinks and `O_NONBLOCK` keeps a FIFO from hanging the open.
pub fn open_regular(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok((file, meta))
}

/// Bytes hashed for a file's fingerprint.
const FINGERPRINT_BYTES: u64 = 64 * 1024;

/// What a stat of a file says: enough to tell that a path still holds the
/// very file seen before, unchanged (same inode, size and mtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ino: meta.ino(),
        }
    }
}

/// A file's identity within its path: its size and the SHA-256 of its first
/// 64 KiB, as `<size>-<24 hex digits>`.
pub fn fingerprint(file: &File, size: u64) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut head = Vec::with_capacity(FINGERPRINT_BYTES.min(size) as usize);
    file.take(FINGERPRINT_BYTES).read_to_end(&mut head)?;
    let digest = Sha256::digest(&head);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{size}-{hex}"))
}

/// A file written under a hidden temp name in its folder and put in
/// place only once complete: written, flushed, fsynced, renamed, and the
/// folder fsynced. Errors of write, fsync and close all surface (a full
/// disk often shows only at fsync). Dropped without `commit`, the temp file
/// is removed. The one way ingestd writes a file that must appear whole.
pub struct AtomicFile {
    tmp: PathBuf,
    file: Option<io::BufWriter<File>>,
}

impl AtomicFile {
    /// Starts `target`'s temp file (`.<name>.<pid>.tmp` beside it).
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        let tmp = temp_sibling(target);
        let file = File::create(&tmp)?;
        Ok(AtomicFile { tmp, file: Some(io::BufWriter::new(file)) })
    }

    pub fn writer(&mut self) -> &mut io::BufWriter<File> {
        self.file.as_mut().expect("present until committed")
    }

    /// Flushes and fsyncs the content (a commit does it too).
    fn sync(&mut self) -> io::Result<()> {
        let w = self.writer();
        w.flush()?;
        w.get_ref().sync_all()
    }

    /// Whether the content equals the file at `other` (for not replacing
    /// an identical file under another name).
    pub fn same_as(&mut self, other: &Path) -> io::Result<bool> {
        self.sync()?;
        let (a, b) = (std::fs::metadata(&self.tmp)?, std::fs::metadata(other)?);
        Ok(a.len() == b.len() && std::fs::read(&self.tmp)? == std::fs::read(other)?)
    }

    /// Puts the file at `target`. Unless `replace`, a file already there
    /// stays and this fails with `AlreadyExists` (the temp file is kept for
    /// another `commit`).
    pub fn commit(&mut self, target: &Path, replace: bool) -> io::Result<()> {
        self.sync()?;
        if replace {
            std::fs::rename(&self.tmp, target)?;
        } else {
            rename_noreplace(&self.tmp, target)?;
        }
        self.file = None;
        sync_dir(target)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            // A partial temp file would keep a full disk full.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `target` atomically (see [`AtomicFile`]), replacing any file there.
pub fn write_atomic(target: &Path, fill: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>) -> io::Result<()> {
    let mut f = AtomicFile::create(target)?;
    fill(f.writer())?;
    f.commit(target, true)
}

/// Moves a file, falling back to an atomic copy and a remove across file
/// systems. Unless `replace`, a file already at `to` stays and the move
/// fails with `AlreadyExists`.
///
/// A same-file-system rename is not followed by a directory fsync: if a
/// crash undoes it, the file reappears in incoming, its identity is already
/// done, and it is only moved again. (A fsync per file would cap the daemon
/// at the journal's commit rate when thousands of small files arrive.)
pub fn move_file(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    let renamed = if replace { std::fs::rename(from, to) } else { rename_noreplace(from, to) };
    match renamed {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let mut copy = AtomicFile::create(to)?;
            io::copy(&mut File::open(from)?, copy.writer())?;
            copy.commit(to, replace)?;
            std::fs::remove_file(from)
        }
        other => other,
    }
}

/// `rename` that fails with `AlreadyExists` instead of replacing `to`: one
/// `renameat2(RENAME_NOREPLACE)`, or, where the file system does not
/// support it, a look first (racy, but only this daemon writes there).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            std::fs::rename(from, to)
        }
        _ => Err(e),
    }
}

fn temp_sibling(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// `name` with `tag` before its `.csv`/`.csv.gz` ending: `a.csv` → `a.TAG.csv`.
/// Works on the name's bytes: a name need not be UTF-8.
pub fn tagged_name(name: &OsStr, tag: &str) -> OsString {
    let bytes = name.as_bytes();
    let lower = bytes.to_ascii_lowercase();
    for ext in [&b".csv.gz"[..], b".csv"] {
        if lower.ends_with(ext) && bytes.len() > ext.len() {
            let (stem, ending) = bytes.split_at(bytes.len() - ext.len());
            return OsString::from_vec([stem, b".", tag.as_bytes(), ending].concat());
        }
    }
    OsString::from_vec([bytes, b".", tag.as_bytes()].concat())
}

/// A file name (or path) as text that shows what it was: itself when it is
/// UTF-8; otherwise each byte that is not UTF-8 as `\xNN`, and a backslash
/// as `\\`. Stored as `source_file`, in `ingest_files` and in logs.
pub fn display_name(name: &OsStr) -> String {
    if let Some(s) = name.to_str() {
        return s.to_owned();
    }
    let mut out = String::with_capacity(name.len() + 8);
    let mut rest = name.as_bytes();
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(&s.replace('\\', "\\\\"));
                return out;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                let valid = std::str::from_utf8(valid).expect("valid up to here");
                out.push_str(&valid.replace('\\', "\\\\"));
                let bad = e.error_len().unwrap_or(after.len());
                for b in &after[..bad] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                rest = &after[bad..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_before_the_extension() {
        let t = |n: &str| tagged_name(OsStr::new(n), "x");
        assert_eq!(t("a.csv"), "a.x.csv");
        assert_eq!(t("a.CSV.gz"), "a.x.CSV.gz");
        assert_eq!(t("odd"), "odd.x");
        assert_eq!(tagged_name(OsStr::from_bytes(b"b\xffd.csv"), "x"), OsStr::from_bytes(b"b\xffd.x.csv"));
    }

    #[test]
    fn names_that_are_not_utf8_show_what_they_were() {
        let d = |b: &[u8]| display_name(OsStr::from_bytes(b));
        assert_eq!(d(b"plain.csv"), "plain.csv");
        assert_eq!(d(b"back\\slash.csv"), "back\\slash.csv", "UTF-8 names stay as they are");
        assert_eq!(d(b"b\xffd.csv"), "b\\xffd.csv");
        assert_eq!(d(b"\xc3\x28\\.csv"), "\\xc3(\\\\.csv");
        assert_eq!(d(b"caf\xc3\xa9\xff.csv"), "caf\u{e9}\\xff.csv");
        assert_ne!(d(b"a\xff.csv"), d(b"a\xfe.csv"));
    }

    #[test]
    fn moves_replace_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let e = move_file(&a, &b, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&a).unwrap(), b"a");
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
        move_file(&a, &c, false).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).unwrap(), b"a");
        move_file(&c, &b, true).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"a");
    }

    #[test]
    fn open_regular_refuses_links_and_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.csv");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("l.csv");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = dir.path().join("p.csv");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(open_regular(&file).is_ok_and(|(_, m)| m.is_file()));
        assert!(open_regular(&link).is_err());
        assert!(open_regular(&fifo).is_err());
        assert!(open_regular(dir.path()).is_err());
    }
}
