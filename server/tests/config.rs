//! The relay's configuration as a user meets it: `--help`, environment variables, a TOML file,
//! JSON logs, and clear refusals of bad settings.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;

use common::{Relay, YClient};

const FLAGS: [(&str, &str); 14] = [
    ("--http-addr", "AETHERFLOW_HTTP_ADDR"),
    ("--data-dir", "AETHERFLOW_DATA_DIR"),
    ("--durability", "AETHERFLOW_DURABILITY"),
    ("--max-message-bytes", "AETHERFLOW_MAX_MESSAGE_BYTES"),
    ("--log-format", "AETHERFLOW_LOG_FORMAT"),
    ("--relaxed-flush-ms", "AETHERFLOW_RELAXED_FLUSH_MS"),
    ("--unload-after-secs", "AETHERFLOW_UNLOAD_AFTER_SECS"),
    (
        "--compact-after-updates",
        "AETHERFLOW_COMPACT_AFTER_UPDATES",
    ),
    ("--compact-after-bytes", "AETHERFLOW_COMPACT_AFTER_BYTES"),
    ("--config", "AETHERFLOW_CONFIG"),
    (
        "--quantum-sparse-fec-budget",
        "AETHERFLOW_QUANTUM_SPARSE_FEC_BUDGET",
    ),
    ("--outbox-max-bytes", "AETHERFLOW_OUTBOX_MAX_BYTES"),
    ("--tls-cert", "AETHERFLOW_TLS_CERT"),
    ("--tls-key", "AETHERFLOW_TLS_KEY"),
];

fn aetherflow(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aetherflow"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn help_documents_every_setting_with_its_environment_variable() {
    let out = aetherflow(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in FLAGS {
        assert!(help.contains(flag), "--help lacks {flag}");
        assert!(help.contains(env), "--help lacks {env}");
    }
    assert!(
        help.contains("16 MiB") && help.contains("127.0.0.1:8080"),
        "defaults shown"
    );
}

/// The help of `flag` in `aetherflow --help`: from its line to the next flag's.
fn help_of<'a>(help: &'a str, flag: &str) -> &'a str {
    let start = help
        .find(&format!("      {flag} "))
        .unwrap_or_else(|| panic!("--help lacks {flag}"));
    let rest = &help[start + flag.len() + 6..];
    let end = rest.find("\n      --").unwrap_or(rest.len());
    &rest[..end]
}

/// What `--help` promises as each setting's default is what the relay runs with (it once
/// said the sparse FEC budget defaulted to 100 while the relay used 200).
#[test]
fn help_shows_the_defaults_the_relay_runs_with() {
    use aetherflow_server::config as c;
    let out = aetherflow(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let budget = c::DEFAULT_QUANTUM_SPARSE_FEC_BUDGET.to_string();
    let max_message = format!("{} (16 MiB)", c::DEFAULT_MAX_MESSAGE_BYTES);
    let token_ttl = format!("{} (24 h)", c::DEFAULT_TOKEN_MAX_TTL_SECS);
    let defaults: [(&str, String); 17] = [
        ("--http-addr", c::DEFAULT_HTTP_ADDR.into()),
        ("--quantum-addr", c::DEFAULT_QUANTUM_ADDR.into()),
        ("--quantum-sparse-fec-budget", budget),
        ("--data-dir", c::DEFAULT_DATA_DIR.into()),
        ("--durability", "durable".into()),
        ("--max-message-bytes", max_message),
        ("--log-format", "pretty".into()),
        (
            "--relaxed-flush-ms",
            c::DEFAULT_RELAXED_FLUSH_MS.to_string(),
        ),
        (
            "--unload-after-secs",
            c::DEFAULT_UNLOAD_AFTER_SECS.to_string(),
        ),
        (
            "--compact-after-updates",
            c::DEFAULT_COMPACT_AFTER_UPDATES.to_string(),
        ),
        (
            "--compact-after-bytes",
            c::DEFAULT_COMPACT_AFTER_BYTES.to_string(),
        ),
        (
            "--ping-interval-secs",
            c::DEFAULT_PING_INTERVAL_SECS.to_string(),
        ),
        (
            "--connect-rate-per-min",
            c::DEFAULT_CONNECT_RATE_PER_MIN.to_string(),
        ),
        ("--connect-burst", c::DEFAULT_CONNECT_BURST.to_string()),
        (
            "--message-rate-per-sec",
            c::DEFAULT_MESSAGE_RATE_PER_SEC.to_string(),
        ),
        ("--message-burst", c::DEFAULT_MESSAGE_BURST.to_string()),
        ("--token-max-ttl-secs", token_ttl),
    ];
    for (flag, default) in &defaults {
        let text = help_of(&help, flag);
        assert_eq!(
            text.matches("[default: ").count(),
            1,
            "{flag} should name one default:\n{text}"
        );
        assert!(
            text.contains(&format!("[default: {default}]")),
            "{flag} should default to {default}:\n{text}"
        );
    }
    // The bounds the relay checks are the ones `--help` gives.
    let budget = help_of(&help, "--quantum-sparse-fec-budget");
    assert!(budget.contains("From 0 to 200;"), "{budget}");
    assert!(help_of(&help, "--admin-key").contains("At least 16 characters"));
}

#[test]
fn a_bad_environment_value_is_refused_with_a_clear_message() {
    let out = aetherflow(&[], &[("AETHERFLOW_DURABILITY", "sometimes")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("sometimes") && stderr.contains("durable"),
        "{stderr}"
    );
}

#[test]
fn a_broken_config_file_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "max_message_bytes = \"lots\"\n").unwrap();
    let out = aetherflow(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("relay.toml"), "{stderr}");
}

