//! `oxiscale serve`: the composition root. Everything is built here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::config::Config;
use crate::control::{ControlPlane, ControlSettings};
use crate::http::Edge;
use crate::lifecycle::Lifecycle;
use crate::mapper::{MapConfig, derp_map};
use crate::policy::PolicyManager;
use crate::relay::RelayGate;
use crate::store::Store;
use crate::tailnet::addresses::AddressPool;
use crate::tailnet::{Settings, Tailnet};

/// A started server: its addresses and the handles tests and `run` need.
pub struct Running {
    pub http_addr: std::net::SocketAddr,
    pub stun_addr: Option<std::net::SocketAddr>,
    pub server_url: String,
    pub tailnet: Arc<Tailnet>,
    pub control: Arc<ControlPlane>,
    pub admin: Admin,
    /// Where the policy comes from (`policy get|set`, reloads).
    pub policy: Arc<PolicyManager>,
    pub socket_path: std::path::PathBuf,
    shutdown: watch::Sender<bool>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    socket: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, ends streams and connections, waits for the tasks, closes the
    /// database.
    pub async fn stop(self) -> anyhow::Result<()> {
        let deltas = self.control.sessions.delta_counts();
        info!(
            shared = deltas.shared,
            own = deltas.own,
            "map deltas sent since start: shared encodings and ones built per stream"
        );
        let _ = self.shutdown.send(true);
        let served = self.http.await.context("HTTP server task")?;
        // Sockets and streams end on the same signal; give them a moment to close cleanly.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.socket).await;
        std::fs::remove_file(&self.socket_path).ok();
        self.tailnet.store().close().await;
        served.context("HTTP server")
    }
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    let running = start(config).await?;
    shutdown_signal().await;
    info!("shutting down");
    running.stop().await?;
    info!("stopped");
    Ok(())
}

/// Every client holds a socket (and the relay another): the soft limit of open files, often
/// 1,024, is raised to the hard limit, so that the server is not the first to run out.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(limit, "open file limit"),
        Err(e) => warn!(error = %e, "the open file limit could not be raised"),
    }
}

