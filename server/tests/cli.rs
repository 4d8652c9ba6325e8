//! The CLI as scripts use it, over the server's socket: a reader that goes away early is
//! not a panic, and errors never land on standard output.

mod common;

use std::process::{Command, Stdio};

use common::TestServer;

fn cli(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxiscale"));
    command.args(args).env("OXISCALE_DATA_DIR", &server.dir);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_cli_quietly() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let dir = server.dir.clone();
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxiscale"))
            .args(["users", "list"])
            .env("OXISCALE_DATA_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the CLI has its answer (`oxiscale users list | true`).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_go_to_standard_error_in_every_format() {
    let server = TestServer::start().await;
    for format in [&["-o", "json"][..], &["-o", "yaml"][..], &[][..]] {
        let mut args = format.to_vec();
        args.extend(["nodes", "delete", "-i", "424242", "--force"]);
        let mut command = cli(&server, &args);
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{format:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{format:?}: nothing on stdout");
        assert!(
            stderr.contains("424242") || stderr.contains("not found"),
            "{format:?}: {stderr}"
        );
        if format == ["-o", "json"] {
            let v: serde_json::Value = serde_json::from_str(&stderr).unwrap();
            assert!(v["error"].is_string(), "{v}");
        }
    }
    server.stop().await;
}
