//! `inter-session lease install-hook [--remove]`: a guard in a repository's
//! git pre-commit hook that runs `<inter-session> lease check --staged` and
//! refuses the commit when it fails.
//!
//! A pre-commit hook that is already there is not replaced: it is moved
//! aside to `pre-commit.inter-session-chained` and our hook `exec`s it once
//! the guard passes, so it still runs with the same arguments and stdin.
//! `--remove` moves it back, leaving the hooks as they were before.
//!
//! Only `std` here, and errors are one-line strings: the command wraps them.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The line that marks a pre-commit hook as ours. It is how `install` knows
/// not to chain itself and how `remove` knows what it may delete, so it must
/// never change (hooks installed by older versions carry it).
const MARKER: &str =
    "# inter-session lease guard (inter-session lease install-hook; remove with --remove)";

/// The hook git runs before a commit.
const HOOK: &str = "pre-commit";

/// Where a user's own pre-commit hook waits while ours is installed.
const CHAINED: &str = "pre-commit.inter-session-chained";

/// What `install` / `remove` did, for the one line the command prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Our hook was written to `hook` (new, or replacing an outdated copy
    /// of ours). `chained` is where the hook that runs after the guard
    /// lives, when there is one.
    Installed {
        hook: PathBuf,
        chained: Option<PathBuf>,
    },
    /// `hook` already was our hook, for the same binary: nothing changed.
    AlreadyInstalled { hook: PathBuf },
    /// Our hook was taken out of `hook`. `restored` is the chained hook
    /// that was moved back to `hook`, named by where it was, if there was one.
    Removed {
        hook: PathBuf,
        restored: Option<PathBuf>,
    },
    /// `hook` is not ours (or absent): nothing changed.
    NotInstalled { hook: PathBuf },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Installed {
                hook,
                chained: None,
            } => {
                write!(f, "installed the lease guard in {}", hook.display())
            }
            Outcome::Installed {
                hook,
                chained: Some(chained),
            } => write!(
                f,
                "installed the lease guard in {}; the hook that was there runs after it, as {}",
                hook.display(),
                chained.display()
            ),
            Outcome::AlreadyInstalled { hook } => {
                write!(
                    f,
                    "the lease guard is already installed in {}",
                    hook.display()
                )
            }
            Outcome::Removed {
                hook,
                restored: None,
            } => {
                write!(f, "removed the lease guard from {}", hook.display())
            }
            Outcome::Removed {
                hook,
                restored: Some(restored),
            } => write!(
                f,
                "removed the lease guard from {}; restored the previous hook from {}",
                hook.display(),
                restored.display()
            ),
            Outcome::NotInstalled { hook } => write!(
                f,
                "the lease guard is not installed in {}; nothing changed",
                hook.display()
            ),
        }
    }
}

/// The hooks directory git uses for the repository containing `cwd`: run
/// `git rev-parse --git-path hooks` in `cwd` (this honours `core.hooksPath`,
/// worktrees and `GIT_DIR`), made absolute against `cwd`. Error when `cwd`
/// is not inside a git repository: "not in a git repository (lease
/// install-hook needs one): <cwd>".
pub fn hooks_dir(cwd: &Path) -> Result<PathBuf, String> {
    hooks_dir_with(cwd, &[])
}