/// Builds and starts everything. A listen address with port 0 picks a free port; when the
/// server_url also says port 0, it is rewritten to the port picked (tests use this).
pub async fn start(mut config: Config) -> anyhow::Result<Running> {
    for notice in &config.notices {
        warn!("configuration: {notice}");
    }
    create_private_dir(&config.data_dir)?;
    // Before anything listens: a TLS configuration that cannot be served stops the server.
    let tls = crate::tls::Tls::load(&config)?;

    let listener = bind_tcp(config.listen_addr)
        .with_context(|| format!("binding {} (listen_addr)", config.listen_addr))?;
    let http_addr = listener.local_addr()?;
    if let Some(tls) = &tls {
        // ACME: a certificate in force before anything is served (TLS-ALPN-01 validations
        // are answered on this listener meanwhile); none stops the server.
        tls.obtain(&listener).await?;
    }
    if config.server_port() == 0 {
        let scheme = if tls.is_some() { "https" } else { "http" };
        config.server_url = format!("{scheme}://{http_addr}");
    }
    crate::telemetry::install();
    let metrics_listener = match config.metrics_listen_addr.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => {
            let addr = crate::telemetry::parse_addr(text).map_err(anyhow::Error::msg)?;
            Some(bind_tcp(addr).with_context(|| format!("binding {addr} (metrics_listen_addr)"))?)
        }
        _ => None,
    };
    let stun_socket = if config.derp.server.enabled {
        let addr = config.derp.server.stun_listen_addr;
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding STUN to {addr} (derp.server.stun_listen_addr)"))?;
        config.derp.server.stun_listen_addr = socket.local_addr()?;
        Some(socket)
    } else {
        None
    };

    // headscale's config names headscale's database: it is backed up and taken over.
    if let Some(summary) = crate::import::headscale::take_over_at_start(&config)
        .await
        .with_context(|| {
            format!(
                "{} is headscale's database and could not be taken over",
                config.sqlite_path().display()
            )
        })?
    {
        for line in summary.to_text().lines() {
            info!("headscale takeover: {}", line.trim());
        }
    }
    let noise_key = crate::keys::load_or_create(&config.noise_key_path())?;
    let database_was_there = config.sqlite_path().exists();
    let store = Store::open_sqlite(
        &config.sqlite_path(),
        config.database.sqlite.write_ahead_log,
    )
    .await?;
    make_database_private(&config.sqlite_path(), database_was_there)?;
    // DNS settings saved by an administrator win over the config file's.
    let dns = crate::admin::dns::effective_settings(&store, &config).await?;
    let settings = Settings {
        server_url: config.server_url.trim_end_matches('/').to_owned(),
        base_domain: dns.base_domain.trim_matches('.').to_owned(),
        magic_dns: dns.magic_dns,
        node_expiry: (!config.node.expiry.is_zero()).then_some(config.node.expiry.0),
        approval_required: crate::admin::devices::effective_approval_required(&store, &config)
            .await?,
    };
    let pool = AddressPool::new(
        config.prefixes.v4,
        config.prefixes.v6,
        config.prefixes.allocation,
    );
    let tailnet = Tailnet::start(store.clone(), settings, pool).await?;
    let (users, nodes) = tailnet.read(|s| (s.users().count(), s.node_count()));
    info!(users, nodes, database = %config.sqlite_path().display(), "tailnet loaded");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The policy is in force before any node can connect: never an allow-all moment, and
    // an invalid policy stops the server here, naming the line.
    let policy = PolicyManager::start(&config.policy, tailnet.clone())
        .await
        .context("loading the policy")?;
    policy.spawn_watchers(shutdown_rx.clone());
    let http_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .context("building the HTTP client")?;
    let remote_maps = derp_map::fetch_remote(&http_client, &config.derp.urls, &[]).await;
    let mut map_config = MapConfig::new(&config, derp_map::build(&config, &remote_maps)?);
    map_config.set_dns(&dns);
    let bounds = crate::connections::Bounds::from_config(&config)?;
    let control = ControlPlane::new(
        tailnet.clone(),
        map_config,
        ControlSettings {
            attributes_from_device: config.node.attributes_from_device,
            ..ControlSettings::default().with_bounds(&bounds)
        },
        shutdown_rx.clone(),
    );
    control.ssh_checks.use_policy(policy.clone());
    if !config.derp.urls.is_empty() && config.derp.auto_update_enabled {
        tokio::spawn(refresh_derp_maps(
            config.clone(),
            http_client,
            remote_maps,
            control.clone(),
            shutdown_rx.clone(),
        ));
    }

    let stun_addr = stun_socket.as_ref().map(|s| s.local_addr()).transpose()?;
    let derp = match stun_socket {
        Some(socket) => {
            let derp_key = crate::keys::load_or_create(&config.derp_key_path())?;
            let admit: oxiscale_derp::AdmitFn = if config.derp.server.verify_clients {
                RelayGate::admit_fn(&tailnet)
            } else {
                Arc::new(|_| true)
            };
            let derp = Arc::new(oxiscale_derp::DerpServer::new(derp_key, admit));
            RelayGate::install(derp.clone(), &tailnet);
            info!(addr = ?stun_addr, "STUN listening");
            tokio::spawn(oxiscale_derp::serve_stun(socket));
            Some(derp)
        }
        None => None,
    };

    // The identity provider (saved settings win over the config file's), discovered before
    // any client can connect; read per request through its handle, so the console can change
    // it and a provider that was down at start can come later.
    let identity =
        crate::admin::identity::IdentityService::start(&config, store.clone(), shutdown_rx.clone())
            .await?;

    let dns = crate::admin::dns::DnsService::new(&config, control.clone(), dns);
    let admin = Admin::new(tailnet.clone(), dns)
        .with_policy(policy.clone())
        .with_identity(identity.clone());
    let noise = Arc::new(oxiscale_noise::ServerConfig {
        key: oxiscale_noise::StaticKey::from_bytes(noise_key),
        min_version: oxiscale_tailcfg::MIN_CAPABILITY_VERSION as u16,
        early_payload: true,
    });
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr()?;
        let sources = crate::telemetry::Sources {
            control: control.clone(),
            derp: derp.clone(),
        };
        let shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::telemetry::serve(listener, sources, shutdown).await {
                warn!(error = %e, "metrics listener stopped");
            }
        });
        info!(%addr, "metrics listening (/metrics)");
    }
    let edge = Edge {
        control: control.clone(),
        noise,
        derp,
        admin: admin.clone(),
        server_url: config.server_url.clone(),
        oidc: identity.handle(),
    };
    let (console, console_fallback) = crate::console::routes(
        &config,
        admin.clone(),
        identity.handle(),
        control.ssh_checks.clone(),
    );
    crate::console::auth::announce_setup_link(store.pool(), &config.server_url).await;
    let router = crate::http::router(edge)
        .merge(console)
        .route_layer(axum::middleware::from_fn(crate::telemetry::time_request))
        .fallback_service(console_fallback)
        .layer(tower_http::trace::TraceLayer::new_for_http());

    let socket_path = config.socket_path();
    let permission =
        u32::from_str_radix(&config.unix_socket_permission, 8).expect("validated with the config");
    let socket_listener = crate::api::bind_socket(&socket_path, permission).with_context(|| {
        format!(
            "binding the admin socket {} (unix_socket)",
            socket_path.display()
        )
    })?;
    let socket = {
        let admin = admin.clone();
        let shutdown = wait_for(shutdown_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::api::serve_socket(admin, socket_listener, shutdown).await {
                warn!(error = %e, "admin socket stopped");
            }
        })
    };
    info!(path = %socket_path.display(), "admin socket listening (the CLI talks to it)");

    let lifecycle = Lifecycle {
        tailnet: tailnet.clone(),
        ephemeral_timeout: config.node.ephemeral.inactivity_timeout.0,
    };
    tokio::spawn(lifecycle.run(shutdown_rx.clone()));

    info!(addr = %http_addr, server_url = %config.server_url, tls = tls.is_some(), "oxiscale listening");
    let http = match &tls {
        Some(tls) => {
            tls.spawn_watchers(shutdown_rx.clone());
            let listener = crate::tls::listener::TlsListener::new(listener, tls.acceptor());
            tokio::spawn(crate::connections::serve(
                listener,
                router,
                bounds,
                wait_for(shutdown_rx.clone()),
            ))
        }
        None => tokio::spawn(crate::connections::serve(
            listener,
            router,
            bounds,
            wait_for(shutdown_rx.clone()),
        )),
    };
    Ok(Running {
        http_addr,
        stun_addr,
        server_url: config.server_url.clone(),
        tailnet,
        control,
        admin,
        policy,
        socket_path,
        shutdown: shutdown_tx,
        http,
        socket,
    })
}

