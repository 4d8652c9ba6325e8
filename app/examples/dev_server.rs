//! Serves the console alone, with a fixed backend, for development and the browser tests
//! until the real `oxiscale serve` embeds it.
//!
//! Usage: dev_server [--addr 127.0.0.1:3000] [--site-root target/site] [--server-url URL]
//! (also OXISCALE_DEV_ADDR, OXISCALE_DEV_SITE_ROOT, OXISCALE_DEV_SERVER_URL).

use std::net::SocketAddr;
use std::sync::Arc;

use app::backend::ConsoleBackend;
use app::ssr::{console_fallback, console_options, console_router};

struct FixedBackend {
    server_url: String,
}

impl ConsoleBackend for FixedBackend {
    fn server_url(&self) -> String {
        self.server_url.clone()
    }
}

struct Args {
    addr: SocketAddr,
    site_root: String,
    server_url: String,
}

fn parse_args() -> Result<Args, String> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let mut addr = env("OXISCALE_DEV_ADDR", "127.0.0.1:3000");
    let mut site_root = env("OXISCALE_DEV_SITE_ROOT", "target/site");
    let mut server_url = env("OXISCALE_DEV_SERVER_URL", "");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--addr" => &mut addr,
            "--site-root" => &mut site_root,
            "--server-url" => &mut server_url,
            other => return Err(format!("unknown argument {other:?}")),
        };
        *slot = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
    }
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("invalid --addr {addr:?}: {e}"))?;
    if server_url.is_empty() {
        server_url = format!("http://{addr}");
    }
    Ok(Args {
        addr,
        site_root,
        server_url,
    })
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("dev_server: {message}");
            std::process::exit(2);
        }
    };
    if !std::path::Path::new(&args.site_root).join("pkg").is_dir() {
        eprintln!(
            "dev_server: warning: {}/pkg is missing; run scripts/build-site.sh first",
            args.site_root
        );
    }

    let options = console_options(&args.site_root);
    let backend: Arc<dyn ConsoleBackend> = Arc::new(FixedBackend {
        server_url: args.server_url.clone(),
    });
    let router = console_router(options.clone(), backend.clone())
        .fallback_service(console_fallback(options, backend));

    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("dev_server: cannot listen on {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    println!(
        "dev_server: console on http://{} (server URL {})",
        args.addr, args.server_url
    );
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("dev_server: {e}");
        std::process::exit(1);
    }
}
