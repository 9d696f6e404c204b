//! Who may open which document: JWT client tokens and the admin key.
//!
//! A client token is a JWT (HS256 with `--jwt-secret`, or RS256/ES256 verified with the PEM
//! public key of `--jwt-public-key`) whose claims name the user (`sub`), the documents
//! (`docs`: exact names, or prefixes ending in `*`), the permission (`perm`: `read` or `write`)
//! and the expiry (`exp`); an optional `nbf` (not before) is honoured too. Both are checked with
//! [`CLOCK_LEEWAY_SECS`] of leeway for clock skew between the token's issuer and the relay.
//! With no key configured the relay runs open: everyone may read and
//! write everything, which the relay's configuration allows only on a loopback address.

use std::path::Path;

use aetherflow_crdt::DocName;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// Leeway for clock skew when checking `exp` and `nbf`, in seconds: a token is accepted until
/// this long after its `exp`, and from this long before its `nbf`.
pub const CLOCK_LEEWAY_SECS: u64 = 30;

/// What a token allows on its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Receive the document and send presence; writes are refused.
    Read,
    /// Read and write.
    Write,
}

/// The claims of a client token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Document names, or prefixes ending in `*` (`team-*`).
    pub docs: Vec<String>,
    /// What the token allows.
    pub perm: Permission,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Someone allowed onto a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The user (`anonymous` when the relay runs open).
    pub user: String,
    /// What they may do.
    pub permission: Permission,
    /// The token's `exp` (seconds since the Unix epoch), when the session it opens must end;
    /// `None` when the relay runs open.
    pub expires: Option<u64>,
}

/// Why a client was refused. The texts are safe to show the client: they never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where one is required.
    #[error("a token is required (?token=...)")]
    Missing,
    /// The token is not a well-formed JWT with the expected claims.
    #[error("the token is malformed")]
    Malformed,
    /// The token's `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// The token's `nbf` (not before) has not come yet.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// The signature does not verify with any configured key, or uses another algorithm.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// The token does not cover this document.
    #[error("the token does not grant access to this document")]
    WrongDocument,
}

impl AuthError {
    /// 401 when the client must bring a (different) valid token, 403 when it is valid but
    /// not for this.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::WrongDocument => 403,
            _ => 401,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed => "token_malformed",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::WrongDocument => "token_wrong_document",
        }
    }
}

/// The admin key of `--admin-key`, compared in constant time so response timing tells an
/// attacker nothing about how much of a guess was right.
#[derive(Clone)]
pub struct AdminKey(std::sync::Arc<str>);

impl AdminKey {
    /// Wraps the configured key.
    pub fn new(key: &str) -> AdminKey {
        AdminKey(key.into())
    }

    /// Whether `presented` is the key. Only the length can leak through timing.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

/// Why an admin request was refused. The texts never echo what was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The relay has no `--admin-key`, so the admin routes are off.
    #[error("admin routes are disabled: start the relay with --admin-key")]
    Disabled,
    /// No key was presented.
    #[error("an admin key is required (Authorization: Bearer KEY or X-Admin-Key: KEY)")]
    Missing,
    /// The presented key is wrong.
    #[error("the admin key is not valid")]
    WrongKey,
    /// A client token was presented where the admin key is needed.
    #[error("a client token cannot use admin routes; send the admin key")]
    ClientToken,
}

impl AdminError {
    /// 401 when the caller must bring the key, 403 when the routes are off or a client token
    /// was sent.
    pub fn status(&self) -> u16 {
        match self {
            AdminError::Missing | AdminError::WrongKey => 401,
            AdminError::Disabled | AdminError::ClientToken => 403,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::Disabled => "admin_disabled",
            AdminError::Missing => "admin_key_missing",
            AdminError::WrongKey => "admin_key_invalid",
            AdminError::ClientToken => "admin_client_token",
        }
    }
}

/// A configured key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The public key file could not be read.
    #[error("cannot read JWT public key {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is neither an RSA nor an EC public key in PEM.
    #[error("{path} is not an RSA or EC public key in PEM format")]
    NotAKey {
        /// The file.
        path: String,
    },
}

/// A request named someone other than its token's subject as the one acting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not the token's subject")]
pub struct NotTheSubject(pub String);

/// The relay's token verifier.
#[derive(Clone)]
pub struct Auth {
    keys: Vec<(Algorithm, DecodingKey)>,
}

impl Auth {
    /// A verifier that lets everyone in with write access.
    pub fn open() -> Auth {
        Auth { keys: Vec::new() }
    }

