//! inter-session: a durable, scriptable mailbox for AI coding-agent sessions
//! on one machine (one SQLite file) or several (one PostgreSQL database).
//! The binary is a thin `main` around `cmd::run`; the library is public so
//! benchmarks can drive the store in-process.

pub mod cmd;
pub mod datadir;
pub mod door;
pub mod error;
pub mod git_hook;
pub mod hosts;
pub mod identity;
pub mod lease_glob;
pub mod line;
pub mod lock;
pub mod pace;
pub mod signals;
pub mod store;
pub mod tmux;
pub mod top;
pub mod watch;
