//! `sql` on PostgreSQL (issue 18, must-hold 8, and must-hold 5's `sql` part
//! on this backend): nothing a query may do acts outside its read-only,
//! rolled-back transaction — every spelling of a function that would (a
//! notification, a backend killed, an advisory lock, a sequence step, a
//! large object, a setting) and every statement that is not a query is
//! refused with one line, and the server shows that nothing happened; rows
//! are printed as they come; `--timeout` and Ctrl-C stop the query on the
//! server; repeated JSON keys stay apart, and an empty query says so, as on
//! SQLite (tests/bounds.rs). Without TEMP on the database (the check needs
//! a temporary view) every query is refused, saying so.
//!
//! Real binary against the server of support/pg.rs (`INTER_SESSION_TEST_PG_URL`,
//! else a throwaway cluster; without either, each test SKIPS loudly), one
//! fresh database per test.

#[path = "support/pg.rs"]
mod pg;
mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use support::{refused, register, Env};

/// A data folder whose mailbox is a fresh PostgreSQL database.
struct Db {
    env: Env,
    url: String,
}

impl Db {
    fn new() -> Option<Db> {
        let url = pg::fresh_db()
            .map_err(|why| support::skip("postgres", &why))
            .ok()?;
        let env = Env::with_vars(&[("INTER_SESSION_DATABASE_URL", &url)]);
        // The schema, and a session to read.
        register(&env, "alice");
        Some(Db { env, url })
    }

    fn admin(&self) -> postgres::Client {
        pg::admin(&self.url)
    }

    fn sql(&self, args: &[&str]) -> std::process::Output {
        self.env.run("sql", &[&["sql"], args].concat())
    }

    /// Refused: exit 1, one line on stderr saying so.
    fn refuses(&self, q: &str) -> String {
        let line = refused(&self.sql(&[q]), 1, q);
        assert!(line.contains("refused"), "{q}: {line}");
        line
    }

    fn start(&self, args: &[&str]) -> Running {
        let mut c: Command = self.env.cmd("sql");
        c.arg("sql")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn sql");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Running {
            child,
            out: Some(out),
        }
    }
}

/// `sql` running, its stdout read a line at a time (every query started
/// here ends by itself within its --timeout); killed on drop.
struct Running {
    child: Child,
    out: Option<BufReader<ChildStdout>>,
}

