//! The `--help` text's defaults and bounds, generated from the constants the relay runs with,
//! so that what `--help` promises cannot drift from what the code does (it once said the
//! sparse FEC budget defaulted to 100 while the relay used 200).
//!
//! The settings' doc comments give the prose; [`command`] appends `[default: ...]` (and for
//! some settings their bounds) to each. The defaults are not clap defaults because a flag
//! left unset must fall through to the environment and the `--config` file.

use clap::{CommandFactory, FromArgMatches, ValueEnum};

use super::{
    Cli, DEFAULT_COMPACT_AFTER_BYTES, DEFAULT_COMPACT_AFTER_UPDATES, DEFAULT_CONNECT_BURST,
    DEFAULT_CONNECT_RATE_PER_MIN, DEFAULT_DATA_DIR, DEFAULT_HTTP_ADDR, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MESSAGE_BURST, DEFAULT_MESSAGE_RATE_PER_SEC, DEFAULT_PING_INTERVAL_SECS,
    DEFAULT_QUANTUM_ADDR, DEFAULT_QUANTUM_SPARSE_FEC_BUDGET, DEFAULT_RELAXED_FLUSH_MS,
    DEFAULT_TOKEN_MAX_TTL_SECS, DEFAULT_UNLOAD_AFTER_SECS, Durability, LogFormat,
    MIN_ADMIN_KEY_LEN,
};
use super::{
    DEFAULT_HISTORY_HOURLY_DAYS, DEFAULT_HISTORY_KEEP_ALL_DAYS, DEFAULT_HISTORY_KEEP_NEWEST,
};
use super::{
    DEFAULT_HOCUSPOCUS_MAX_DOCUMENTS, DEFAULT_HTTP_HEADER_TIMEOUT_SECS,
    DEFAULT_MAX_CONTENT_JSON_BYTES, DEFAULT_MAX_CONTENT_READS, DEFAULT_MAX_DOC_BYTES,
    DEFAULT_MAX_DOC_ITEMS, DEFAULT_MAX_UPDATE_ITEMS, DEFAULT_OUTBOX_MAX_BYTES,
    DEFAULT_QUANTUM_MAX_DOCUMENTS, DEFAULT_WEBHOOK_DEBOUNCE_MS, DEFAULT_WEBHOOK_RETRY_HORIZON_SECS,
    DEFAULT_WEBHOOK_RETRY_INITIAL_MS, DEFAULT_WEBHOOK_TIMEOUT_SECS,
};

/// The clap command of the `aetherflow` binary, with every setting's help ending in its
/// default.
pub fn command() -> clap::Command {
    let mut command = Cli::command();
    for (id, suffix) in help_suffixes() {
        command = command.mut_arg(id, |arg| {
            let help = append(arg.get_help(), &suffix);
            let arg = match arg.get_long_help() {
                Some(long) => {
                    let long = append(Some(long), &suffix);
                    arg.long_help(long)
                }
                None => arg,
            };
            arg.help(help)
        });
    }
    command
}

