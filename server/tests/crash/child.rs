//! The built `oxiscale serve` as a child process on a fixed port and data directory, so a
//! test can SIGKILL or SIGTERM it and start it again on the same data; and its CLI.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_oxiscale");

/// How to start the server: where its data is, which port, and what runs it (nothing, or
/// `nsenter` into a private mount namespace).
pub struct Launch {
    pub data: PathBuf,
    pub port: u16,
    /// The server's output, kept across restarts (outside the data directory, which may be
    /// a full disk).
    pub log: PathBuf,
    pub prefix: Vec<OsString>,
}

impl Launch {
    /// A fresh data directory and a free port.
    pub fn fresh(tag: &str) -> Launch {
        let root = std::env::temp_dir().join(format!("oxiscale-{tag}-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&root).unwrap();
        Launch {
            data: root.join("data"),
            port: free_port(),
            log: root.join("server.log"),
            prefix: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.env("OXISCALE_DATA_DIR", &self.data);
        command
    }

    /// Starts `oxiscale serve` and waits until `/health` answers.
    pub async fn start(&self) -> Server {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command(BIN)
            .arg("serve")
            .env("OXISCALE_LISTEN_ADDR", format!("127.0.0.1:{}", self.port))
            .env("OXISCALE_SERVER_URL", self.url())
            .env("OXISCALE_DERP_SERVER_STUN_LISTEN_ADDR", "127.0.0.1:0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            url: self.url(),
            log: self.log.clone(),
        };
        let started = Instant::now();
        while !server.healthy().await {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "the server exited ({status}) at start: {}",
                    server.log_tail()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server did not answer /health within 60 s: {}",
                server.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// `oxiscale <args>` on this data directory (the CLI talks to the server's socket).
    pub async fn cli(&self, args: &[&str]) -> Output {
        let mut command = self.command(BIN);
        command.args(args);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// `oxiscale <args> -o json`, which must succeed.
    pub async fn cli_json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = self.cli(&args).await;
        assert!(
            out.status.success(),
            "oxiscale {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "oxiscale {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A user and a reusable pre-auth key for it.
    pub async fn user_and_key(&self, name: &str) -> String {
        self.cli_json(&["users", "create", name]).await;
        let key = self
            .cli_json(&[
                "preauthkeys",
                "create",
                "--user",
                name,
                "--reusable",
                "--expiration",
                "1h",
            ])
            .await;
        key["key"].as_str().expect("the new key").to_owned()
    }

    /// Every node as `nodes list -o json` prints it.
    pub async fn nodes(&self) -> Vec<Value> {
        match self.cli_json(&["nodes", "list"]).await {
            Value::Array(nodes) => nodes,
            Value::Null => Vec::new(),
            other => panic!("nodes list: {other}"),
        }
    }
}

pub struct Server {
    pub child: Child,
    pub url: String,
    log: PathBuf,
}

impl Server {
    pub async fn healthy(&self) -> bool {
        let client = reqwest::Client::new();
        match client
            .get(format!("{}/health", self.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and the wait for the process to end.
    pub async fn terminate(mut self) {
        signal(self.pid(), "TERM");
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not stop within 30 s of SIGTERM: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "\n--- server log (last lines) ---\n{}",
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