/// `hooks_dir`, with extra environment for git (tests use it to keep the
/// user's own git configuration out).
fn hooks_dir_with(cwd: &Path, env: &[(&str, &OsStr)]) -> Result<PathBuf, String> {
    let not_a_repo = || {
        format!(
            "not in a git repository (lease install-hook needs one): {}",
            cwd.display()
        )
    };
    let base = if cwd.is_absolute() {
        cwd.to_path_buf()
    } else {
        let here = std::env::current_dir()
            .map_err(|e| format!("cannot tell the current directory: {e}"))?;
        here.join(cwd)
    };
    // A directory that does not exist is in no repository; checked here
    // because spawning git in it would fail as if git were missing.
    if !base.is_dir() {
        return Err(not_a_repo());
    }
    let mut git = Command::new("git");
    // `--path-format=absolute` (git 2.31+) gives a clean absolute path
    // rather than one like `../../.git/hooks`; the join below still copes
    // with a relative answer.
    git.args(["rev-parse", "--path-format=absolute", "--git-path", "hooks"])
        .current_dir(&base)
        .stdin(Stdio::null())
        // Untranslated messages, so "not a git repository" can be recognised.
        .env("LC_ALL", "C");
    for (key, value) in env {
        git.env(key, value);
    }
    let out = git
        .output()
        .map_err(|e| format!("cannot run git to find the hooks directory: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("not a git repository") {
            return Err(not_a_repo());
        }
        // Something else (an unsafe directory, a broken config): git's own
        // first line says what.
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        return Err(format!(
            "git rev-parse --git-path hooks failed in {}: {first}",
            cwd.display()
        ));
    }
    // Paths are bytes on Unix; only git's line ending is dropped (a
    // directory name may well end in a space).
    let mut bytes = out.stdout;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!(
            "git rev-parse --git-path hooks gave no path in {}",
            cwd.display()
        ));
    }
    // Joining an absolute path yields it unchanged; a relative one is
    // relative to where git ran.
    Ok(base.join(PathBuf::from(OsString::from_vec(bytes))))
}

/// Install the guard into `<hooks_dir>/pre-commit`, calling `binary` (an
/// absolute path, shell-quoted in the script). Idempotent: when our hook is
/// already there for the same binary it is left alone (`AlreadyInstalled`);
/// when it is ours but for another binary, it is rewritten.
///
/// A pre-commit hook that is not ours is moved, keeping its mode (a symlink
/// is moved itself, not followed), to `pre-commit.inter-session-chained`,
/// which our hook `exec`s after the guard passes. When that name is already
/// taken while the hook is not ours, nothing is touched and this is an
/// error. The hook is written atomically (a temporary file in the same
/// directory, then a rename), mode 0755; the hooks directory is created
/// when missing.
pub fn install(hooks_dir: &Path, binary: &Path) -> Result<Outcome, String> {
    // The hook runs from the top of the work tree, not from wherever the
    // command was given: a relative path would name the wrong file.
    if !binary.is_absolute() {
        return Err(format!(
            "the inter-session binary must be given as an absolute path: {}",
            binary.display()
        ));
    }
    // The script is text; a lossy path would name some other file.
    if binary.to_str().is_none() {
        return Err(format!(
            "the inter-session binary's path is not valid UTF-8, a hook cannot name it: {}",
            binary.display()
        ));
    }
    let hook = hooks_dir.join(HOOK);
    let chained = hooks_dir.join(CHAINED);
    fs::create_dir_all(hooks_dir).map_err(|e| {
        format!(
            "cannot create the hooks directory {}: {e}",
            hooks_dir.display()
        )
    })?;
    let text = script(binary);

    match existing(&hook)? {
        Existing::Absent => {
            // A chained hook with no hook of ours in front of it is left
            // over from something we cannot see; adopting it would run it
            // on every commit and `--remove` would later promote it.
            refuse_if_chained_exists(&hook, &chained)?;
            let tmp = write_temp(hooks_dir, &text)?;
            put_in_place(&tmp, &hook)?;
            Ok(Outcome::Installed {
                hook,
                chained: None,
            })
        }
        Existing::Ours { bytes, executable } => {
            if bytes == text.as_bytes() && executable {
                return Ok(Outcome::AlreadyInstalled { hook });
            }
            // Ours, but for another binary (or no longer executable, so git
            // would skip it): rewrite it, keeping whatever it chains.
            let tmp = write_temp(hooks_dir, &text)?;
            put_in_place(&tmp, &hook)?;
            let chained = exists(&chained)?.then_some(chained);
            Ok(Outcome::Installed { hook, chained })
        }
        Existing::Directory => Err(format!(
            "{} is a directory, not a hook; not installing the lease guard",
            hook.display()
        )),
        Existing::Foreign => {
            refuse_if_chained_exists(&hook, &chained)?;
            // Our hook is written before the user's is touched, so a
            // failure to write leaves everything as it was.
            let tmp = write_temp(hooks_dir, &text)?;
            if let Err(e) = set_aside(&hook, &chained) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            if let Err(e) = fs::rename(&tmp, &hook) {
                // Put the user's hook back where it was. After a hard link
                // `hook` still names it and only the extra name goes;
                // after a move it is moved back.
                if exists(&hook).unwrap_or(false) {
                    let _ = fs::remove_file(&chained);
                } else {
                    let _ = fs::rename(&chained, &hook);
                }
                let _ = fs::remove_file(&tmp);
                return Err(format!("cannot write {}: {e}", hook.display()));
            }
            Ok(Outcome::Installed {
                hook,
                chained: Some(chained),
            })
        }
    }
}

