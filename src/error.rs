//! The errors a caller branches on, as types rather than text: a usage
//! error (exit 2), and the kinds of store trouble that change what a person
//! should be told (a full disk is not a corrupt database). Everything else is
//! an `anyhow` chain of context that `main` prints as one line, exit 1.

/// A usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A store failure a person can act on; `store::trouble` finds it in an
/// error chain (from the database's own error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The database is not one of ours or is damaged.
    Corrupt,
    /// No space left for the database.
    DiskFull,
    /// A write failed: the disk may be full, or a file size limit was reached.
    WriteFailed,
    /// The database or its folder cannot be written.
    ReadOnly,
    /// Another process kept the database locked past our patience.
    Busy,
}

impl Trouble {
    /// What to add to the error line, if anything.
    pub fn hint(self) -> Option<&'static str> {
        match self {
            Trouble::Corrupt => None,
            Trouble::DiskFull => {
                Some(" (free space on the disk that holds the data folder, then retry)")
            }
            Trouble::WriteFailed => Some(
                " (a write failed: the disk may be full, or a file size limit (ulimit -f) was reached)",
            ),
            Trouble::ReadOnly => Some(" (the mailbox is read-only here: nothing was written)"),
            Trouble::Busy => Some(" (another process kept the mailbox locked; retry)"),
        }
    }
}

/// The exit code for an error: 2 for a usage error, else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<UsageError>()) {
        2
    } else {
        1
    }
}
