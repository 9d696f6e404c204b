//! The OpenAPI description served by the relay names only routes the relay serves.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::api_client::http_bytes;
use common::{Relay, http_json};

#[tokio::test]
async fn every_documented_operation_is_served() {
    let relay = Relay::start(&[]);
    let (status, doc) = http_json(relay.addr, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{name}", "nothing-here").replace("{id}", "1");
        for method in item.as_object().unwrap().keys() {
            if path.ends_with("/events") {
                continue; // 404 for a missing document would end the stream; covered elsewhere.
            }
            let (status, _, body) =
                http_bytes(relay.addr, &method.to_uppercase(), &concrete, None, b"{}").await;
            // A route the router does not know answers 404 with an empty body, or 405.
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !body.is_empty(),
                "{method} {path}: {status} with no body (no such route?)"
            );
            let documented = item[method]["responses"]
                .as_object()
                .unwrap()
                .contains_key(&status.to_string());
            assert!(
                documented,
                "{method} {path}: status {status} is not documented"
            );
            operations += 1;
        }
    }
    assert!(operations >= 16, "only {operations} operations documented");
}
