//! What the admin routes share: the admin key check and the token-minting settings.
//!
//! Admin routes take the admin key as `Authorization: Bearer KEY` or `X-Admin-Key: KEY`.
//! Without `--admin-key` they answer 403 `admin_disabled`, in open loopback mode too: anyone
//! on the machine could otherwise list and disconnect sessions and mint tokens.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use jsonwebtoken::EncodingKey;

use crate::auth::{AdminError, AdminKey, Auth};
use crate::config::Config;
use crate::error::AppError;

/// The dedicated header for the admin key.
pub const ADMIN_KEY_HEADER: &str = "x-admin-key";

/// Admin settings, built once from the configuration.
#[derive(Clone)]
pub struct Admin {
    /// The admin key; `None` disables the admin routes.
    key: Option<AdminKey>,
    /// The HS256 secret minted tokens are signed with; `None` refuses minting.
    pub(crate) signing: Option<EncodingKey>,
    /// Longest lifetime of a minted token.
    pub(crate) token_max_ttl: Duration,
}

impl Admin {
    /// Takes the admin key, the HS256 secret and the token TTL bound from `config`.
    pub fn from_config(config: &Config) -> Admin {
        Admin {
            key: config.admin_key.as_deref().map(AdminKey::new),
            signing: config
                .jwt_secret
                .as_deref()
                .map(|secret| EncodingKey::from_secret(secret.as_bytes())),
            token_max_ttl: config.token_max_ttl,
        }
    }

    /// Admits the request if it carries the admin key. A client token signed by this relay
    /// gets 403, anything else wrong 401.
    pub fn require(&self, auth: &Auth, headers: &HeaderMap) -> Result<(), AppError> {
        let key = self
            .key
            .as_ref()
            .ok_or(AppError::Admin(AdminError::Disabled))?;
        let presented = presented_key(headers).ok_or(AppError::Admin(AdminError::Missing))?;
        if key.matches(presented) {
            return Ok(());
        }
        if auth.is_client_token(presented) {
            return Err(AppError::Admin(AdminError::ClientToken));
        }
        Err(AppError::Admin(AdminError::WrongKey))
    }
}

/// The key from `X-Admin-Key`, else from `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(ADMIN_KEY_HEADER) {
        return value.to_str().ok().map(str::trim);
    }
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
