//! The configuration's unit tests.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn defaults_match_the_documented_ones() {
    let config = Config::from_settings(Settings::default()).unwrap();
    assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(config.database_path(), Path::new("./data/aetherflow.redb"));
    assert_eq!(config.durability, Durability::Durable);
    assert_eq!(config.max_message_bytes, 16 * 1024 * 1024);
    assert_eq!(config.log_format, LogFormat::Pretty);
}

#[test]
fn flags_override_the_file_and_the_file_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        "http_addr = \"127.0.0.1:9999\"\ndurability = \"relaxed\"\nmax_message_bytes = 2048\n",
    )
    .unwrap();
    let cli = Cli::parse_from([
        "aetherflow",
        "--config",
        path.to_str().unwrap(),
        "--max-message-bytes",
        "4096",
    ]);
    let config = Config::from_cli(cli).unwrap();
    assert_eq!(config.http_addr.to_string(), "127.0.0.1:9999");
    assert_eq!(config.durability, Durability::Relaxed);
    assert_eq!(config.max_message_bytes, 4096);
}

#[test]
fn unknown_keys_in_the_file_are_an_error_not_silence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "http_adr = \"127.0.0.1:9999\"\n").unwrap();
    let cli = Cli::parse_from(["aetherflow", "--config", path.to_str().unwrap()]);
    let err = Config::from_cli(cli).unwrap_err();
    assert!(err.to_string().contains("http_adr"), "{err}");
}

#[test]
fn a_public_address_without_keys_is_refused() {
    let public = Settings {
        http_addr: Some("0.0.0.0:8080".parse().unwrap()),
        ..Settings::default()
    };
    let err = Config::from_settings(public).unwrap_err();
    assert!(err.to_string().contains("--jwt-secret"), "{err}");
    let with_key = Settings {
        http_addr: Some("0.0.0.0:8080".parse().unwrap()),
        jwt_secret: Some("a-secret-of-at-least-32-bytes-ok".into()),
        ..Settings::default()
    };
    assert!(Config::from_settings(with_key).is_ok());
}

#[test]
fn a_short_jwt_secret_is_refused_beyond_loopback_and_only_warned_about_on_it() {
    let short = "x".repeat(MIN_JWT_SECRET_BYTES - 1);
    for (http, quantum) in [
        ("0.0.0.0:8080", "127.0.0.1:0"),
        ("127.0.0.1:0", "[::]:9090"),
    ] {
        let public = Settings {
            http_addr: Some(http.parse().unwrap()),
            quantum_addr: Some(quantum.into()),
            jwt_secret: Some(short.clone()),
            ..Settings::default()
        };
        let err = Config::from_settings(public).unwrap_err();
        assert!(err.to_string().contains("--jwt-secret"), "{err}");
        assert!(err.to_string().contains("32 bytes"), "{err}");
    }
    let loopback = Settings {
        jwt_secret: Some(short),
        ..Settings::default()
    };
    let config = Config::from_settings(loopback).unwrap();
    assert!(config.jwt_secret_is_weak());
}

#[test]
fn a_short_admin_key_or_one_equal_to_the_jwt_secret_is_refused() {
    let short = Settings {
        admin_key: Some("short".into()),
        ..Settings::default()
    };
    let err = Config::from_settings(short).unwrap_err();
    assert!(err.to_string().contains("--admin-key"), "{err}");
    let same = Settings {
        admin_key: Some("the-same-long-secret".into()),
        jwt_secret: Some("the-same-long-secret".into()),
        ..Settings::default()
    };
    let err = Config::from_settings(same).unwrap_err();
    assert!(err.to_string().contains("--jwt-secret"), "{err}");
}