impl Cli {
    /// Parses the process's arguments and environment against [`command`]; exits with a
    /// usage error (or the help text) as clap does.
    pub fn parse_with_defaults() -> Cli {
        let matches = command().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// Per setting (clap id = field name), the text appended to its help.
fn help_suffixes() -> Vec<(&'static str, String)> {
    let fec_transport_default = aetherflow_quantum::fec::FecConfig::default().sparse_budget_percent;
    vec![
        ("http_addr", default(DEFAULT_HTTP_ADDR)),
        ("quantum_addr", default(DEFAULT_QUANTUM_ADDR)),
        (
            "quantum_sparse_fec_budget",
            format!(
                "From 0 to {}; {fec_transport_default} is the transport's bytes-first default. {}",
                aetherflow_quantum::fec::MAX_SPARSE_BUDGET_PERCENT,
                default(DEFAULT_QUANTUM_SPARSE_FEC_BUDGET)
            ),
        ),
        (
            "quantum_max_documents",
            default(DEFAULT_QUANTUM_MAX_DOCUMENTS),
        ),
        (
            "hocuspocus_max_documents",
            default(DEFAULT_HOCUSPOCUS_MAX_DOCUMENTS),
        ),
        ("data_dir", default(DEFAULT_DATA_DIR)),
        ("max_update_items", default(DEFAULT_MAX_UPDATE_ITEMS)),
        ("max_doc_items", default(DEFAULT_MAX_DOC_ITEMS)),
        (
            "max_doc_bytes",
            default(mib(DEFAULT_MAX_DOC_BYTES as usize)),
        ),
        ("durability", default(value_name(Durability::default()))),
        (
            "max_message_bytes",
            default(format!(
                "{DEFAULT_MAX_MESSAGE_BYTES} ({} MiB)",
                DEFAULT_MAX_MESSAGE_BYTES / (1024 * 1024)
            )),
        ),
        ("log_format", default(value_name(LogFormat::default()))),
        ("relaxed_flush_ms", default(DEFAULT_RELAXED_FLUSH_MS)),
        ("unload_after_secs", default(DEFAULT_UNLOAD_AFTER_SECS)),
        (
            "compact_after_updates",
            default(DEFAULT_COMPACT_AFTER_UPDATES),
        ),
        ("compact_after_bytes", default(DEFAULT_COMPACT_AFTER_BYTES)),
        (
            "history_keep_all_days",
            default(DEFAULT_HISTORY_KEEP_ALL_DAYS),
        ),
        ("history_hourly_days", default(DEFAULT_HISTORY_HOURLY_DAYS)),
        ("history_keep_newest", default(DEFAULT_HISTORY_KEEP_NEWEST)),
        ("ping_interval_secs", default(DEFAULT_PING_INTERVAL_SECS)),
        (
            "admin_key",
            format!("At least {MIN_ADMIN_KEY_LEN} characters."),
        ),
        (
            "connect_rate_per_min",
            default(DEFAULT_CONNECT_RATE_PER_MIN),
        ),
        ("connect_burst", default(DEFAULT_CONNECT_BURST)),
        (
            "message_rate_per_sec",
            default(DEFAULT_MESSAGE_RATE_PER_SEC),
        ),
        ("message_burst", default(DEFAULT_MESSAGE_BURST)),
        ("outbox_max_bytes", default(mib(DEFAULT_OUTBOX_MAX_BYTES))),
        (
            "http_header_timeout_secs",
            default(DEFAULT_HTTP_HEADER_TIMEOUT_SECS),
        ),
        ("max_content_reads", default(DEFAULT_MAX_CONTENT_READS)),
        ("webhook_debounce_ms", default(DEFAULT_WEBHOOK_DEBOUNCE_MS)),
        (
            "webhook_retry_initial_ms",
            default(DEFAULT_WEBHOOK_RETRY_INITIAL_MS),
        ),
        (
            "webhook_retry_horizon_secs",
            default(format!("{DEFAULT_WEBHOOK_RETRY_HORIZON_SECS} (24 h)")),
        ),
        (
            "webhook_timeout_secs",
            default(DEFAULT_WEBHOOK_TIMEOUT_SECS),
        ),
        ("webhook_allow_private_addresses", default("false")),
        (
            "max_content_json_bytes",
            default(mib(DEFAULT_MAX_CONTENT_JSON_BYTES)),
        ),
        (
            "token_max_ttl_secs",
            default(format!(
                "{DEFAULT_TOKEN_MAX_TTL_SECS} ({} h)",
                DEFAULT_TOKEN_MAX_TTL_SECS / 3600
            )),
        ),
    ]
}

/// `help` followed by `suffix`; a suffix that is a sentence gets the full stop clap took off
/// the end of the doc comment.
fn append(help: Option<&clap::builder::StyledStr>, suffix: &str) -> String {
    let help = help.map(ToString::to_string).unwrap_or_default();
    let sentence = suffix.starts_with(|c: char| c.is_ascii_uppercase());
    if sentence && !help.ends_with('.') {
        format!("{help}. {suffix}")
    } else {
        format!("{help} {suffix}")
    }
}

/// `bytes` with its size in MiB, e.g. `4194304 (4 MiB)`.
fn mib(bytes: usize) -> String {
    format!("{bytes} ({} MiB)", bytes / (1024 * 1024))
}

fn default(value: impl std::fmt::Display) -> String {
    format!("[default: {value}]")
}

/// The name a `ValueEnum` value has on the command line.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}
