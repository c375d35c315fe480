//! Advisory file locks (`flock`): held by a process for its lifetime and
//! released by the kernel the instant it dies, which is what makes
//! "online" trustworthy after a crash.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// An exclusive lock, released on drop (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    pub path: PathBuf,
    /// Remove the file when the lock is released (see `acquire_removable`).
    remove: bool,
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if self.remove {
            // Still ours while we hold it: whoever waits on this file sees it
            // gone once they lock it, and starts over with a new one.
            let _ = std::fs::remove_file(&self.path);
        }
        // The lock itself goes with `file`, right after this.
    }
}

/// Whether `path` still names the file open as `file`.
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("could not open lock file {}", path.display()))
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<bool> {
    loop {
        // SAFETY: the fd is owned by `file` and open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

impl FileLock {
    /// Take the lock if nobody holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let file = open(path)?;
        if flock(&file, libc::LOCK_EX | libc::LOCK_NB)
            .with_context(|| format!("could not lock {}", path.display()))?
        {
            return Ok(Some(FileLock {
                file,
                path: path.to_path_buf(),
                remove: false,
            }));
        }
        Ok(None)
    }

    /// Wait up to `patience` for the lock, retrying every few milliseconds.
    pub fn acquire_within(path: &Path, patience: Duration) -> Result<Option<FileLock>> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(lock) = Self::try_acquire(path)? {
                return Ok(Some(lock));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Like `acquire_within`, for a lock file that is removed when released
    /// (one per session key would otherwise pile up for ever). Every user
    /// of such a path must take it this way: a lock won on a file that was
    /// removed meanwhile is dropped and taken again on the current file.
    /// `None` when the patience ran out or `give_up` said so first.
    pub fn acquire_removable_within(
        path: &Path,
        patience: Duration,
        give_up: impl Fn() -> bool,
    ) -> Result<Option<FileLock>> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(mut lock) = Self::try_acquire(path)? {
                if still_named(&lock.file, path) {
                    lock.remove = true;
                    return Ok(Some(lock));
                }
                // Removed by the previous holder: try the new file at once.
                continue;
            }
            if Instant::now() >= deadline || give_up() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Block until the removable lock at `path` is ours (see
    /// `acquire_removable_within`).
    pub fn acquire_removable(path: &Path) -> Result<FileLock> {
        loop {
            let mut lock = Self::acquire(path)?;
            if still_named(&lock.file, path) {
                lock.remove = true;
                return Ok(lock);
            }
        }
    }

    /// Block until the lock is ours.
    pub fn acquire(path: &Path) -> Result<FileLock> {
        let file = open(path)?;
        flock(&file, libc::LOCK_EX)
            .with_context(|| format!("could not lock {}", path.display()))?;
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
            remove: false,
        })
    }
}

/// Whether some process holds the lock at `path` (a missing file: nobody).
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    else {
        return false;
    };
    // A shared probe: fails only while someone holds it exclusively.
    matches!(flock(&file, libc::LOCK_SH | libc::LOCK_NB), Ok(false))
}

/// Stable 64-bit FNV-1a, for turning arbitrary session keys into file names.
/// The lock a session key's monitor holds for as long as it runs (one
/// monitor per key), which a hook takes for the moment it delivers.
pub fn key_lock_path(data: &Path, key: &str) -> PathBuf {
    crate::datadir::locks_dir(data).join(format!("key-{:016x}.lock", fnv1a(key)))
}

pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