/// Re-fetches `derp.urls` every `derp.update_frequency`; a changed map reaches every
/// connected node as a `DERPMap` update.
async fn refresh_derp_maps(
    config: Config,
    client: reqwest::Client,
    mut remote: Vec<oxiscale_tailcfg::DerpMap>,
    control: Arc<ControlPlane>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = config.derp.update_frequency.0.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        remote = derp_map::fetch_remote(&client, &config.derp.urls, &remote).await;
        let map = match derp_map::build(&config, &remote) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "DERP map refresh failed; keeping the current map");
                continue;
            }
        };
        if map != control.map_config().derp_map {
            info!(
                regions = map.regions.len(),
                "DERP map changed; sending it to connected nodes"
            );
            // Keep the DNS part: it may have been edited at run time.
            control.update_map_config(|c| c.derp_map = map);
            control
                .tailnet
                .broadcast(&[crate::tailnet::Change::DerpMap]);
        }
    }
}

/// Binds the main listener with a deep accept queue: a reconnect storm of thousands of
/// clients must not overflow it (tokio's default backlog is 1024).
fn bind_tcp(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    crate::net::bind_reusable(addr, 8192)
}

/// The data directory holds keys and the database: only its owner may enter it.
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let was_there = dir.exists();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    make_private(dir, 0o700, was_there)
        .with_context(|| format!("restricting the data directory {}", dir.display()))
}

/// Takes group and other permissions off `path` (the data directory, the database and its
/// journal: they hold console sessions, password hashes and node keys). A path that was
/// already there more open is named in a warning: it may have been read meanwhile.
fn make_private(path: &std::path::Path, mode: u32, was_there: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & 0o077 == 0 {
        return Ok(());
    }
    if was_there {
        warn!(
            path = %path.display(),
            was = format!("{current:o}"),
            now = format!("{mode:o}"),
            "was readable by other local users; made private"
        );
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// [`make_private`] for the SQLite database and the WAL files beside it; `was_there`: the
/// database existed before this start.
fn make_database_private(db: &std::path::Path, was_there: bool) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = std::path::PathBuf::from(name);
        if path.exists() {
            make_private(&path, 0o600, was_there)
                .with_context(|| format!("restricting {}", path.display()))?;
        }
    }
    Ok(())
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A data directory and database left readable by others (0755 / 0644, as an older
    /// install or a hand-made directory has them) are made private at start.
    #[test]
    fn an_open_data_directory_and_database_are_made_private() {
        let dir = std::env::temp_dir().join(format!("oxiscale-private-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = dir.join("db.sqlite");
        for name in ["db.sqlite", "db.sqlite-wal"] {
            let path = dir.join(name);
            std::fs::write(&path, b"").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        super::create_private_dir(&dir).unwrap();
        super::make_database_private(&db, true).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&dir.join("db.sqlite-wal")), 0o600);
        // Already private: left as it is.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
        super::make_database_private(&db, true).unwrap();
        assert_eq!(mode(&db), 0o400);
        std::fs::remove_dir_all(&dir).ok();
    }
}
