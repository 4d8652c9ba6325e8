//! The tailnet writer under faults of its own: a rule that panics (README, "How it works").

mod common;

use std::time::Duration;

use common::{TestNode, TestServer};
use oxiscale::tailnet::TailnetError;
use time::OffsetDateTime;

fn user_names(server: &TestServer) -> Vec<String> {
    let mut names: Vec<String> = server
        .running()
        .admin
        .list_users()
        .into_iter()
        .map(|u| u.name)
        .collect();
    names.sort();
    names
}

/// A rule that panics halfway is answered with an error and leaves nothing behind (the
/// user it created before panicking is neither in memory nor on disk), the lock is not
/// poisoned, changes queued beside it are applied, and the writer keeps taking changes:
/// a node registers and gets its map (before, the writer died and every later map request
/// was refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_rule_changes_nothing_and_the_writer_goes_on() {
    let mut server = TestServer::start().await;
    server.user("alice").await;
    let tailnet = server.running().tailnet.clone();

    let panicking = tailnet.mutate(|state, fx| {
        state.create_user(fx, "half", "", "", "", OffsetDateTime::now_utc())?;
        if state.user_by_name("half").is_some() {
            panic!("a rule broken on purpose");
        }
        Ok(())
    });
    let beside = tailnet.mutate(|state, fx| {
        state.create_user(fx, "beside", "", "", "", OffsetDateTime::now_utc())?;
        Ok(())
    });
    let (panicked, applied) = tokio::join!(panicking, beside);
    assert!(
        matches!(panicked, Err(TailnetError::Internal(_))),
        "{panicked:?}"
    );
    applied.expect("a change queued beside the broken one is applied");
    assert_eq!(user_names(&server), ["alice", "beside"]);

    let bob = server.user("bob").await;
    let key = server.key(bob, false, false, "1h").await;
    let mut node = TestNode::connect(&server.url, "after").await;
    node.register(Some(&key)).await;
    let mut stream = node.stream().await;
    assert!(
        stream.next_within(Duration::from_secs(10)).await.is_some(),
        "a map after the panic"
    );
    drop(stream);

    server.restart().await;
    assert_eq!(user_names(&server), ["alice", "beside", "bob"]);
    server.stop().await;
}
