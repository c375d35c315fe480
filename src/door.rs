//! The doorbell (SPEC §9): one small file per session key, in the data
//! folder's `doors/`. Claude Code's SessionStart hook creates it and asks the
//! host to watch it (`watchPaths`); every send writes to the door of each
//! recipient that no live monitor serves, after its commit; the host then
//! runs the session's FileChanged hook, which hands the mail to the model.
//! Nothing runs in between: no process to keep alive, nothing to expire.
//!
//! A door is only ever written, never created, by a sender: a session whose
//! host never asked for one costs a send one `stat` of an empty folder.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::lock::fnv1a;

/// Doors untouched this long belong to sessions long gone (a door is
/// rewritten at every SessionStart, resume included).
const STALE: Duration = Duration::from_secs(30 * 86_400);

pub fn dir(data: &Path) -> PathBuf {
    data.join("doors")
}

/// The door of the session key `key`.
pub fn path(data: &Path, key: &str) -> PathBuf {
    dir(data).join(format!("door-{:016x}", fnv1a(key)))
}

/// Create (or keep) the door of `key` and return its path. Old doors of
/// sessions long gone are swept on the way.
pub fn open(data: &Path, key: &str) -> Result<PathBuf> {
    let doors = dir(data);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&doors)
        .with_context(|| format!("could not create {}", doors.display()))?;
    let door = path(data, key);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&door)
        .with_context(|| format!("could not create the door file {}", door.display()))?;
    file.write_all(b"0\n")
        .with_context(|| format!("could not write {}", door.display()))?;
    sweep(&doors);
    Ok(door)
}

/// Remove the door of `key` (the session ended).
pub fn close(data: &Path, key: &str) {
    let _ = std::fs::remove_file(path(data, key));
}

/// Whether any session asked for a door (else a send has nothing to ring).
pub fn any(data: &Path) -> bool {
    std::fs::read_dir(dir(data)).is_ok_and(|mut entries| entries.next().is_some())
}

/// Ring the door of `key`, if it has one: its content changes (the message
/// id, written over the start in one write: no truncation, so the host's
/// file watcher sees one change, not two). Best effort: the mail is
/// committed and waits whatever happens here.
pub fn ring(data: &Path, key: &str, message_id: &str) {
    let Ok(mut file) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path(data, key))
    else {
        return;
    };
    // Only a regular file: never block on, or write into, anything else.
    if file.metadata().is_ok_and(|m| m.is_file()) {
        let _ = file.write_all(format!("{message_id}\n").as_bytes());
    }
}

fn sweep(doors: &Path) {
    let Ok(entries) = std::fs::read_dir(doors) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_door_rings_only_once_opened() {
        let tmp = std::env::temp_dir().join(format!("door-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("tmp");
        assert!(!any(&tmp));
        ring(&tmp, "claude:k", "M1");
        assert!(
            !path(&tmp, "claude:k").exists(),
            "a ring never creates a door"
        );
        let door = open(&tmp, "claude:k").expect("open");
        assert!(any(&tmp));
        ring(&tmp, "claude:k", "M2");
        assert_eq!(std::fs::read_to_string(&door).expect("read"), "M2\n");
        close(&tmp, "claude:k");
        assert!(!door.exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
