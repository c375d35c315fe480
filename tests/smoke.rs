mod support;
use support::*;

#[test]
fn hello_line_is_exact() {
    let env = Env::new();
    let mut alice = env.monitor("ka", &["--name", "alice"]);
    env.wait_online("alice");
    env.ok("kb", &["inbox", "watch", "--help"]);
    let mut bob = env.monitor("kb", &["--name", "bob", "--label", "the builder"]);
    env.wait_online("bob");
    let out = env.ok("kb", &["mail", "send", "--to", "alice", "--text", "hello"]);
    let id = sent_id(&out);
    assert!(out.ends_with("-> alice (delivered)\n"), "{out}");
    assert_eq!(
        alice.line(),
        format!("[inter-session msg={id} from=\"bob\" \"the builder\"] hello")
    );
    let id2 = sent_id(&env.ok("ka", &["mail", "send", "--to", "bob", "--text", "hi bob"]));
    assert_eq!(
        bob.line(),
        format!("[inter-session msg={id2} from=\"alice\"] hi bob")
    );
}
