//! The data folder: where it is, creating it private, and refusing one that
//! another local user could write to (they could inject instructions into an
//! agent's notifications) or one on a network file system (SQLite's WAL needs
//! shared memory on one host).
//!
//! It does not open the database; `store::sqlite` does, inside this folder.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const DB_FILE: &str = "mailbox.db";

/// The data folder: `$INTER_SESSION_DATA_DIR`, else `~/.claude/data/inter-session`.
pub fn path() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("INTER_SESSION_DATA_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return Ok(dir);
        }
        let cwd = std::env::current_dir().context("could not read the current directory")?;
        return Ok(cwd.join(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set; set INTER_SESSION_DATA_DIR to choose the data folder")?;
    Ok(PathBuf::from(home).join(".claude/data/inter-session"))
}

/// Create the folder (0700) if missing, then check it is safe to use.
pub fn prepare(dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("could not create {}", parent.display()))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("could not create data folder {}", dir.display()))
            }
        }
    }
    check_private(dir, "data folder", true)?;
    check_local(dir)?;
    Ok(())
}

/// Refuse a path that is a symlink, not owned by us, or group/world-writable.
/// A missing file is fine (it will be created 0600).
pub fn check_private(path: &Path, what: &str, must_exist: bool) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("could not inspect {what} {}", path.display()))
        }
    };
    if meta.file_type().is_symlink() {
        bail!(
            "refusing {what} {}: it is a symlink (another user could redirect it); use a real {}",
            path.display(),
            if must_exist { "folder" } else { "file" }
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "refusing {what} {}: owned by uid {}, not by you (uid {me})",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "refusing {what} {}: it is group- or world-writable (mode {:o}); fix with: chmod {} {}",
            path.display(),
            meta.mode() & 0o7777,
            if meta.is_dir() { "700" } else { "600" },
            path.display()
        );
    }
    Ok(())
}

/// Make a file we created private, whatever the umask was.
pub fn make_private(path: &Path) -> Result<()> {
    // Only when needed: a chmod dirties the inode on every open otherwise.
    if fs::symlink_metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o600) {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("could not chmod 600 {}", path.display()))
}

// statfs f_type values of network file systems (see statfs(2)).
const NETWORK_FS: &[(i64, &str)] = &[
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x5346_414F, "AFS"),
    (0x7375_7245, "Coda"),
    (0x564C, "NCP"),
    (0x0BD0_0BD0, "Lustre"),
    (0x00C3_6400, "CephFS"),
    (0x0116_1970, "GFS2"),
];
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

fn check_local(dir: &Path) -> Result<()> {
    let Some(fs_name) = network_fs_name(dir) else {
        return Ok(());
    };
    bail!(
        "refusing data folder {} on a network file system ({fs_name}): SQLite's WAL needs a local disk; \
         set INTER_SESSION_DATA_DIR to a local folder, or use the PostgreSQL backend \
         (INTER_SESSION_DATABASE_URL) to share a mailbox between machines",
        dir.display()
    )
}

fn network_fs_name(dir: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    if let Some((_, name)) = NETWORK_FS.iter().find(|(magic, _)| *magic == kind) {
        return Some((*name).to_string());
    }
    if kind == FUSE_SUPER_MAGIC {
        // FUSE hosts both local and remote file systems; only the mount table
        // tells which (e.g. fuse.sshfs).
        let fs_type = fuse_type(dir)?;
        if [
            "sshfs",
            "rclone",
            "s3fs",
            "gcsfuse",
            "smbnetfs",
            "curlftpfs",
        ]
        .iter()
        .any(|n| fs_type.contains(n))
        {
            return Some(fs_type);
        }
    }
    None
}

fn fuse_type(dir: &Path) -> Option<String> {
    let dir = fs::canonicalize(dir).ok()?;
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in table.lines() {
        let mut halves = line.splitn(2, " - ");
        let left: Vec<&str> = halves.next()?.split(' ').collect();
        let fs_type = halves.next()?.split(' ').next()?.to_string();
        let Some(mount_point) = left.get(4) else {
            continue;
        };
        if dir.starts_with(mount_point)
            && best
                .as_ref()
                .is_none_or(|(len, _)| mount_point.len() > *len)
        {
            best = Some((mount_point.len(), fs_type));
        }
    }
    best.map(|(_, t)| t)
}

/// The file every writer touches after its commit, so watchers wake only once
/// the new rows are visible (the `-wal` write that precedes it is not enough).
pub fn sentinel(dir: &Path) -> PathBuf {
    dir.join("mailbox.db.notify")
}

/// Lock files live one level down so that taking and probing them does not
/// wake every monitor watching the data folder.
pub fn locks_dir(dir: &Path) -> PathBuf {
    dir.join("locks")
}

#[cfg(test)]
mod fs_kind_tests {
    use super::*;

    /// tmpfs (`/tmp` on many distributions, `/dev/shm`, `/run/user`) is a
    /// local file system: its magic must not be in the network list.
    #[test]
    fn tmpfs_is_local() {
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        assert!(!NETWORK_FS.iter().any(|(m, _)| *m == TMPFS_MAGIC));
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            assert_eq!(network_fs_name(shm), None);
        }
    }
}
