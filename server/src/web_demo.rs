//! The browser demo, served by the relay itself: `GET /` is a collaborative editor on this
//! relay's `/ws/{doc}`.
//!
//! The page is built from `web-demo/` (npm and esbuild) into `web-demo/dist/`, which is
//! committed; this module embeds those files in the binary with `include_bytes!`, so
//! `cargo run --release` serves the page with no Node step. `npm run check-bundle` in
//! `web-demo/` fails when the committed bundle no longer matches its sources.
//!
//! | path | file | `Cache-Control` |
//! |---|---|---|
//! | `/` | `index.html` | `no-cache`: always revalidated, so a new binary's page is seen at once |
//! | `/app.js`, `/app.css` | the bundle and its styles | `immutable` for a year when asked for with the `?v=` the page links them with, `no-cache` otherwise |
//!
//! `index.html` links each asset as `/app.js?v=VERSION`, where `VERSION` is the FNV-1a 64
//! hash of the asset's bytes in 16 hex digits (computed by `web-demo/scripts/build.mjs`, and
//! here by [`content_version`]). A versioned URL therefore always names the same bytes and may
//! be cached for good; a new bundle gets a new URL. Every response carries the same version as
//! a strong `ETag`, and a matching `If-None-Match` is answered with 304.

use std::sync::Arc;

use axum::Router;
use axum::extract::RawQuery;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// `Cache-Control` of a response that must be revalidated before each use.
const REVALIDATE: &str = "no-cache";
/// `Cache-Control` of an asset asked for under its content version.
const FOREVER: &str = "public, max-age=31536000, immutable";

/// One embedded file of `web-demo/dist/`.
struct Asset {
    /// The file's bytes.
    body: &'static [u8],
    /// Its `Content-Type`.
    content_type: &'static str,
    /// [`content_version`] of `body`, as the page's `?v=` carries it.
    version: String,
    /// `"version"`: the strong entity tag of `body`.
    etag: HeaderValue,
    /// Whether a request carrying the right `?v=` may be cached for good (not for the page).
    versioned: bool,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str, versioned: bool) -> Asset {
        let version = content_version(body);
        let etag = HeaderValue::from_str(&format!("\"{version}\""))
            .expect("hex digits in quotes are a valid header value");
        Asset {
            body,
            content_type,
            version,
            etag,
            versioned,
        }
    }

    /// The response to a GET (or HEAD) of this file.
    fn respond(&self, query: Option<&str>, request: &HeaderMap) -> Response {
        let cache = if self.versioned && query_version(query) == Some(self.version.as_str()) {
            FOREVER
        } else {
            REVALIDATE
        };
        let headers = [
            (header::ETAG, self.etag.clone()),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        if etag_matches(request, &self.etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (
            headers,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            )],
            self.body,
        )
            .into_response()
    }
}

/// FNV-1a 64 of `bytes` in 16 lowercase hex digits: the content version of an asset. Not a
/// security measure, only a cache key; `web-demo/scripts/build.mjs` computes the same.
pub fn content_version(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The value of `v` in a query string, if any.
fn query_version(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("v="))
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn etag_matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(wanted) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let etag = etag.as_bytes();
    wanted.split(',').map(str::trim).any(|tag| {
        tag == "*"
            || tag.as_bytes() == etag
            || tag.strip_prefix("W/").map(str::as_bytes) == Some(etag)
    })
}

/// The demo's routes: `/`, `/app.js` and `/app.css`. They take no state, so they merge into
/// any router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = Arc::new(Asset::new(
        include_bytes!("../../web-demo/dist/index.html"),
        "text/html; charset=utf-8",
        false,
    ));
    let script = Arc::new(Asset::new(
        include_bytes!("../../web-demo/dist/app.js"),
        "text/javascript; charset=utf-8",
        true,
    ));
    let styles = Arc::new(Asset::new(
        include_bytes!("../../web-demo/dist/app.css"),
        "text/css; charset=utf-8",
        true,
    ));
    Router::new()
        .route("/", serve(page))
        .route("/app.js", serve(script))
        .route("/app.css", serve(styles))
}

fn serve<S: Clone + Send + Sync + 'static>(asset: Arc<Asset>) -> axum::routing::MethodRouter<S> {
    get(move |RawQuery(query): RawQuery, headers: HeaderMap| {
        let asset = asset.clone();
        async move { asset.respond(query.as_deref(), &headers) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_version_is_fnv1a_64_as_the_build_script_computes_it() {
        // Reference values of FNV-1a 64.
        assert_eq!(content_version(b""), "cbf29ce484222325");
        assert_eq!(content_version(b"a"), "af63dc4c8601ec8c");
        assert_eq!(content_version(b"foobar"), "85944171f73967e8");
    }

    #[test]
    fn the_page_links_each_asset_under_its_content_version() {
        let page = std::str::from_utf8(include_bytes!("../../web-demo/dist/index.html"))
            .expect("index.html is UTF-8");
        let js = content_version(include_bytes!("../../web-demo/dist/app.js"));
        let css = content_version(include_bytes!("../../web-demo/dist/app.css"));
        assert!(page.contains(&format!("/app.js?v={js}")), "{page}");
        assert!(page.contains(&format!("/app.css?v={css}")), "{page}");
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
            headers
        };
        assert!(etag_matches(&with("\"abc\""), &etag));
        assert!(etag_matches(&with("\"x\", W/\"abc\""), &etag));
        assert!(etag_matches(&with("*"), &etag));
        assert!(!etag_matches(&with("\"abd\""), &etag));
        assert!(!etag_matches(&HeaderMap::new(), &etag));
    }
}