/// Remove the guard: if `<hooks_dir>/pre-commit` is ours, delete it and
/// move `pre-commit.inter-session-chained` back to `pre-commit` if present.
/// If the hook is not ours (or there is none), change nothing
/// (`NotInstalled`).
pub fn remove(hooks_dir: &Path) -> Result<Outcome, String> {
    let hook = hooks_dir.join(HOOK);
    let chained = hooks_dir.join(CHAINED);
    match existing(&hook)? {
        Existing::Absent | Existing::Foreign | Existing::Directory => {
            Ok(Outcome::NotInstalled { hook })
        }
        Existing::Ours { .. } => {
            if exists(&chained)? {
                // One rename replaces ours with the user's hook: there is no
                // moment without a pre-commit hook, and the file keeps its
                // mode, content and (for a symlink) its target.
                fs::rename(&chained, &hook).map_err(|e| {
                    format!(
                        "cannot move {} back to {}: {e}",
                        chained.display(),
                        hook.display()
                    )
                })?;
                Ok(Outcome::Removed {
                    hook,
                    restored: Some(chained),
                })
            } else {
                fs::remove_file(&hook)
                    .map_err(|e| format!("cannot remove {}: {e}", hook.display()))?;
                Ok(Outcome::Removed {
                    hook,
                    restored: None,
                })
            }
        }
    }
}

/// The hook script text (for tests and `--dry-run`).
///
/// The guard runs with stdin from /dev/null so that whatever stdin the
/// hook was given is still there, whole, for the chained hook. A binary
/// that is missing (uninstalled, moved) lets the commit through with a
/// warning rather than blocking every commit in the repository.
pub fn script(binary: &Path) -> String {
    let bin = binary.to_string_lossy();
    let quoted = sh_quote(&bin);
    // printf, not echo: some shells' echo expands backslashes in the path.
    let warning = sh_quote(&format!(
        "inter-session lease guard: {bin} not found; commit not checked"
    ));
    format!(
        "#!/bin/sh\n\
         {MARKER}\n\
         #\n\
         # Refuses the commit when `inter-session lease check --staged` fails,\n\
         # then runs the pre-commit hook that was here before, if there was one.\n\
         if [ -x {quoted} ]; then\n\
         \t{quoted} lease check --staged </dev/null || exit 1\n\
         else\n\
         \tprintf '%s\\n' {warning} >&2\n\
         fi\n\
         if [ -x \"$(dirname \"$0\")/{CHAINED}\" ]; then\n\
         \texec \"$(dirname \"$0\")/{CHAINED}\" \"$@\"\n\
         fi\n\
         exit 0\n"
    )
}

/// `s` as one shell word, whatever it holds: single quotes keep everything
/// literal, and a single quote itself is closed, escaped and reopened.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What is at the pre-commit hook's path.
enum Existing {
    Absent,
    /// Our hook: its bytes, and whether git would run it.
    Ours {
        bytes: Vec<u8>,
        executable: bool,
    },
    /// Someone else's hook (a file, or a symlink we do not follow).
    Foreign,
    Directory,
}

