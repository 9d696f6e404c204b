//! Cluster mode's settings: which NATS servers, which prefix, how many replicas.

use super::ConfigError;
use crate::jetstream::ClusterSettings;

/// The default prefix of streams, buckets and subjects.
pub const DEFAULT_CLUSTER_PREFIX: &str = "AETHERFLOW";
/// The default replicas of each stream and bucket: a majority survives one server's loss.
pub const DEFAULT_CLUSTER_REPLICAS: usize = 3;

/// Cluster mode's settings, if `--cluster` is set; the prefix and replicas need it.
pub(super) fn settings(
    url: Option<String>,
    prefix: Option<String>,
    replicas: Option<usize>,
) -> Result<Option<ClusterSettings>, ConfigError> {
    let Some(url) = url else {
        if prefix.is_some() || replicas.is_some() {
            return Err(ConfigError::Invalid {
                name: "--cluster",
                why: "--cluster-prefix and --cluster-replicas need --cluster (the NATS servers)",
            });
        }
        return Ok(None);
    };
    if crate::jetstream::servers(&url).is_err() || url.trim().is_empty() {
        return Err(ConfigError::Invalid {
            name: "--cluster",
            why: "must be comma-separated NATS URLs, e.g. nats://10.0.0.1:4222,nats://10.0.0.2:4222",
        });
    }
    let prefix = prefix.unwrap_or_else(|| DEFAULT_CLUSTER_PREFIX.to_owned());
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if prefix.is_empty() || prefix.len() > 32 || !prefix.chars().all(valid) {
        return Err(ConfigError::Invalid {
            name: "--cluster-prefix",
            why: "must be 1 to 32 letters, digits, '_' or '-' (it names streams and subjects)",
        });
    }
    let replicas = replicas.unwrap_or(DEFAULT_CLUSTER_REPLICAS);
    if !(1..=5).contains(&replicas) {
        return Err(ConfigError::Invalid {
            name: "--cluster-replicas",
            why: "must be from 1 to 5 (JetStream's limit), at most the number of NATS servers",
        });
    }
    Ok(Some(ClusterSettings {
        url,
        prefix,
        replicas,
    }))
}
