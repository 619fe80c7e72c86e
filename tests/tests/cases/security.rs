//! Security of the collector's HTTP side: with a token configured, the API and /metrics
//! answer only to `Authorization: Bearer <token>`; the dashboard page and /healthz stay
//! open; the token never reaches the log.

use dcwatt_e2e::webdriver::http_request_with;
use dcwatt_e2e::*;

const TOKEN: &str = "an-api-token-of-some-length-42";

#[test]
fn the_api_needs_the_bearer_token_when_one_is_set() {
    let dir = TempDir::new("api-token");
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__HTTP__TOKEN", TOKEN.to_owned())],
    );
    for path in [
        "/api/v1/sites",
        "/metrics",
        "/api/v1/alerts",
        "/api/v1/sites/x/energy",
    ] {
        let (status, body) = http_get(c.http, path).expect("an answer");
        assert_eq!(status, 401, "{path} without a token: {body}");
        let wrong = http_request_with(c.http, "GET", path, &[("Authorization", "Bearer nope")])
            .expect("an answer");
        assert_eq!(wrong.0, 401, "{path} with a wrong token");
    }
    let auth = format!("Bearer {TOKEN}");
    let (status, body) =
        http_request_with(c.http, "GET", "/api/v1/sites", &[("Authorization", &auth)])
            .expect("an answer");
    assert_eq!(status, 200, "{body}");
    let (status, metrics) =
        http_request_with(c.http, "GET", "/metrics", &[("Authorization", &auth)]).expect("answer");
    assert_eq!(status, 200);
    assert!(metrics.contains("dcwatt_readings_accepted_total"));
    for open in ["/healthz", "/", "/assets/app.js"] {
        assert_eq!(http_get(c.http, open).map(|r| r.0), Some(200), "{open}");
    }
    assert!(!c.proc.log().contains(TOKEN), "the token is in the log");
}
