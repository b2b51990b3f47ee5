//! Small file-system helpers that keep writes all-or-nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` through a temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// sha256 (lower-case hex) of a regular file's bytes, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A hidden name beside `path`, unique to this process: `.NAME.tmp-PID-N`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// How an output folder and a source folder overlap, in words ("is", "is inside",
/// "holds"), or None when neither holds the other. Paths are compared resolved (symlinks,
/// `..`), the output folder's missing tail lexically.
pub fn overlap(out: &Path, source: &Path) -> Option<&'static str> {
    let (out, source) = (resolve(out)?, resolve(source)?);
    if out == source {
        Some("is the source model folder")
    } else if out.starts_with(&source) {
        Some("is inside the source model folder")
    } else if source.starts_with(&out) {
        Some("holds the source model folder")
    } else {
        None
    }
}

/// `path` made absolute, resolved component by component while it exists (symlinks
/// followed, `..` applied to the real folder), and lexically for its missing tail.
fn resolve(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let abs = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().ok()?.join(path) };
    let mut out = PathBuf::new();
    let mut missing = false;
    for c in abs.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if !missing {
                    match std::fs::canonicalize(&out) {
                        Ok(real) => out = real,
                        Err(_) => missing = true,
                    }
                }
            }
        }
    }
    Some(out)
}

/// Why an input file was refused before or while it was read. It travels inside the
/// `std::io::Error` of the read (so every module's `Io { path, source }` error carries it),
/// and the CLI classifies it as the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum InputRefused {
    /// A folder, device, FIFO or socket (`/dev/zero`, `/dev/stdin`, a named pipe): refused
    /// by type, before a byte is read.
    #[error("is {what}, not a regular file")]
    NotAFile { what: &'static str },
    /// More bytes than the cap: reading stopped at the cap.
    #[error("is larger than the {} this file may have", crate::human::human_bytes(*.limit))]
    TooLarge { limit: u64 },
    /// Bytes that are not UTF-8, on this 1-based line.
    #[error("is not UTF-8 text (line {line})")]
    NotUtf8 { line: usize },
}

impl InputRefused {
    fn into_io(self) -> std::io::Error {
        let kind = match self {
            InputRefused::NotAFile { .. } => std::io::ErrorKind::InvalidInput,
            InputRefused::TooLarge { .. } => std::io::ErrorKind::FileTooLarge,
            InputRefused::NotUtf8 { .. } => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, self)
    }

    /// The refusal an I/O error carries, if it is one.
    pub fn of(e: &std::io::Error) -> Option<&InputRefused> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<InputRefused>())
    }
}

/// A reader that fails with [`InputRefused::TooLarge`] as soon as the file holds more than
/// `limit` bytes: the cap holds while reading, so a huge file costs `limit` bytes at most.
pub struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: std::io::Read> Bounded<R> {
    /// Read at most `limit` bytes of `inner` (an already open file).
    pub fn new(inner: R, limit: u64) -> Self {
        Self { inner, left: limit, limit }
    }
}

impl Bounded<std::fs::File> {
    /// The file itself, for readers that seek (parquet, memory maps): refused when its
    /// current size is over the cap.
    pub fn into_checked_file(self) -> std::io::Result<std::fs::File> {
        if self.inner.metadata()?.len() > self.limit {
            return Err(InputRefused::TooLarge { limit: self.limit }.into_io());
        }
        Ok(self.inner)
    }
}

impl<R: std::io::Read> std::io::Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the cap: one more byte means the file is too large.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(InputRefused::TooLarge { limit: self.limit }.into_io()),
            };
        }
        let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// Open an input file for reading at most `limit` bytes. Only regular files (symlinks
/// followed) are opened: a device, FIFO, socket or folder is refused by its type, before
/// any read (and without blocking on a FIFO that has no writer).
pub fn open_input(path: &Path, limit: u64) -> std::io::Result<Bounded<std::fs::File>> {
    check_regular(&std::fs::metadata(path)?)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The type was checked above; should the path be swapped for a FIFO in between,
        // opening must not wait for a writer (it is refused by the check below).
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    check_regular(&file.metadata()?)?;
    Ok(Bounded { inner: file, left: limit, limit })
}

fn check_regular(m: &std::fs::Metadata) -> std::io::Result<()> {
    if m.is_file() {
        return Ok(());
    }
    let what = if m.is_dir() { "a folder" } else { special_kind(m) };
    Err(InputRefused::NotAFile { what }.into_io())
}

#[cfg(unix)]
fn special_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::Metadata) -> &'static str {
    "a special file"
}

/// The bytes of an input file of at most `limit` bytes (see [`open_input`]).
pub fn read_input(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut reader = open_input(path, limit)?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The text of an input file of at most `limit` bytes; bytes that are not UTF-8 are
/// refused with their line number.
pub fn read_text_input(path: &Path, limit: u64) -> std::io::Result<String> {
    utf8_text(read_input(path, limit)?)
}

/// `bytes` as text, or [`InputRefused::NotUtf8`] naming the line of the first bad byte.
pub fn utf8_text(bytes: Vec<u8>) -> std::io::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..valid].iter().filter(|&&b| b == b'\n').count();
        InputRefused::NotUtf8 { line }.into_io()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_are_found_whichever_folder_exists() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        assert_eq!(overlap(&base, &base), Some("is the source model folder"));
        assert_eq!(overlap(&base.join("work/x"), &base), Some("is inside the source model folder"));
        assert_eq!(overlap(dir.path(), &base), Some("holds the source model folder"));
        assert_eq!(overlap(&dir.path().join("base/../base"), &base), Some("is the source model folder"));
        assert_eq!(overlap(&dir.path().join("other"), &base), None);
        assert_eq!(overlap(&dir.path().join("bases"), &base), None, "a name prefix is not a parent");
        std::os::unix::fs::symlink(&base, dir.path().join("link")).unwrap();
        assert_eq!(overlap(&dir.path().join("link/out"), &base), Some("is inside the source model folder"));
    }

    #[test]
    fn inputs_are_capped_while_read_and_special_files_refused_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.txt");
        std::fs::write(&small, "a\nb\n").unwrap();
        assert_eq!(read_text_input(&small, 4).unwrap(), "a\nb\n", "exactly the cap is fine");
        let e = read_text_input(&small, 3).unwrap_err();
        assert!(matches!(InputRefused::of(&e), Some(InputRefused::TooLarge { limit: 3 })), "{e}");
        // /dev/zero never ends: refused by type without reading.
        let zero = dir.path().join("zero.yaml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_input(&zero, u64::MAX).unwrap_err();
        assert_eq!(e.to_string(), "is a character device, not a regular file");
        let e = read_input(dir.path(), 10).unwrap_err();
        assert_eq!(e.to_string(), "is a folder, not a regular file");
        // A named pipe without a writer is refused, not waited on.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read_input(&fifo, 10).unwrap_err().to_string(), "is a named pipe, not a regular file");
        // Invalid UTF-8 names its line.
        std::fs::write(&small, b"ok\nfine\nbad \xff here\n").unwrap();
        assert_eq!(read_text_input(&small, 100).unwrap_err().to_string(), "is not UTF-8 text (line 3)");
    }
}