#[tokio::test]
async fn settings_from_a_toml_file_and_the_environment_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "log_format = \"json\"\nmax_message_bytes = 4096\n").unwrap();
    let data = dir.path().join("data");
    let relay = Relay::start_with(
        &data,
        &[],
        &[
            ("AETHERFLOW_CONFIG", path.to_str().unwrap()),
            ("AETHERFLOW_DURABILITY", "relaxed"),
        ],
    );
    // The file's limit applies: a 5,000-byte message is refused with 1009.
    let mut client = YClient::connect(&relay.ws_url("configured")).await;
    client.send_raw(vec![0u8; 5000]).await;
    assert_eq!(u16::from(client.expect_close().await.code), 1009);
    // The file's log format and the environment's durability show in the JSON logs (read by
    // a background thread, so wait for the line rather than race it).
    relay.wait_for_log("relay ready").await;
    let logs = relay.logs();
    let ready = logs
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|v| v["fields"]["message"] == "relay ready")
        .unwrap_or_else(|| panic!("no JSON 'relay ready' line in: {logs}"));
    assert_eq!(ready["fields"]["durability"], "Relaxed");
    assert!(data.join("aetherflow.redb").exists());
}

#[test]
fn an_unusable_data_dir_is_reported_and_the_relay_exits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = aetherflow(
        &[
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not-a-dir"), "{stderr}");
}

#[test]
fn an_address_in_use_is_reported_and_the_relay_exits() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = aetherflow(
        &[
            "--http-addr",
            &addr,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("cannot listen") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[test]
fn a_second_relay_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Relay::start_in(dir.path(), &[]);
    let out = aetherflow(
        &[
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !out.status.success(),
        "two relays must never share one database"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("aetherflow.redb"), "{stderr}");
}

/// The sparse FEC budget is a percentage from 0 to 200, however it is given; a bad one stops
/// the relay with a message naming the setting, before it listens anywhere.
#[test]
fn a_sparse_fec_budget_outside_0_to_200_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let base = [
        "--http-addr",
        "127.0.0.1:0",
        "--quantum-addr",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ];
    let refused = |out: std::process::Output, expect: &[&str]| {
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8(out.stderr).unwrap();
        for word in expect {
            assert!(stderr.contains(word), "{word} not in: {stderr}");
        }
    };
    // Above the limit, as a flag and as an environment variable: the relay's own check.
    let flag = [&base[..], &["--quantum-sparse-fec-budget", "201"]].concat();
    refused(
        aetherflow(&flag, &[]),
        &["--quantum-sparse-fec-budget", "0 to 200"],
    );
    let env = [("AETHERFLOW_QUANTUM_SPARSE_FEC_BUDGET", "250")];
    refused(
        aetherflow(&base, &env),
        &["--quantum-sparse-fec-budget", "0 to 200"],
    );
    // Not a number, or negative: refused by the parser, which names the flag and the value.
    let words = [&base[..], &["--quantum-sparse-fec-budget", "lots"]].concat();
    refused(
        aetherflow(&words, &[]),
        &["--quantum-sparse-fec-budget", "lots"],
    );
    let negative = [("AETHERFLOW_QUANTUM_SPARSE_FEC_BUDGET", "-5")];
    refused(
        aetherflow(&base, &negative),
        &["--quantum-sparse-fec-budget", "-5"],
    );
    // In the config file: too large, and of the wrong type.
    let path = dir.path().join("relay.toml");
    let file = [&base[..], &["--config", path.to_str().unwrap()]].concat();
    std::fs::write(&path, "quantum_sparse_fec_budget = 300\n").unwrap();
    refused(
        aetherflow(&file, &[]),
        &["--quantum-sparse-fec-budget", "0 to 200"],
    );
    std::fs::write(&path, "quantum_sparse_fec_budget = \"high\"\n").unwrap();
    refused(
        aetherflow(&file, &[]),
        &["relay.toml", "quantum_sparse_fec_budget"],
    );
}

/// A guessable HS256 secret lets anyone sign tokens for every document: on a public address
/// the relay refuses to start with one, however it is given, naming the setting and the
/// minimum; on loopback it starts and warns.
#[tokio::test]
async fn a_short_jwt_secret_on_a_public_address_stops_the_relay_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let public = [
        "--http-addr",
        "0.0.0.0:0",
        "--quantum-addr",
        "off",
        "--data-dir",
        data,
    ];
    let flag = [&public[..], &["--jwt-secret", "x"]].concat();
    let by_flag = refused_at_start(&flag, &[]);
    let by_env = refused_at_start(&public, &[("AETHERFLOW_JWT_SECRET", "x")]);
    for out in [by_flag, by_env] {
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("--jwt-secret") && stderr.contains("32 bytes"),
            "{stderr}"
        );
        assert!(!stderr.contains("ready"), "{stderr}");
    }
    let relay = Relay::start(&["--jwt-secret", "x"]);
    relay.wait_for_log("WEAK --jwt-secret").await;
}

/// Runs the relay expecting it to exit on its own; one still running after
/// [`common::TIMEOUT`] is killed and the test fails.
fn refused_at_start(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aetherflow"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the relay started with {args:?} {env:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