impl Running {
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out
            .as_mut()
            .expect("stdout")
            .read_line(&mut line)
            .expect("read stdout");
        line.trim_end().to_string()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Close stdout (`| head`), wait at most `within`: exit code, stderr.
    fn end(mut self, within: Duration) -> (Option<i32>, String) {
        self.out = None;
        let deadline = Instant::now() + within;
        while self.running() {
            assert!(
                Instant::now() < deadline,
                "sql still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).expect("stderr");
        }
        (self.child.wait().expect("wait").code(), err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn one_line(err: &str, says: &str) {
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(says), "{err}");
}

// ------------------------------------------------------------ refusals

#[test]
fn sql_refuses_every_side_effect_and_the_server_shows_none() {
    let Some(db) = Db::new() else { return };
    let mut admin = db.admin();
    admin
        .batch_execute(
            "CREATE SEQUENCE s; \
             CREATE FUNCTION public.bump() RETURNS bigint LANGUAGE sql AS $$ SELECT nextval('s') $$; \
             CREATE FUNCTION public.quiet(t text) RETURNS text IMMUTABLE LANGUAGE plpgsql \
               AS $$ BEGIN PERFORM pg_notify('x', t); RETURN t; END $$; \
             CREATE PROCEDURE public.p() LANGUAGE sql AS $$ SELECT 1 $$;",
        )
        .expect("set-up");
    let dblink = admin.batch_execute("CREATE EXTENSION dblink").is_ok();
    let mut listener = db.admin();
    listener.batch_execute("LISTEN x").expect("listen");
    let mut victim = db.admin();
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    let marker = format!("/tmp/inter-session-pg-sql-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);

    let mut queries: Vec<String> = [
        // Notifications, in every spelling, wherever a query can call one.
        "select pg_notify('x', 'y')",
        "SELECT PG_NOTIFY('x', 'y')",
        "select \"pg_notify\"('x', 'y')",
        "select pg_catalog.pg_notify('x', 'y')",
        "select \"pg_catalog\".\"pg_notify\"('x', 'y')",
        "select * from pg_notify('x', 'y')",
        "select 1 limit (case when pg_notify('x', 'y') is null then 1 end)",
        "select 1 offset length(pg_notify('x', 'y')::text)",
        "values (1), (length(pg_notify('x', 'y')::text))",
        "with n as (select pg_notify('x', 'y')) select * from n",
        "select (select pg_notify('x', 'y'))",
        "select count(*) over (rows between length(pg_notify('x', 'y')::text) preceding and current row) from pg_class",
        "/* c */ select -- d\n pg_notify(chr(120), 'y')",
        "(select pg_notify('x', 'y'))",
        "explain analyze select pg_notify('x', 'y')",
        "explain (analyze, costs off) select pg_notify('x', 'y')",
        "explain (select pg_notify('x', 'y'))",
        "select query_to_xml('select pg_notify(''x'', ''y'')', true, false, '')",
        "select * from ts_stat('select pg_notify(''x'', ''y'')::tsvector')",
        "notify x",
        "NOTIFY x, 'y'",
        // Other backends.
        "select pg_terminate_backend({pid})",
        "select pg_catalog.pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid()",
        "select pg_cancel_backend({pid})",
        // Advisory locks (a monitor's presence).
        "select pg_advisory_lock(1)",
        "select pg_try_advisory_lock(1)",
        "select pg_advisory_xact_lock(1)",
        "select PG_CATALOG.PG_ADVISORY_LOCK_SHARED(1)",
        // Sequences, settings, large objects, the server.
        "select nextval('s')",
        "select setval('s', 100)",
        "select bump()",
        "select public.quiet('y')",
        "select set_config('statement_timeout', '0', false)",
        "select lo_create(0)",
        "select lo_from_bytea(0, 'x')",
        "select lo_import('/etc/hostname')",
        "select lo_export(0, '{marker}')",
        "select pg_reload_conf()",
        "select pg_rotate_logfile()",
        "select txid_current()",
        "select pg_read_file('/etc/hostname')",
        // Statements that are not queries.
        "listen x",
        "unlisten *",
        "prepare p as select 1",
        "execute p",
        "deallocate all",
        "set statement_timeout = 0",
        "set local statement_timeout = 0",
        "reset all",
        "discard all",
        "begin",
        "commit",
        "savepoint s",
        "lock table sessions",
        "copy (select 1) to program 'touch {marker}'",
        "copy sessions to stdout",
        "do $$ begin perform pg_notify('x', 'y'); end $$",
        "call p()",
        "vacuum",
        "checkpoint",
        "create temp table t (a int)",
        "explain analyze delete from sessions",
        "explain analyze execute p",
        "with d as (delete from sessions returning *) select * from d",
        "select * into t from sessions",
        "delete from sessions",
    ]
    .iter()
    .map(|q| q.replace("{pid}", &pid.to_string()).replace("{marker}", &marker))
    .collect();
    if dblink {
        queries.push("select dblink_exec('dbname=postgres', 'select 1')".into());
        queries.push("select * from dblink('dbname=postgres', 'select pg_notify(''x'', ''y'')') as t(a text)".into());
    } else {
        support::skip_part(
            "postgres-contrib",
            "its dblink part",
            "CREATE EXTENSION dblink failed; install postgresql-contrib",
        );
    }
    for q in &queries {
        let line = db.refuses(q);
        assert!(line.contains("read-only"), "{q}: {line}");
    }
    // Row locks: refused by the read-only transaction itself.
    let q = "select * from sessions for update";
    let line = refused(&db.sql(&[q]), 1, q);
    assert!(line.contains("read-only"), "{line}");

    // Nothing happened.
    assert!(
        listener
            .notifications()
            .timeout_iter(Duration::from_millis(300))
            .next()
            .expect("notifications")
            .is_none(),
        "a notification got through"
    );
    victim
        .simple_query("select 1")
        .expect("the other backend was terminated");
    let alive: i64 = admin
        .query_one(
            "select count(*) from pg_stat_activity where pid = $1",
            &[&pid],
        )
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(alive, 1);
    let seq = admin
        .query_one("select last_value, is_called from s", &[])
        .expect("sequence");
    assert_eq!((seq.get::<_, i64>(0), seq.get::<_, bool>(1)), (1, false));
    let objects: i64 = admin
        .query_one("select count(*) from pg_largeobject_metadata", &[])
        .expect("large objects")
        .get(0);
    assert_eq!(objects, 0);
    assert!(!std::path::Path::new(&marker).exists(), "{marker} written");
    assert_eq!(db.env.sql("select count(*) from sessions"), "1");
}

#[test]
fn sql_never_holds_an_advisory_lock_even_briefly() {
    let Some(db) = Db::new() else { return };
    let mut admin = db.admin();
    let q = "select pg_advisory_lock(4242), pg_sleep(3)";
    let mut run = db.start(&["--timeout", "20s", q]);
    let held = "select count(*) from pg_locks where locktype = 'advisory' and objid = 4242";
    while run.running() {
        let n: i64 = admin.query_one(held, &[]).expect("pg_locks").get(0);
        assert_eq!(n, 0, "{q} held the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, err) = run.end(Duration::from_secs(1));
    assert_eq!(code, Some(1), "{err}");
    one_line(&err, "pg_advisory_lock() is refused");
}

#[test]
fn sql_still_reads_everything_a_query_can_read() {
    let Some(db) = Db::new() else { return };
    for (q, want) in [
        ("select name from sessions", "alice"),
        ("select group_concat(name) from sessions", "alice"),
        ("select inter_session_schema_version() > 0", "true"),
        ("table sessions", ""),
        ("values (1, 'a'), (2, 'b')", "1|a\n2|b"),
        ("(select 1)", "1"),
        ("with x(a) as (select 2) select a * 3 from x;", "6"),
        ("select 1; -- trailing", "1"),
        ("select count(*) from generate_series(1, 10) g", "10"),
        (
            "select lower('A') || upper('b') || length('abc') || coalesce(null, 'z')",
            "aB3z",
        ),
        ("select now() <= clock_timestamp() and random() < 1", "true"),
        ("select pg_sleep(0.01) is null", "false"),
        (
            "select string_agg(x::text, ',' order by x desc) from generate_series(1, 3) x",
            "3,2,1",
        ),
        ("select count(*) > 0 from pg_stat_activity", "true"),
        ("select count(*) >= 0 from pg_locks", "true"),
        (
            "select current_setting('server_version_num')::int > 90000",
            "true",
        ),
        ("select jsonb_build_object('a', 1)->>'a'", "1"),
        (
            "select 'pg_notify(''x'', ''y'')' as \"lo_open(\"",
            "pg_notify('x', 'y')",
        ),
        ("select (1::numeric(10,2))::text, 'x'::varchar(3)", "1.00|x"),
        (
            "select count(*) from pg_class tablesample bernoulli(100) where false",
            "0",
        ),
        ("show standard_conforming_strings", "on"),
    ] {
        let out = db.sql(&[q]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{q}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !want.is_empty() {
            assert_eq!(text.trim(), want, "{q}");
        }
    }
    let plan = db.env.ok("sql", &["sql", "explain select * from history"]);
    assert!(plan.contains("cost="), "{plan}");
    let plan = db.env.ok(
        "sql",
        &[
            "sql",
            "explain (analyze, costs off) select count(*) from sessions",
        ],
    );
    assert!(
        plan.contains("actual time") || plan.contains("actual rows"),
        "{plan}"
    );
    // SHOW tells the server's own setting, not the limit sql runs under.
    let shown = db.env.ok("sql", &["sql", "show statement_timeout"]);
    let server: String = db
        .admin()
        .query_one("show statement_timeout", &[])
        .expect("show")
        .get(0);
    assert_eq!(shown.trim(), server);

    // As on SQLite: repeated JSON keys stay apart, an empty query says so,
    // one statement at a time.
    let v: serde_json::Value = serde_json::from_str(&db.env.ok(
        "sql",
        &[
            "sql",
            "--json",
            "select 1 as a, 2 as a, 3 as a_2, 'x' as b, true as c",
        ],
    ))
    .expect("one JSON document");
    assert_eq!(
        v,
        serde_json::json!([{"a": 1, "a_3": 2, "a_2": 3, "b": "x", "c": true}])
    );
    let v: serde_json::Value = serde_json::from_str(&db.env.ok(
        "sql",
        &["sql", "--json", "select * from sessions where false"],
    ))
    .expect("one JSON document");
    assert_eq!(v, serde_json::json!([]));
    for q in ["", " ;", "-- nothing", "/* nothing */"] {
        let line = refused(&db.sql(&[q]), 2, q);
        assert!(line.contains("empty query"), "{q:?}: {line}");
    }
    let line = refused(&db.sql(&["select 1; select pg_notify('x', 'y')"]), 1, "two");
    assert!(line.contains("one statement"), "{line}");
    let line = refused(&db.sql(&["selec 1"]), 1, "syntax");
    assert!(line.contains("syntax error"), "{line}");
}

// ------------------------------------------------- streaming and limits

#[test]
fn sql_prints_rows_as_they_come_and_stops_at_its_time_limit() {
    let Some(db) = Db::new() else { return };
    let q = "select 'first' union all select pg_sleep(30)::text";
    let mut run = db.start(&["--timeout", "2s", q]);
    assert_eq!(run.line(), "first");
    assert!(
        run.running(),
        "the first row came only once the query had ended"
    );
    let (code, err) = run.end(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{err}");
    one_line(
        &err,
        "sql: the query ran longer than 2 s and was cancelled (a longer limit: --timeout)",
    );

    // The default limit, as on SQLite.
    let started = Instant::now();
    let line = refused(&db.sql(&["select pg_sleep(30)"]), 1, "pg_sleep(30)");
    assert!(line.contains("longer than 5 s"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // Time spent waiting for a slow reader does not count: the reader
    // pauses longer than the limit while sql waits on a full pipe.
    let mut run = db.start(&["--timeout", "2s", "select generate_series(1, 50000)"]);
    assert_eq!(run.line(), "1");
    std::thread::sleep(Duration::from_secs(3));
    let mut last = String::new();
    for _ in 1..50000 {
        last = run.line();
    }
    assert_eq!(last, "50000");
    let (code, err) = run.end(Duration::from_secs(10));
    assert_eq!((code, err.as_str()), (Some(0), ""));
}

#[test]
fn sql_ends_quietly_when_its_reader_goes() {
    let Some(db) = Db::new() else { return };
    let started = Instant::now();
    let mut run = db.start(&["select generate_series(1, 10000000)"]);
    assert_eq!([run.line(), run.line(), run.line()], ["1", "2", "3"]);
    let (code, err) = run.end(Duration::from_secs(10));
    assert_eq!((code, err.as_str()), (Some(0), ""), "sql | head -3");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn sql_ctrl_c_cancels_the_query_on_the_server() {
    let Some(db) = Db::new() else { return };
    let mut admin = db.admin();
    let q = "select 'first' union all select pg_sleep(120)::text";
    let mut run = db.start(&["--timeout", "30s", q]);
    assert_eq!(run.line(), "first");
    assert!(run.running());
    run.signal(libc::SIGINT);
    let (code, err) = run.end(Duration::from_secs(10));
    assert_eq!(code, Some(130), "{err}");
    one_line(&err, "interrupted");
    // Cancelled on the server too, not left sleeping there once sql has
    // gone (a backend whose client left notices only when it next writes).
    let busy = "select count(*) from pg_stat_activity \
                where application_name = 'inter-session' and datname = current_database()";
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin
        .query_one(busy, &[])
        .expect("pg_stat_activity")
        .get::<_, i64>(0)
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the query still runs on the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sql_without_the_temp_privilege_refuses_what_it_cannot_check() {
    let Some(db) = Db::new() else { return };
    let role = format!("is_reader_{}", std::process::id());
    let name = pg::db_name(&db.url);
    let mut admin = db.admin();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; \
             CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'; \
             REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
        ))
        .expect("a role without TEMP");
    // The same server and database, as that role.
    let rest = &db.url[db.url.rfind('@').expect("user in the URL")..];
    let scheme = &db.url[..db.url.find("://").expect("scheme") + 3];
    let url = format!("{scheme}{role}:reader-pw{rest}");
    let env = Env::with_vars(&[("INTER_SESSION_DATABASE_URL", &url)]);
    for q in ["select 1", "select pg_notify('x', 'y')", "explain select 1"] {
        let line = refused(&env.run("sql", &["sql", q]), 1, q);
        assert!(line.contains("TEMP privilege"), "{q}: {line}");
    }
    assert_eq!(
        env.ok("sql", &["sql", "show standard_conforming_strings"])
            .trim(),
        "on"
    );
    let _ = admin.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}
