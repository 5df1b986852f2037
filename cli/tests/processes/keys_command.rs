//! `swarm keys create|list|revoke` on a real key database, as an operator runs them.

use std::process::Command;

use swarm_kit::testing::{Backend, TestDatabase};

fn swarm(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("swarm runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_issued_listed_and_revoked() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let url = database.url();
    let (ok, secret, said) = swarm(&[
        "keys",
        "create",
        "--name",
        "ci",
        "--role",
        "client",
        "--database-url",
        url,
    ]);
    assert!(ok, "{said}");
    let secret = secret.trim();
    assert!(secret.starts_with("swarm_"), "{secret}");
    let id = said
        .split_whitespace()
        .find(|word| uuid::Uuid::parse_str(word).is_ok())
        .expect("the key id is named")
        .to_owned();

    let (ok, listed, _) = swarm(&["keys", "list", "--database-url", url]);
    assert!(ok);
    assert!(listed.contains(&id) && listed.contains("client") && listed.contains("active"));
    assert!(!listed.contains(secret), "secrets are never listed");

    let (ok, revoked, _) = swarm(&["keys", "revoke", &id, "--database-url", url]);
    assert!(ok && revoked.contains("revoked"));
    let (_, listed, _) = swarm(&["keys", "list", "--database-url", url]);
    assert!(listed.contains("revoked"));

    let (ok, _, said) = swarm(&[
        "keys",
        "create",
        "--name",
        "x",
        "--role",
        "root",
        "--database-url",
        url,
    ]);
    assert!(!ok && said.contains("role must be"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_issues_and_shows_an_admin_key_once() {
    use std::io::{BufRead, BufReader};

    let database = TestDatabase::new(Backend::Sqlite).await;
    let url = database.url();
    // Starts the gateway alone and returns what it said on standard error until it listened.
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args([
                "serve",
                "gateway",
                "--addr",
                "127.0.0.1:0",
                "--database-url",
                url,
            ])
            .env("RUST_LOG", "info")
            .env_remove("SWARM_ADMIN_KEY")
            .env_remove("SWARM_AUTH")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the gateway starts");
        let mut said = Vec::new();
        for line in BufReader::new(child.stderr.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            let listening = line.contains("gateway listening");
            said.push(line);
            if listening {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        said
    };
    let said = start();
    let key = said
        .iter()
        .flat_map(|line| line.split_whitespace())
        .find(|word| is_key(word))
        .expect("the first start shows an admin key")
        .to_owned();
    let (_, listed, _) = swarm(&["keys", "list", "--database-url", url]);
    assert!(listed.contains("admin") && listed.contains(&key[..12]));

    let said = start();
    assert!(
        said.iter().any(|line| line.contains("gateway listening")),
        "{said:?}"
    );
    assert!(
        !said
            .iter()
            .flat_map(|line| line.split_whitespace())
            .any(is_key),
        "a key is issued only while no admin key exists: {said:?}"
    );
}

/// Tells whether `word` is an issued key: `swarm_` and 64 hex digits.
fn is_key(word: &str) -> bool {
    word.strip_prefix("swarm_")
        .is_some_and(|rest| rest.len() == 64 && rest.chars().all(|c| c.is_ascii_hexdigit()))
}
