//! What we know of the agent hosts' own configuration files (SPEC §12).

pub mod codex;
pub mod gemini;
pub mod jsonc;
