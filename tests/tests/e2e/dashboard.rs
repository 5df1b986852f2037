//! The dashboard's routes on a real gateway: the redirect to `/ui/`, the settings the page reads
//! before it asks for a key, and the page itself (with its security policy and a revalidating
//! `ETag`), or a 503 that says how to build it when this build has none.

use swarm_e2e::{TestStack, answer};
use swarm_kit::testing::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_open_with_its_settings_and_policy() {
    let gateway = TestStack::start(Backend::Sqlite).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let bare = http.get(gateway.url("/ui")).send().await.unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/ui/");

    let settings = answer(
        http.get(gateway.url("/ui/settings.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(settings, (200, serde_json::json!({"auth": true})));

    let page = http.get(gateway.url("/ui/")).send().await.unwrap();
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ui/dist/index.html")
        .exists();
    if !built {
        assert_eq!(page.status(), 503);
        let body: serde_json::Value = page.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("make ui")
        );
        gateway.stop().await;
        return;
    }
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let etag = page.headers()["etag"].clone();
    assert!(page.text().await.unwrap().contains("<div id=\"app\">"));
    let again = http
        .get(gateway.url("/ui/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let missing = http
        .get(gateway.url("/ui/assets/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    gateway.stop().await;
}
