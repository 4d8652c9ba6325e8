//! Console sessions as the database keeps them: under a hash of the id the cookie carries,
//! so that a copy of the database signs nobody in.

mod common;

use app::api::Role;
use common::TestServer;
use common::console::{ADMIN, Console, PASSWORD, Session};
use oxiscale::console::auth::Accounts;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_holds_no_session_id_a_browser_could_present() {
    let server = TestServer::start().await;
    let pool = server.running().tailnet.store().pool().clone();
    Accounts::new(pool.clone())
        .create(ADMIN, PASSWORD, Role::Owner)
        .await
        .unwrap();
    let console = Console::new(&server.url);
    let session = console.sign_in().await;

    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM console_sessions")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(!stored.is_empty(), "the signed-in session is stored");
    assert!(
        !stored.contains(&session.cookie),
        "the cookie's id is not in the database: {stored:?}"
    );
    // What a reader of the database could present instead: no session.
    for id in &stored {
        let stolen = Session {
            cookie: id.clone(),
            csrf: String::new(),
        };
        let page = console.get("/users", Some(&stolen)).await;
        assert_eq!(
            page.status(),
            StatusCode::SEE_OTHER,
            "a stored id is not a session"
        );
    }
    let page = console.get("/users", Some(&session)).await;
    assert_eq!(page.status(), StatusCode::OK, "the cookie still is");
    server.stop().await;
}