    /// A verifier for tokens signed with `secret` (HS256) and/or the PEM public key in
    /// `public_key` (RS256 or ES256).
    pub fn new(secret: Option<&str>, public_key: Option<&Path>) -> Result<Auth, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        if let Some(path) = public_key {
            keys.push(load_public_key(path)?);
        }
        Ok(Auth { keys })
    }

    /// Whether no key is configured, so everyone is let in.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Who acts for a request with `grant` that names `claimed` (a lock holder, the author of
    /// a manual write): the token's subject, and another name is refused; on an open relay the
    /// name given, or the grant's `anonymous`.
    pub fn actor(&self, grant: &Grant, claimed: Option<String>) -> Result<String, NotTheSubject> {
        match claimed {
            Some(name) if self.is_open() => Ok(name),
            Some(name) if name != grant.user => Err(NotTheSubject(name)),
            _ => Ok(grant.user.clone()),
        }
    }

    /// Checks `token` for `doc`.
    pub fn authorize(&self, token: Option<&str>, doc: &DocName) -> Result<Grant, AuthError> {
        if self.is_open() {
            return Ok(Grant {
                user: "anonymous".into(),
                permission: Permission::Write,
                expires: None,
            });
        }
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        if !claims
            .docs
            .iter()
            .any(|pattern| covers(pattern, doc.as_str()))
        {
            return Err(AuthError::WrongDocument);
        }
        Ok(Grant {
            user: claims.sub,
            permission: claims.perm,
            expires: Some(claims.exp),
        })
    }

    /// The user a connection-level token names, for listing the connection before any
    /// document is authorised: `anonymous` when the relay runs open or the token is missing
    /// or does not verify (each document is still authorised on its own).
    pub fn user(&self, token: Option<&str>) -> String {
        self.connection(token).0
    }

    /// [`Auth::user`] and the token's `exp` (`None` when it does not verify or the relay runs
    /// open): a connection-level token's session ends at its expiry.
    pub fn connection(&self, token: Option<&str>) -> (String, Option<u64>) {
        token
            .filter(|_| !self.is_open())
            .and_then(|token| self.verify(token).ok())
            .map_or_else(
                || ("anonymous".to_owned(), None),
                |claims| (claims.sub, Some(claims.exp)),
            )
    }

    /// What a Quantum hello's token stands for: the user and the token's `exp`, or why the
    /// token is refused when the relay requires auth (`anonymous` and no expiry when it runs
    /// open). A connection refused here is closed before it is listed.
    pub fn hello(&self, token: Option<&str>) -> Result<(String, Option<u64>), AuthError> {
        if self.is_open() {
            return Ok(("anonymous".to_owned(), None));
        }
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        Ok((claims.sub, Some(claims.exp)))
    }

    /// Whether `token` is a client token this relay signed (expired, not yet valid, or valid).
    pub fn is_client_token(&self, token: &str) -> bool {
        matches!(
            self.verify(token),
            Ok(_) | Err(AuthError::Expired | AuthError::NotYetValid)
        )
    }

    /// Which documents `token` may see in a listing: all when the relay runs open, else the
    /// patterns its `docs` claim names.
    pub fn visible(&self, token: Option<&str>) -> Result<Visible, AuthError> {
        if self.is_open() {
            return Ok(Visible::All);
        }
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        Ok(Visible::Patterns(claims.docs))
    }

    fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let (algorithm, key) = self
            .keys
            .iter()
            .find(|(algorithm, _)| *algorithm == header.alg)
            .ok_or(AuthError::BadSignature)?;
        let mut validation = Validation::new(*algorithm);
        validation.leeway = CLOCK_LEEWAY_SECS;
        validation.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    AuthError::BadSignature
                }
                _ => AuthError::Malformed,
            })
    }
}

/// The documents a client may see in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    /// Every document (the relay runs open).
    All,
    /// Those covered by one of these patterns (exact names, or prefixes ending in `*`).
    Patterns(Vec<String>),
}

impl Visible {
    /// Whether `doc` may be listed.
    pub fn covers(&self, doc: &str) -> bool {
        match self {
            Visible::All => true,
            Visible::Patterns(patterns) => patterns.iter().any(|p| covers(p, doc)),
        }
    }
}

/// Whether a token's document pattern covers `doc`: an exact name, or a prefix ending in `*`.
fn covers(pattern: &str, doc: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => doc.starts_with(prefix),
        None => pattern == doc,
    }
}

