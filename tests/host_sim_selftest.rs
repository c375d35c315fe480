//! Runs the host simulator's own tests against real child processes.
#[path = "support/host_sim.rs"]
mod host_sim;
