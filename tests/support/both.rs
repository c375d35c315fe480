//! One case, two backends: `on_both_backends!(case, …)` gives each case (a
//! function of an `Env`) two tests, `<case>::sqlite` (the data folder's
//! SQLite file) and `<case>::postgres` (a fresh database on the test
//! server, passed to every command as `INTER_SESSION_DATABASE_URL`; see
//! support/pg.rs for where the server comes from and how a run without one
//! skips loudly). Include it after `pg` and `support`:
//! `#[macro_use] #[path = "support/both.rs"] mod both;` and
//! `use both::postgres_env;`.

use crate::support::{skip, Env};

/// The variable that points every command at PostgreSQL.
pub const DB_VAR: &str = "INTER_SESSION_DATABASE_URL";

/// A data folder whose commands use a fresh PostgreSQL database, or None
/// when there is no server (the skip is printed loudly).
pub fn postgres_env() -> Option<Env> {
    match crate::pg::fresh_db() {
        Ok(url) => Some(Env::new().with(DB_VAR, &url)),
        Err(why) => {
            skip("postgres", &why);
            None
        }
    }
}

/// Two tests per case: `<case>::sqlite` and `<case>::postgres`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn sqlite() {
                let env = super::Env::new();
                super::$case(&env);
                assert!(env.db().exists(), "no SQLite file: which backend ran?");
            }

            #[test]
            fn postgres() {
                if let Some(env) = super::postgres_env() {
                    super::$case(&env);
                    assert!(!env.db().exists(), "an SQLite file was made: the URL was not used");
                }
            }
        }
    )*};
}