fn existing(hook: &Path) -> Result<Existing, String> {
    let meta = match fs::symlink_metadata(hook) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) => return Err(format!("cannot inspect {}: {e}", hook.display())),
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        return Ok(Existing::Directory);
    }
    // We only ever write a regular file, so a symlink (or anything else)
    // is the user's, whatever it points at.
    if !kind.is_file() {
        return Ok(Existing::Foreign);
    }
    let bytes = fs::read(hook).map_err(|e| format!("cannot read {}: {e}", hook.display()))?;
    // Read as bytes: a hook may be a compiled program, not text. The marker
    // must be a whole line, so a hook that merely mentions it is not ours.
    let ours = bytes
        .split(|&b| b == b'\n')
        .any(|line| line.strip_suffix(b"\r").unwrap_or(line) == MARKER.as_bytes());
    if ours {
        let executable = meta.permissions().mode() & 0o111 != 0;
        Ok(Existing::Ours { bytes, executable })
    } else {
        Ok(Existing::Foreign)
    }
}

/// Whether anything (even a dangling symlink) is at `path`.
fn exists(path: &Path) -> Result<bool, String> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot inspect {}: {e}", path.display())),
    }
}

fn refuse_if_chained_exists(hook: &Path, chained: &Path) -> Result<(), String> {
    if exists(chained)? {
        return Err(chained_exists_error(hook, chained));
    }
    Ok(())
}

fn chained_exists_error(hook: &Path, chained: &Path) -> String {
    format!(
        "{} already exists and {} is not the lease guard; not overwriting anything \
         (move {} back to {} or delete it, then try again)",
        chained.display(),
        hook.display(),
        chained.display(),
        hook.display()
    )
}

/// Give the user's hook the chained name, never overwriting a file there.
fn set_aside(hook: &Path, chained: &Path) -> Result<(), String> {
    // A hard link cannot replace an existing file, so one that appeared
    // since the check is refused, not lost; and `hook` keeps naming the
    // user's hook until ours is renamed over it. It links a symlink itself
    // (no following), and the inode, so the mode, is the same.
    match fs::hard_link(hook, chained) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(chained_exists_error(hook, chained))
        }
        // No hard links here (some filesystems, or the kernel's
        // protected_hardlinks for a file we do not own): move it instead.
        Err(_) => {
            refuse_if_chained_exists(hook, chained)?;
            fs::rename(hook, chained).map_err(|e| {
                format!(
                    "cannot move {} to {}: {e}",
                    hook.display(),
                    chained.display()
                )
            })
        }
    }
}

/// Rename the finished temporary file onto `hook`, removing it on failure.
fn put_in_place(tmp: &Path, hook: &Path) -> Result<(), String> {
    fs::rename(tmp, hook).map_err(|e| {
        let _ = fs::remove_file(tmp);
        format!("cannot write {}: {e}", hook.display())
    })
}