fn load_public_key(path: &Path) -> Result<(Algorithm, DecodingKey), KeyError> {
    let pem = std::fs::read(path).map_err(|e| KeyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((Algorithm::ES256, key));
    }
    Err(KeyError::NotAKey {
        path: path.display().to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "test-secret";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(secret: &str, docs: &[&str], perm: Permission, exp: u64) -> String {
        let claims = Claims {
            sub: "ada".into(),
            docs: docs.iter().map(|d| d.to_string()).collect(),
            perm,
            exp,
        };
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn doc(name: &str) -> DocName {
        DocName::parse(name).unwrap()
    }

    #[test]
    fn open_mode_lets_everyone_write() {
        let grant = Auth::open().authorize(None, &doc("any")).unwrap();
        assert_eq!(grant.permission, Permission::Write);
    }

    #[test]
    fn a_valid_token_grants_its_permission_on_its_documents() {
        let auth = Auth::new(Some(SECRET), None).unwrap();
        let t = token(SECRET, &["notes", "team-*"], Permission::Read, now() + 600);
        for name in ["notes", "team-a", "team-"] {
            let grant = auth.authorize(Some(&t), &doc(name)).unwrap();
            assert_eq!(grant.user, "ada");
            assert_eq!(grant.permission, Permission::Read);
        }
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let auth = Auth::new(Some(SECRET), None).unwrap();
        let d = doc("notes");
        let cases = [
            (None, AuthError::Missing),
            (Some("not-a-jwt".to_string()), AuthError::Malformed),
            (
                Some(token(SECRET, &["notes"], Permission::Write, now() - 3600)),
                AuthError::Expired,
            ),
            (
                Some(token(
                    "other-secret",
                    &["notes"],
                    Permission::Write,
                    now() + 600,
                )),
                AuthError::BadSignature,
            ),
            (
                Some(token(
                    SECRET,
                    &["elsewhere", "note"],
                    Permission::Write,
                    now() + 600,
                )),
                AuthError::WrongDocument,
            ),
        ];
        for (t, expected) in cases {
            assert_eq!(auth.authorize(t.as_deref(), &d), Err(expected));
        }
    }

    #[test]
    fn the_admin_key_matches_only_itself() {
        let key = AdminKey::new("0123456789abcdef");
        assert!(key.matches("0123456789abcdef"));
        for wrong in [
            "",
            "0123456789abcdeF",
            "0123456789abcdef0",
            "0123456789abcde",
        ] {
            assert!(!key.matches(wrong), "{wrong}");
        }
        assert_eq!(format!("{key:?}"), "AdminKey(..)");
    }

    #[test]
    fn only_tokens_signed_here_count_as_client_tokens() {
        let auth = Auth::new(Some(SECRET), None).unwrap();
        let ours = token(SECRET, &["a"], Permission::Write, now() + 600);
        let expired = token(SECRET, &["a"], Permission::Write, now() - 3600);
        let theirs = token("other", &["a"], Permission::Write, now() + 600);
        assert!(auth.is_client_token(&ours));
        assert!(auth.is_client_token(&expired));
        assert!(!auth.is_client_token(&theirs));
        assert!(!auth.is_client_token("garbage"));
    }

    #[test]
    fn nbf_is_honoured_with_the_same_leeway_as_exp() {
        let auth = Auth::new(Some(SECRET), None).unwrap();
        let with_nbf = |nbf: u64| {
            let claims = serde_json::json!({
                "sub": "ada", "docs": ["a"], "perm": "write", "exp": now() + 3600, "nbf": nbf,
            });
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
        };
        let later = with_nbf(now() + 600);
        assert_eq!(
            auth.authorize(Some(&later), &doc("a")),
            Err(AuthError::NotYetValid)
        );
        assert!(auth.is_client_token(&later));
        let within_leeway = with_nbf(now() + CLOCK_LEEWAY_SECS / 2);
        assert!(auth.authorize(Some(&within_leeway), &doc("a")).is_ok());
        assert!(
            auth.authorize(Some(&with_nbf(now() - 60)), &doc("a"))
                .is_ok()
        );
    }

    #[test]
    fn a_token_with_missing_claims_is_malformed() {
        let auth = Auth::new(Some(SECRET), None).unwrap();
        #[derive(Serialize)]
        struct Partial {
            sub: String,
            exp: u64,
        }
        let partial = Partial {
            sub: "x".into(),
            exp: now() + 600,
        };
        let t = jsonwebtoken::encode(
            &Header::default(),
            &partial,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            auth.authorize(Some(&t), &doc("a")),
            Err(AuthError::Malformed)
        );
    }
}
