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
    let id = session.cookie.split_once('=').unwrap().1.to_owned();
    assert!(
        !stored.contains(&id),
        "the cookie's id is not in the database: {stored:?}"
    );
    // What a reader of the database could present instead: no session.
    for id in &stored {
        let stolen = Session::signed_in(id, "");
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

/// Looking at the sign-in page stores nothing: its CSRF token travels in the pre-sign-in
/// cookie, and a session row is written only when someone signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_to_the_sign_in_page_write_no_session_rows() {
    let server = TestServer::start().await;
    let pool = server.running().tailnet.store().pool().clone();
    Accounts::new(pool.clone())
        .create(ADMIN, PASSWORD, Role::Owner)
        .await
        .unwrap();
    let console = Console::new(&server.url);
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM console_sessions")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    for _ in 0..200 {
        console.presession().await;
    }
    assert_eq!(rows().await, 0, "200 visits to /login, no session rows");
    // A form posted with another visitor's token (or none) is refused.
    let mine = console.presession().await;
    let theirs = console.presession().await;
    let resp = console.post_login(&mine, Some(&theirs.csrf)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(rows().await, 0);
    console.sign_in().await;
    assert_eq!(rows().await, 1, "signing in starts the one session");
    server.stop().await;
}