#[test]
fn the_quantum_address_defaults_to_9090_can_be_set_or_turned_off() {
    let default = Config::from_settings(Settings::default()).unwrap();
    assert_eq!(
        default.quantum_addr,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    assert!(!default.quantum_required);
    let set = |value: &str| {
        Config::from_settings(Settings {
            quantum_addr: Some(value.into()),
            ..Settings::default()
        })
    };
    let explicit = set("127.0.0.1:0").unwrap();
    assert_eq!(explicit.quantum_addr, Some("127.0.0.1:0".parse().unwrap()));
    assert!(explicit.quantum_required);
    assert_eq!(set("off").unwrap().quantum_addr, None);
    let err = set("nine").unwrap_err();
    assert!(err.to_string().contains("--quantum-addr"), "{err}");
    let err = set("0.0.0.0:9090").unwrap_err();
    assert!(err.to_string().contains("--jwt-secret"), "{err}");
}

#[test]
fn a_zero_rate_disables_its_limit_and_defaults_are_on() {
    let config = Config::from_settings(Settings::default()).unwrap();
    assert_eq!(
        config.message_rate,
        Some(Rate::per_second(
            DEFAULT_MESSAGE_RATE_PER_SEC,
            DEFAULT_MESSAGE_BURST
        ))
    );
    assert!(config.connect_rate.is_some());
    let off = Settings {
        connect_rate_per_min: Some(0),
        message_rate_per_sec: Some(0),
        ..Settings::default()
    };
    let config = Config::from_settings(off).unwrap();
    assert_eq!((config.connect_rate, config.message_rate), (None, None));
}

#[test]
fn absurd_limits_are_refused() {
    let settings = Settings {
        max_message_bytes: Some(10),
        ..Settings::default()
    };
    assert!(Config::from_settings(settings).is_err());
}

#[test]
fn trusted_proxies_come_from_the_file_or_the_flag_and_bad_ranges_are_refused() {
    assert!(
        Config::from_settings(Settings::default())
            .unwrap()
            .trusted_proxies
            .is_empty()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "trusted_proxies = \"10.0.0.0/8, ::1\"\n").unwrap();
    let cli = Cli::parse_from(["aetherflow", "--config", path.to_str().unwrap()]);
    let config = Config::from_cli(cli).unwrap();
    assert_eq!(config.trusted_proxies.ranges().len(), 2);
    assert!(config.trusted_proxies.trusts("10.9.8.7".parse().unwrap()));
    let cli = Cli::parse_from([
        "aetherflow",
        "--config",
        path.to_str().unwrap(),
        "--trusted-proxies",
        "192.0.2.1",
    ]);
    let config = Config::from_cli(cli).unwrap();
    assert!(!config.trusted_proxies.trusts("10.9.8.7".parse().unwrap()));
    let bad = Settings {
        trusted_proxies: Some("10.0.0.0/40".into()),
        ..Settings::default()
    };
    let err = Config::from_settings(bad).unwrap_err();
    assert!(err.to_string().contains("--trusted-proxies"), "{err}");
}

#[test]
fn the_connection_cap_stays_below_the_file_limit() {
    assert_eq!(default_max_connections(Some(1024)), 896);
    assert_eq!(default_max_connections(Some(256)), 192);
    assert_eq!(default_max_connections(Some(1_048_576)), 917_504);
    assert_eq!(default_max_connections(None), 65_536);
    // A tiny limit still leaves a connection for /healthz and one for everyone else.
    assert_eq!(default_max_connections(Some(10)), 2);
    let config = Config::from_settings(Settings::default()).unwrap();
    if let Some(limit) = open_file_limit() {
        assert!((config.max_connections as u64) < limit.max(3));
    }
}

#[test]
fn the_outbox_bound_comes_from_flag_env_or_file_and_refuses_tiny_values() {
    let config = Config::from_settings(Settings::default()).unwrap();
    assert_eq!(config.outbox_max_bytes, DEFAULT_OUTBOX_MAX_BYTES);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "outbox_max_bytes = 65536\n").unwrap();
    let cli = Cli::parse_from(["aetherflow", "--config", path.to_str().unwrap()]);
    assert_eq!(Config::from_cli(cli).unwrap().outbox_max_bytes, 65536);
    let cli = Cli::parse_from([
        "aetherflow",
        "--config",
        path.to_str().unwrap(),
        "--outbox-max-bytes",
        "131072",
    ]);
    assert_eq!(Config::from_cli(cli).unwrap().outbox_max_bytes, 131_072);
    let tiny = Settings {
        outbox_max_bytes: Some(100),
        ..Settings::default()
    };
    let err = Config::from_settings(tiny).unwrap_err();
    assert!(err.to_string().contains("--outbox-max-bytes"), "{err}");
}

#[test]
fn size_limits_default_to_the_documented_ones_come_from_the_file_and_zero_is_refused() {
    let config = Config::from_settings(Settings::default()).unwrap();
    assert_eq!(config.quantum_max_documents, 100);
    assert_eq!(config.max_update_items, 100_000);
    assert_eq!(config.max_doc_items, 1_000_000);
    assert_eq!(config.max_doc_bytes, 256 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        "quantum_max_documents = 5\nmax_update_items = 10\nmax_doc_items = 20\nmax_doc_bytes = 30\n",
    )
    .unwrap();
    let cli = Cli::parse_from([
        "aetherflow",
        "--config",
        path.to_str().unwrap(),
        "--max-doc-items",
        "25",
    ]);
    let config = Config::from_cli(cli).unwrap();
    assert_eq!(
        (
            config.quantum_max_documents,
            config.max_update_items,
            config.max_doc_items,
            config.max_doc_bytes
        ),
        (5, 10, 25, 30)
    );
    for flag in [
        "--quantum-max-documents",
        "--max-update-items",
        "--max-doc-items",
        "--max-doc-bytes",
    ] {
        let cli = Cli::parse_from(["aetherflow", flag, "0"]);
        match Config::from_cli(cli) {
            Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, flag),
            other => panic!("{flag} 0 accepted: {other:?}"),
        }
    }
}