/// Write `text` to a new temporary file in `dir` with mode 0755, flushed to
/// disk, ready to be renamed into place (same directory, so the rename is
/// atomic: git sees the old hook or the new one, never half of one).
fn write_temp(dir: &Path, text: &str) -> Result<PathBuf, String> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Leading dot and no "pre-commit" prefix: git never mistakes it for a hook.
    let tmp = dir.join(format!(
        ".inter-session-hook.{}.{n}.tmp",
        std::process::id()
    ));
    // A leftover from a crashed run that had the same pid.
    let _ = fs::remove_file(&tmp);
    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        // The umask may have taken bits off the mode given at creation;
        // a hook must be 0755 whatever it was.
        file.set_permissions(fs::Permissions::from_mode(0o755))?;
        file.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(format!("cannot write a new hook in {}: {e}", dir.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Output;

    /// A directory of its own under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "inter-session-git-hook-{}-{n}-{tag}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            // git reports real paths; compare like with like (the temp dir
            // may sit behind a symlink).
            Scratch(fs::canonicalize(&path).unwrap())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The environment that keeps tests away from the user's git setup:
    /// no global or system config, no repository above the temp dir.
    fn isolation() -> Vec<(&'static str, OsString)> {
        let ceiling = fs::canonicalize(std::env::temp_dir()).unwrap();
        vec![
            ("GIT_CONFIG_GLOBAL", OsString::from("/dev/null")),
            ("GIT_CONFIG_NOSYSTEM", OsString::from("1")),
            ("GIT_CEILING_DIRECTORIES", ceiling.into_os_string()),
            ("GIT_AUTHOR_NAME", OsString::from("Test Author")),
            ("GIT_AUTHOR_EMAIL", OsString::from("author@example.com")),
            ("GIT_COMMITTER_NAME", OsString::from("Test Committer")),
            (
                "GIT_COMMITTER_EMAIL",
                OsString::from("committer@example.com"),
            ),
        ]
    }

    fn git_cmd(dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir).stdin(Stdio::null());
        for (k, v) in isolation() {
            cmd.env(k, v);
        }
        // In case the tests themselves run from inside a git hook.
        for k in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_CONFIG_PARAMETERS",
        ] {
            cmd.env_remove(k);
        }
        cmd
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = git_cmd(dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn isolated_hooks_dir(cwd: &Path) -> Result<PathBuf, String> {
        let env = isolation();
        let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        hooks_dir_with(cwd, &env)
    }

    /// A fresh repository in `scratch`: (work tree, hooks dir).
    fn repo(scratch: &Scratch) -> (PathBuf, PathBuf) {
        let dir = scratch.0.join("repo");
        fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q"]);
        let hooks = isolated_hooks_dir(&dir).unwrap();
        (dir, hooks)
    }

    /// Add a file and try to commit it; the output says whether it worked.
    fn commit(repo: &Path, name: &str) -> Output {
        fs::write(repo.join(name), name).unwrap();
        git(repo, &["add", name]);
        git_cmd(repo)
            .args(["-c", "commit.gpgsign=false", "commit", "-q", "-m", name])
            .output()
            .unwrap()
    }

    fn commit_count(repo: &Path) -> usize {
        let out = git_cmd(repo)
            .args(["rev-list", "--count", "HEAD"])
            .output()
            .unwrap();
        if !out.status.success() {
            return 0; // no commits yet
        }
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A stand-in for the inter-session binary: logs its arguments to `log`
    /// and exits with `code`.
    fn fake_binary(path: &Path, log: &Path, code: i32) {
        let text = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nexit {code}\n",
            sh_quote(log.to_str().unwrap())
        );
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A user's own pre-commit hook that appends a line to `marker`.
    fn user_hook(hooks: &Path, marker: &Path, mode: u32) -> Vec<u8> {
        fs::create_dir_all(hooks).unwrap();
        let text = format!(
            "#!/bin/sh\n# the user's own hook\necho ran >> {}\n",
            sh_quote(marker.to_str().unwrap())
        );
        let hook = hooks.join(HOOK);
        fs::write(&hook, &text).unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(mode)).unwrap();
        text.into_bytes()
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn script_has_shebang_marker_and_quoted_binary() {
        let text = script(Path::new("/opt/it's here/inter-session"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#!/bin/sh");
        assert_eq!(lines[1], MARKER);
        assert!(text.contains(r"'/opt/it'\''s here/inter-session' lease check --staged"));
        assert!(text.contains("|| exit 1"));
        assert!(text.contains(r#"exec "$(dirname "$0")/pre-commit.inter-session-chained" "$@""#));
    }

    #[test]
    fn sh_quote_round_trips_through_the_shell() {
        let tricky = "a b'c\"d$e`f\\g\nh";
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {}", sh_quote(tricky)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), tricky);
    }

    #[test]
    fn install_into_fresh_repo() {
        let s = Scratch::new("fresh");
        let (dir, hooks) = repo(&s);
        assert_eq!(hooks, dir.join(".git/hooks"));
        let binary = s.0.join("bin/inter-session");
        let outcome = install(&hooks, &binary).unwrap();
        let hook = hooks.join(HOOK);
        assert_eq!(
            outcome,
            Outcome::Installed {
                hook: hook.clone(),
                chained: None
            }
        );
        assert_eq!(mode(&hook), 0o755);
        let text = read(&hook);
        assert!(text.lines().any(|l| l == MARKER));
        assert!(text.contains(&sh_quote(binary.to_str().unwrap())));
        assert!(!hooks.join(CHAINED).exists());
        // No temporary file left behind.
        let stray: Vec<_> = fs::read_dir(&hooks)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty());
    }

    #[test]
    fn second_install_is_idempotent() {
        let s = Scratch::new("idem");
        let (_dir, hooks) = repo(&s);
        let binary = s.0.join("inter-session");
        install(&hooks, &binary).unwrap();
        let hook = hooks.join(HOOK);
        let before = fs::read(&hook).unwrap();
        let ino = fs::metadata(&hook).unwrap().ino();
        let outcome = install(&hooks, &binary).unwrap();
        assert_eq!(outcome, Outcome::AlreadyInstalled { hook: hook.clone() });
        assert_eq!(fs::read(&hook).unwrap(), before);
        // Not even rewritten with the same bytes.
        assert_eq!(fs::metadata(&hook).unwrap().ino(), ino);
    }

    #[test]
    fn reinstall_for_another_binary_rewrites_and_keeps_chain() {
        let s = Scratch::new("rebin");
        let (_dir, hooks) = repo(&s);
        let user = user_hook(&hooks, &s.0.join("marker"), 0o755);
        install(&hooks, &s.0.join("old/inter-session")).unwrap();
        let new = s.0.join("new/inter-session");
        let outcome = install(&hooks, &new).unwrap();
        assert_eq!(
            outcome,
            Outcome::Installed {
                hook: hooks.join(HOOK),
                chained: Some(hooks.join(CHAINED))
            }
        );
        assert_eq!(read(&hooks.join(HOOK)), script(&new));
        assert_eq!(fs::read(hooks.join(CHAINED)).unwrap(), user);
    }

    #[test]
    fn chains_existing_user_hook() {
        let s = Scratch::new("chain");
        let (dir, hooks) = repo(&s);
        let marker = s.0.join("user-hook-ran");
        let user = user_hook(&hooks, &marker, 0o750);
        let binary = s.0.join("inter-session");
        let log = s.0.join("guard.log");
        fake_binary(&binary, &log, 0);

        let outcome = install(&hooks, &binary).unwrap();
        let chained = hooks.join(CHAINED);
        assert_eq!(
            outcome,
            Outcome::Installed {
                hook: hooks.join(HOOK),
                chained: Some(chained.clone())
            }
        );
        assert_eq!(fs::read(&chained).unwrap(), user);
        assert_eq!(mode(&chained), 0o750);

        // The guard passes: the commit goes through and the user hook ran.
        let out = commit(&dir, "one");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(read(&log), "lease check --staged\n");
        assert_eq!(read(&marker), "ran\n");
        assert_eq!(commit_count(&dir), 1);

        // The guard fails: the commit is refused before the user hook runs.
        fake_binary(&binary, &log, 1);
        fs::remove_file(&marker).unwrap();
        let out = commit(&dir, "two");
        assert!(!out.status.success());
        assert!(!marker.exists());
        assert_eq!(commit_count(&dir), 1);
        assert_eq!(read(&log), "lease check --staged\nlease check --staged\n");
    }

    #[test]
    fn chained_hook_gets_the_same_arguments_and_stdin() {
        let s = Scratch::new("args");
        let (dir, hooks) = repo(&s);
        let args = s.0.join("args");
        let stdin = s.0.join("stdin");
        let text = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\ncat > {}\n",
            sh_quote(args.to_str().unwrap()),
            sh_quote(stdin.to_str().unwrap())
        );
        fs::write(hooks.join(HOOK), text).unwrap();
        fs::set_permissions(hooks.join(HOOK), fs::Permissions::from_mode(0o755)).unwrap();
        // A guard that would swallow stdin if it were given it.
        let binary = s.0.join("inter-session");
        fs::write(&binary, "#!/bin/sh\ncat > /dev/null\nexit 0\n").unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        install(&hooks, &binary).unwrap();

        let mut child = Command::new(hooks.join(HOOK))
            .args(["one", "two words"])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"from stdin\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(read(&args), "one\ntwo words\n");
        assert_eq!(read(&stdin), "from stdin\n");
    }

    #[test]
    fn remove_restores_user_hook() {
        let s = Scratch::new("restore");
        let (_dir, hooks) = repo(&s);
        let user = user_hook(&hooks, &s.0.join("marker"), 0o700);
        let hook = hooks.join(HOOK);
        let ino = fs::metadata(&hook).unwrap().ino();
        install(&hooks, &s.0.join("inter-session")).unwrap();
        let outcome = remove(&hooks).unwrap();
        assert_eq!(
            outcome,
            Outcome::Removed {
                hook: hook.clone(),
                restored: Some(hooks.join(CHAINED))
            }
        );
        assert_eq!(fs::read(&hook).unwrap(), user);
        assert_eq!(mode(&hook), 0o700);
        assert_eq!(fs::metadata(&hook).unwrap().ino(), ino);
        assert!(!hooks.join(CHAINED).exists());
        // And once more: nothing of ours left to remove.
        assert_eq!(remove(&hooks).unwrap(), Outcome::NotInstalled { hook });
    }

    #[test]
    fn remove_without_chained_deletes_our_hook() {
        let s = Scratch::new("plain");
        let (_dir, hooks) = repo(&s);
        install(&hooks, &s.0.join("inter-session")).unwrap();
        let hook = hooks.join(HOOK);
        assert_eq!(
            remove(&hooks).unwrap(),
            Outcome::Removed {
                hook: hook.clone(),
                restored: None
            }
        );
        assert!(fs::symlink_metadata(&hook).is_err());
    }

    #[test]
    fn symlinked_user_hook_is_moved_not_followed() {
        let s = Scratch::new("symlink");
        let (dir, hooks) = repo(&s);
        let marker = s.0.join("marker");
        let target = s.0.join("real-hook");
        fs::write(
            &target,
            format!(
                "#!/bin/sh\necho ran >> {}\n",
                sh_quote(marker.to_str().unwrap())
            ),
        )
        .unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let link_text = Path::new("../../../real-hook");
        let hook = hooks.join(HOOK);
        std::os::unix::fs::symlink(link_text, &hook).unwrap();
        let target_before = fs::read(&target).unwrap();

        let binary = s.0.join("inter-session");
        fake_binary(&binary, &s.0.join("log"), 0);
        install(&hooks, &binary).unwrap();
        let chained = hooks.join(CHAINED);
        assert!(fs::symlink_metadata(&chained)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_link(&chained).unwrap(), link_text);
        assert!(fs::symlink_metadata(&hook).unwrap().file_type().is_file());
        assert_eq!(fs::read(&target).unwrap(), target_before);

        let out = commit(&dir, "one");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(read(&marker), "ran\n");

        remove(&hooks).unwrap();
        assert_eq!(fs::read_link(&hook).unwrap(), link_text);
        assert_eq!(fs::read(&target).unwrap(), target_before);
    }

    #[test]
    fn remove_when_not_installed() {
        let s = Scratch::new("notinst");
        let (_dir, hooks) = repo(&s);
        let hook = hooks.join(HOOK);
        assert_eq!(
            remove(&hooks).unwrap(),
            Outcome::NotInstalled { hook: hook.clone() }
        );
        // A user's hook is not ours: left exactly as it is.
        let user = user_hook(&hooks, &s.0.join("marker"), 0o755);
        assert_eq!(
            remove(&hooks).unwrap(),
            Outcome::NotInstalled { hook: hook.clone() }
        );
        assert_eq!(fs::read(&hook).unwrap(), user);
        // Nor is a hooks directory that does not exist an error.
        assert_eq!(
            remove(&s.0.join("nowhere")).unwrap(),
            Outcome::NotInstalled {
                hook: s.0.join("nowhere").join(HOOK)
            }
        );
    }

    #[test]
    fn core_hooks_path_is_honoured() {
        let s = Scratch::new("hookspath");
        let (dir, default_hooks) = repo(&s);
        git(&dir, &["config", "core.hooksPath", "custom hooks"]);
        fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        // Found from a subdirectory too, relative to the work tree's top.
        let hooks = isolated_hooks_dir(&dir.join("sub/deeper")).unwrap();
        assert_eq!(hooks, dir.join("custom hooks"));
        assert!(!hooks.exists());

        let binary = s.0.join("inter-session");
        let log = s.0.join("log");
        fake_binary(&binary, &log, 0);
        install(&hooks, &binary).unwrap();
        assert_eq!(mode(&hooks.join(HOOK)), 0o755);
        assert!(!default_hooks.join(HOOK).exists());
        let out = commit(&dir, "one");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(read(&log), "lease check --staged\n");
    }

    #[test]
    fn binary_path_with_space_and_quote() {
        let s = Scratch::new("quote");
        let (dir, hooks) = repo(&s);
        let bin_dir = s.0.join("it's a \"dir\" $HOME");
        fs::create_dir_all(&bin_dir).unwrap();
        let binary = bin_dir.join("inter session");
        let log = s.0.join("log");
        fake_binary(&binary, &log, 0);
        install(&hooks, &binary).unwrap();
        let out = commit(&dir, "one");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(read(&log), "lease check --staged\n");
        // And its failure is still a refusal.
        fake_binary(&binary, &log, 3);
        assert!(!commit(&dir, "two").status.success());
        assert_eq!(commit_count(&dir), 1);
    }

    #[test]
    fn missing_binary_warns_and_lets_commit_through() {
        let s = Scratch::new("missing");
        let (dir, hooks) = repo(&s);
        let binary = s.0.join("gone's/inter-session");
        install(&hooks, &binary).unwrap();
        let out = commit(&dir, "one");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "inter-session lease guard: {} not found; commit not checked",
                binary.display()
            )),
            "{stderr}"
        );
    }

    #[test]
    fn refuses_when_chained_name_is_taken() {
        let s = Scratch::new("taken");
        let (_dir, hooks) = repo(&s);
        let user = user_hook(&hooks, &s.0.join("marker"), 0o755);
        let chained = hooks.join(CHAINED);
        fs::write(&chained, "something else\n").unwrap();
        let err = install(&hooks, &s.0.join("inter-session")).unwrap_err();
        assert!(err.contains(CHAINED), "{err}");
        assert!(err.contains("not overwriting"), "{err}");
        assert!(!err.contains('\n'));
        assert_eq!(fs::read(hooks.join(HOOK)).unwrap(), user);
        assert_eq!(read(&chained), "something else\n");

        // Also with no hook at all: a stray chained hook is not adopted.
        fs::remove_file(hooks.join(HOOK)).unwrap();
        assert!(install(&hooks, &s.0.join("inter-session")).is_err());
        assert!(!hooks.join(HOOK).exists());
        assert_eq!(read(&chained), "something else\n");
    }

    #[test]
    fn relative_binary_is_refused() {
        let s = Scratch::new("relative");
        let (_dir, hooks) = repo(&s);
        let err = install(&hooks, Path::new("target/inter-session")).unwrap_err();
        assert!(err.contains("absolute"), "{err}");
        assert!(!hooks.join(HOOK).exists());
    }

    #[test]
    fn install_creates_missing_hooks_dir() {
        let s = Scratch::new("mkdir");
        let hooks = s.0.join("a/b/hooks");
        install(&hooks, &s.0.join("inter-session")).unwrap();
        assert_eq!(mode(&hooks.join(HOOK)), 0o755);
    }

    #[test]
    fn not_a_repo_error() {
        let s = Scratch::new("norepo");
        let err = isolated_hooks_dir(&s.0).unwrap_err();
        assert_eq!(
            err,
            format!(
                "not in a git repository (lease install-hook needs one): {}",
                s.0.display()
            )
        );
        let gone = s.0.join("does-not-exist");
        assert_eq!(
            hooks_dir(&gone).unwrap_err(),
            format!(
                "not in a git repository (lease install-hook needs one): {}",
                gone.display()
            )
        );
    }

    #[test]
    fn outcome_prints_one_line() {
        let o = Outcome::Installed {
            hook: PathBuf::from("/r/.git/hooks/pre-commit"),
            chained: Some(PathBuf::from(
                "/r/.git/hooks/pre-commit.inter-session-chained",
            )),
        };
        let text = o.to_string();
        assert!(text.starts_with("installed the lease guard in /r/.git/hooks/pre-commit"));
        assert!(!text.contains('\n'));
    }
}
