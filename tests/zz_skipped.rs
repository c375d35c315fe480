//! The end of a plain `cargo test`: the list of every test (or part of one)
//! that this run skipped because something it needs is not installed (see
//! tests/support/needs.rs), or a line saying nothing was.
//!
//! Named `zz_` because cargo runs the test binaries of a package one after
//! another in name order: this one runs after all the others, and prints
//! the list after its own result line (at exit).

mod support;

extern "C" fn print_the_list() {
    use std::io::Write;
    let list = support::take_skipped_list();
    let _ = std::io::stderr().lock().write_all(list.as_bytes());
}

#[test]
fn list_what_this_run_skipped() {
    // SAFETY: registering a plain extern "C" fn, run once at exit.
    unsafe { libc::atexit(print_the_list) };
}