#[test]
fn tls_needs_both_files_from_flag_env_or_file() {
    let only_cert = Settings {
        tls_cert: Some("cert.pem".into()),
        ..Settings::default()
    };
    let err = Config::from_settings(only_cert).unwrap_err();
    assert!(err.to_string().contains("--tls-key"), "{err}");
    let only_key = Settings {
        tls_key: Some("key.pem".into()),
        ..Settings::default()
    };
    let err = Config::from_settings(only_key).unwrap_err();
    assert!(err.to_string().contains("--tls-cert"), "{err}");
    assert_eq!(
        Config::from_settings(Settings::default()).unwrap().tls,
        None
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        "tls_cert = \"/etc/relay/cert.pem\"\ntls_key = \"/etc/relay/key.pem\"\n",
    )
    .unwrap();
    let cli = Cli::parse_from([
        "aetherflow",
        "--config",
        path.to_str().unwrap(),
        "--tls-key",
        "/run/key.pem",
    ]);
    let config = Config::from_cli(cli).unwrap();
    assert_eq!(
        config.tls,
        Some(TlsFiles {
            cert: "/etc/relay/cert.pem".into(),
            key: "/run/key.pem".into(),
        })
    );
    assert_eq!(config.http_scheme(), "https");
}

#[test]
fn webhook_settings_come_from_flag_or_file_and_private_addresses_stay_refused_by_default() {
    let config = Config::from_settings(Settings::default()).unwrap();
    assert_eq!(
        config.webhook_debounce,
        Duration::from_millis(DEFAULT_WEBHOOK_DEBOUNCE_MS)
    );
    assert_eq!(
        config.webhook_retry_horizon,
        Duration::from_secs(DEFAULT_WEBHOOK_RETRY_HORIZON_SECS)
    );
    assert!(!config.webhook_allow_private_addresses);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        "webhook_debounce_ms = 500\nwebhook_retry_horizon_secs = 60\n\
         webhook_timeout_secs = 3\nwebhook_allow_private_addresses = true\n",
    )
    .unwrap();
    let cli = Cli::parse_from([
        "aetherflow",
        "--config",
        path.to_str().unwrap(),
        "--webhook-retry-initial-ms",
        "20",
    ]);
    let config = Config::from_cli(cli).unwrap();
    assert_eq!(config.webhook_debounce, Duration::from_millis(500));
    assert_eq!(config.webhook_retry_horizon, Duration::from_secs(60));
    assert_eq!(config.webhook_retry_initial, Duration::from_millis(20));
    assert_eq!(config.webhook_timeout, Duration::from_secs(3));
    assert!(config.webhook_allow_private_addresses);
    for bad in [
        Settings {
            webhook_timeout_secs: Some(0),
            ..Settings::default()
        },
        Settings {
            webhook_retry_initial_ms: Some(0),
            ..Settings::default()
        },
        Settings {
            webhook_debounce_ms: Some(3_600_001),
            ..Settings::default()
        },
    ] {
        let err = Config::from_settings(bad).unwrap_err();
        assert!(err.to_string().contains("--webhook-"), "{err}");
    }
}

#[test]
fn cluster_mode_is_off_by_default_and_its_settings_are_checked() {
    assert!(
        Config::from_settings(Settings::default())
            .unwrap()
            .cluster
            .is_none()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        "cluster = \"nats://10.0.0.1:4222,nats://10.0.0.2:4222\"\n",
    )
    .unwrap();
    let cli = Cli::parse_from(["aetherflow", "--config", path.to_str().unwrap()]);
    let cluster = Config::from_cli(cli).unwrap().cluster.unwrap();
    assert_eq!(cluster.prefix, "AETHERFLOW");
    assert_eq!(cluster.replicas, 3);
    let refused = |settings: Settings| match Config::from_settings(settings) {
        Err(ConfigError::Invalid { name, .. }) => name,
        other => panic!("expected a refusal, got {:?}", other.map(|c| c.cluster)),
    };
    let url = || Some("nats://127.0.0.1:4222".to_owned());
    let orphan = Settings {
        cluster_replicas: Some(3),
        ..Settings::default()
    };
    assert_eq!(refused(orphan), "--cluster");
    let too_many = Settings {
        cluster: url(),
        cluster_replicas: Some(7),
        ..Settings::default()
    };
    assert_eq!(refused(too_many), "--cluster-replicas");
    let bad_prefix = Settings {
        cluster: url(),
        cluster_prefix: Some("has.dots".into()),
        ..Settings::default()
    };
    assert_eq!(refused(bad_prefix), "--cluster-prefix");
    let bad_url = Settings {
        cluster: Some("not a url at all".into()),
        ..Settings::default()
    };
    assert_eq!(refused(bad_url), "--cluster");
}

#[test]
fn compaction_triggers_default_come_from_a_file_and_zero_is_refused() {
    let config = Config::from_settings(Settings::default()).unwrap();
    assert_eq!(config.compact_after_updates, 500);
    assert_eq!(config.compact_after_bytes, 768 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "compact_after_bytes = 4096\n").unwrap();
    let cli = Cli::parse_from(["aetherflow", "--config", path.to_str().unwrap()]);
    assert_eq!(Config::from_cli(cli).unwrap().compact_after_bytes, 4096);
    for flag in ["--compact-after-updates", "--compact-after-bytes"] {
        let cli = Cli::parse_from(["aetherflow", flag, "0"]);
        match Config::from_cli(cli) {
            Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, flag),
            other => panic!("{flag} 0 accepted: {other:?}"),
        }
    }
}
