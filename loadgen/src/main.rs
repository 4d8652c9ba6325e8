//! oxiscale-loadgen: simulates many Tailscale nodes against an oxiscale server over loopback
//! and prints what the server does with them (see BENCHMARKS.md and scripts/bench.sh).

// The generator shares the machine with the server it measures, so its own cost matters:
// with glibc malloc, `_int_malloc` was 8 % of its samples in a 10,000-node storm (buffers
// for large map messages), mimalloc's size classes make those allocations cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod floor;
mod frame;
mod hold;
mod node;
mod probe;
mod procstat;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::frame::Target;
use crate::node::{Ctx, SimNode};
use crate::probe::{Probe, ProbeResult};
use crate::procstat::{Proc, Sample};
use crate::stats::{Summary, mib, ms};

/// The policy the nodes join under.
#[derive(ValueEnum, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum PolicyMode {
    /// None until the fan-out's policy rounds (which let everyone see everyone).
    None,
    /// Hub and spoke: everyone sees the hub (the first nodes to register), hub nodes see
    /// everyone, the others do not see each other. Needs --api-key and over 300 nodes.
    Hub,
}

#[derive(Parser, Debug)]
#[command(about = "Simulated Tailscale nodes against an oxiscale server")]
struct Args {
    /// Control URL (http://127.0.0.1:PORT).
    #[arg(long)]
    url: String,
    /// A reusable pre-auth key.
    #[arg(long)]
    auth_key: String,
    /// An API key, for the fan-out scenario's policy changes (the server must store its
    /// policy in the database: `policy.mode: database`). Without it they are skipped.
    #[arg(long)]
    api_key: Option<String>,
    /// Nodes kept connected.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// The policy put in force before the join.
    #[arg(long, value_enum, default_value_t = PolicyMode::None)]
    policy: PolicyMode,
    /// The server's pid, to sample its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Comma-separated: join,steady,fanout,storm,churn (join always runs first), and
    /// `narrow` last (a policy change that narrows who sees whom; not by default). Or `hold`
    /// alone: one node named --hostname advertising --routes holds its map stream until
    /// killed and prints when its own map shows a route approved (see hold.rs).
    #[arg(long, default_value = "join,steady,fanout,storm,churn")]
    scenarios: String,
    /// The held node's hostname (`--scenarios hold`).
    #[arg(long, default_value = "")]
    hostname: String,
    /// Comma-separated routes the held node advertises, e.g. 10.77.0.0/24,0.0.0.0/0,::/0.
    #[arg(long, value_delimiter = ',')]
    routes: Vec<String>,
    /// Connects + registrations in flight at once during join.
    #[arg(long, default_value_t = 256)]
    join_concurrency: usize,
    /// Length of the steady (keep-alive only) window.
    #[arg(long, default_value_t = 65)]
    steady_secs: u64,
    /// Changes of each kind in the fan-out scenario.
    #[arg(long, default_value_t = 5)]
    fanout_rounds: usize,
    /// Ephemeral joins per second in the churn scenario (each leaves after --churn-lifetime).
    #[arg(long, default_value_t = 5.0)]
    churn_rate: f64,
    #[arg(long, default_value_t = 30)]
    churn_secs: u64,
    #[arg(long, default_value_t = 5)]
    churn_lifetime_secs: u64,
    /// Compressed map messages up to this size are decoded whole; larger ones only their head.
    #[arg(long, default_value_t = 256 << 10)]
    collect_limit: usize,
    /// Upper bound on waiting for any one phase or change to complete.
    #[arg(long, default_value_t = 300)]
    phase_timeout_secs: u64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

/// Server /proc sampling: the latest reading and the peak RSS since the last reset.
struct Sampler {
    server: Option<Proc>,
    peak_rss: AtomicU64,
}

impl Sampler {
    fn sample(&self) -> Option<Sample> {
        let s = self.server.as_ref()?.sample().ok()?;
        self.peak_rss.fetch_max(s.rss_bytes, Ordering::Relaxed);
        Some(s)
    }
    fn reset_peak(&self) -> u64 {
        let now = self.sample().map(|s| s.rss_bytes).unwrap_or(0);
        self.peak_rss.swap(now, Ordering::Relaxed)
    }
    fn peak(&self) -> u64 {
        self.peak_rss.load(Ordering::Relaxed)
    }
}

/// CPU and RSS of the server and of this process across a phase, and what the streams
/// received in it.
struct Window {
    t: Instant,
    server: Option<Sample>,
    me: Option<Sample>,
    machine: Option<Duration>,
    /// Map bytes and messages received by every node before the phase.
    received: (u64, u64),
}

impl Window {
    fn open(bench: &Bench) -> Window {
        let sampler = &bench.sampler;
        sampler.reset_peak();
        let (bytes, messages, _) = bench.totals();
        Window {
            t: Instant::now(),
            server: sampler.sample(),
            me: Proc::new(None).sample().ok(),
            machine: procstat::machine_busy(),
            received: (bytes, messages),
        }
    }
    fn close(&self, bench: &Bench) -> Value {
        let sampler = &bench.sampler;
        let (bytes, messages, _) = bench.totals();
        let dt = self.t.elapsed().as_secs_f64();
        let server = sampler.sample();
        let me = Proc::new(None).sample().ok();
        let share = |a: Option<Sample>, b: Option<Sample>| match (a, b) {
            (Some(a), Some(b)) => Some((b.cpu - a.cpu).as_secs_f64() / dt * 100.0),
            _ => None,
        };
        // CPU used by everything else on the machine (other builds, other benchmarks).
        let others = match (
            self.machine,
            procstat::machine_busy(),
            self.server,
            server,
            self.me,
            me,
        ) {
            (Some(m0), Some(m1), Some(s0), Some(s1), Some(g0), Some(g1)) => {
                let own = (s1.cpu - s0.cpu) + (g1.cpu - g0.cpu);
                Some((m1 - m0).saturating_sub(own).as_secs_f64() / dt * 100.0)
            }
            _ => None,
        };
        json!({
            "seconds": dt,
            "other_processes_cpu_pct_of_one_core": others,
            "server_cpu_pct_of_one_core": share(self.server, server),
            "server_rss_bytes": server.map(|s| s.rss_bytes),
            "server_peak_rss_bytes": sampler.peak(),
            "loadgen_cpu_pct_of_one_core": share(self.me, me),
            "loadgen_rss_bytes": me.map(|s| s.rss_bytes),
            "received_bytes": bytes.saturating_sub(self.received.0),
            "received_messages": messages.saturating_sub(self.received.1),
        })
    }
}

fn print_window(label: &str, w: &Value) {
    let pct = |k: &str| {
        w[k].as_f64()
            .map(|v| format!("{v:.1}%"))
            .unwrap_or_else(|| "n/a".into())
    };
    let bytes = |k: &str| w[k].as_u64().map(mib).unwrap_or_else(|| "n/a".into());
    println!(
        "  [{label}] {:.1}s  server: cpu {} of one core, rss {}, peak rss {}  |  loadgen: cpu {}, rss {}  |  other processes: cpu {}  |  received {} in {} messages",
        w["seconds"].as_f64().unwrap_or(0.0),
        pct("server_cpu_pct_of_one_core"),
        bytes("server_rss_bytes"),
        bytes("server_peak_rss_bytes"),
        pct("loadgen_cpu_pct_of_one_core"),
        bytes("loadgen_rss_bytes"),
        pct("other_processes_cpu_pct_of_one_core"),
        bytes("received_bytes"),
        w["received_messages"].as_u64().unwrap_or(0),
    );
}

struct Bench {
    args: Args,
    ctx: Arc<Ctx>,
    sampler: Arc<Sampler>,
    nodes: Vec<Arc<SimNode>>,
    next_index: AtomicU64,
    timeout: Duration,
}

fn summary_json(s: &Summary) -> Value {
    json!({"count": s.count, "p50_ms": s.p50.as_secs_f64()*1e3, "p99_ms": s.p99.as_secs_f64()*1e3, "max_ms": s.max.as_secs_f64()*1e3})
}

/// Retries a connect a few times: a burst of SYNs can overflow the listen backlog.
async fn connect_with_retry(node: &SimNode, ctx: &Ctx) -> Result<Duration, node::NodeError> {
    let mut attempt = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), node.connect(ctx)).await {
            Ok(Ok(d)) => return Ok(d),
            Ok(Err(e)) if attempt >= 4 => return Err(e),
            Err(_) if attempt >= 4 => return Err(node::NodeError::NotConnected),
            _ => {}
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    }
}

impl Bench {
    fn new_node(&self, ephemeral: bool) -> Arc<SimNode> {
        Arc::new(SimNode::new(
            self.next_index.fetch_add(1, Ordering::Relaxed) as usize,
            ephemeral,
        ))
    }

    /// Base nodes that currently have a map and a known ID, minus `except`, and that see
    /// what changed: under the hub policy only hub nodes hear about a node outside the hub.
    fn viewers(&self, except: Option<usize>, about_hub: bool) -> Vec<bool> {
        let everyone = about_hub || self.args.policy == PolicyMode::None;
        self.nodes
            .iter()
            .map(|n| {
                Some(n.index) != except
                    && n.full_map_at.load(Ordering::Acquire) != 0
                    && n.id.load(Ordering::Relaxed) != 0
                    && (everyone || in_hub(n))
            })
            .collect()
    }

    fn viewers_label(&self) -> &'static str {
        match self.args.policy {
            PolicyMode::None => "viewers = every connected node",
            PolicyMode::Hub => "viewers = the connected nodes that see it (hub policy)",
        }
    }

    async fn wait_all_full_maps(&self, after_micros: u64) -> (bool, Duration) {
        let t = Instant::now();
        let deadline = t + self.timeout;
        loop {
            let missing = self
                .nodes
                .iter()
                .filter(|n| n.full_map_at.load(Ordering::Acquire) <= after_micros)
                .count();
            if missing == 0 {
                return (true, t.elapsed());
            }
            if Instant::now() >= deadline {
                println!(
                    "  {missing} nodes still without a full map after {:?}",
                    self.timeout
                );
                return (false, t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn join(&self) -> Value {
        println!(
            "== join: {} nodes register and open map streams",
            self.nodes.len()
        );
        let w = Window::open(self);
        let t0 = Instant::now();
        let t0_us = self.ctx.micros();
        let sem = Arc::new(Semaphore::new(self.args.join_concurrency));
        let mut set = JoinSet::new();
        for n in &self.nodes {
            let (n, ctx, sem) = (n.clone(), self.ctx.clone(), sem.clone());
            set.spawn(async move {
                let permit = sem.acquire_owned().await.expect("never closed");
                let connect = connect_with_retry(&n, &ctx).await?;
                let register = n.register(&ctx).await?;
                let registered_at = Instant::now();
                let registered_us = ctx.micros();
                drop(permit);
                n.open_stream(&ctx).await?;
                Ok::<_, node::NodeError>((connect, register, registered_at, (n, registered_us)))
            });
        }
        let (mut connects, mut registers, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        let mut registered = Vec::new();
        let mut last_registered = t0;
        while let Some(r) = set.join_next().await {
            match r.expect("node task panicked") {
                Ok((c, r, at, node)) => {
                    connects.push(c.as_micros() as u64);
                    registers.push(r.as_micros() as u64);
                    last_registered = last_registered.max(at);
                    registered.push(node);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        let register_span = last_registered - t0;
        let (all, _) = self.wait_all_full_maps(t0_us).await;
        let streams_span = t0.elapsed();
        let ok = registers.len();
        let rate = ok as f64 / register_span.as_secs_f64().max(1e-9);
        let reg = Summary::of_micros(&mut registers);
        let con = Summary::of_micros(&mut connects);
        // What a node's user waits for: from its register answer to its first map.
        let mut to_first_map: Vec<u64> = registered
            .iter()
            .filter_map(|(n, at)| {
                let map_at = n.full_map_at.load(Ordering::Acquire);
                (map_at > *at).then(|| map_at - at)
            })
            .collect();
        let first_map = Summary::of_micros(&mut to_first_map);
        println!(
            "  registered {ok}/{} in {:.2}s = {rate:.0} registrations/s; all streams had full maps after {:.2}s{}",
            self.nodes.len(),
            register_span.as_secs_f64(),
            streams_span.as_secs_f64(),
            if all { "" } else { " (NOT ALL)" }
        );
        println!("  register latency: {reg}");
        println!("  register answer → first full map: {first_map}");
        println!("  connect (TCP + /ts2021 + Noise + h2) latency: {con}");
        if !errors.is_empty() {
            println!("  {} failures, first: {}", errors.len(), errors[0]);
        }
        let win = w.close(self);
        print_window("join", &win);
        json!({
            "registered": ok, "failures": errors.len(), "first_error": errors.first(),
            "register_seconds": register_span.as_secs_f64(), "registrations_per_second": rate,
            "all_full_maps_seconds": streams_span.as_secs_f64(), "all_full_maps": all,
            "register_latency": summary_json(&reg), "connect_latency": summary_json(&con),
            "register_to_first_map": summary_json(&first_map),
            "window": win,
        })
    }

    fn totals(&self) -> (u64, u64, u64) {
        self.nodes.iter().fold((0, 0, 0), |(b, m, k), n| {
            (
                b + n.bytes.load(Ordering::Relaxed),
                m + n.messages.load(Ordering::Relaxed),
                k + n.keep_alives.load(Ordering::Relaxed),
            )
        })
    }

    async fn steady(&self) -> Value {
        let secs = self.args.steady_secs;
        println!(
            "== steady: {} streams, keep-alives only, {secs}s",
            self.nodes.len()
        );
        // Let the join's online patches drain first.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (b0, m0, k0) = self.totals();
        let w = Window::open(self);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (b1, m1, k1) = self.totals();
        let win = w.close(self);
        let minutes = win["seconds"].as_f64().unwrap_or(1.0) / 60.0;
        let n = self.nodes.len().max(1) as f64;
        let per_node_min = (b1 - b0) as f64 / n / minutes;
        let connected = self
            .nodes
            .iter()
            .filter(|n| n.full_map_at.load(Ordering::Acquire) != 0)
            .count();
        println!(
            "  {connected} streams up; {} messages ({} keep-alives), {per_node_min:.0} bytes per node per minute",
            m1 - m0,
            k1 - k0
        );
        print_window("steady", &win);
        json!({"connected": connected, "messages": m1 - m0, "keep_alives": k1 - k0,
               "bytes_per_node_per_minute": per_node_min, "window": win})
    }

    /// Registers `probe`, runs `change`, waits, and returns what the viewers saw.
    async fn run_probe<E, F: std::future::Future<Output = Result<(), E>>>(
        &self,
        target: Target,
        except: Option<usize>,
        about_hub: bool,
        change: F,
    ) -> Result<ProbeResult, E> {
        self.run_probe_to(target, self.viewers(except, about_hub), change)
            .await
    }

    /// [`Self::run_probe`] for a set of viewers chosen by the caller.
    async fn run_probe_to<E, F: std::future::Future<Output = Result<(), E>>>(
        &self,
        target: Target,
        viewers: Vec<bool>,
        change: F,
    ) -> Result<ProbeResult, E> {
        let probe = Arc::new(Probe::new(target, &viewers, Instant::now()));
        self.ctx.probes.add(probe.clone());
        let outcome = change.await;
        if outcome.is_ok() {
            probe.wait(self.timeout.min(Duration::from_secs(60))).await;
        }
        self.ctx.probes.remove(&probe);
        outcome.map(|()| probe.result())
    }

    fn report_kind(&self, label: &str, results: &[ProbeResult]) -> Value {
        if results.is_empty() {
            println!("  {label}: no successful changes");
            return Value::Null;
        }
        let mut all: Vec<u64> = results
            .iter()
            .flat_map(|r| r.latencies_us.clone())
            .collect();
        let expected: usize = results.iter().map(|r| r.expected).sum();
        let s = Summary::of_micros(&mut all);
        let bytes: u64 = results.iter().map(|r| r.bytes).sum();
        let per_change_max: Vec<f64> = results
            .iter()
            .map(|r| r.summary().max.as_secs_f64() * 1e3)
            .collect();
        println!(
            "  {label}: heard {}/{expected} (viewers × changes); latency {s}; {:.0} bytes sent per change ({:.1} per stream)",
            s.count,
            bytes as f64 / results.len() as f64,
            bytes as f64 / s.count.max(1) as f64
        );
        let expected_per_change: Vec<usize> = results.iter().map(|r| r.expected).collect();
        let mut out = json!({"heard": s.count, "expected": expected, "latency": summary_json(&s),
            "bytes_per_change": bytes as f64 / results.len() as f64, "max_ms_per_change": per_change_max,
            "expected_per_change": expected_per_change});
        // The floor: compress + encrypt this exact message once per receiver of its change
        // (best of three, so a busy moment does not inflate it). Compared with the median
        // completion of the changes with as many receivers: under the hub policy one kind
        // mixes changes about hub nodes (every node hears) and about the others (the hub).
        if let Some((sampled, json)) = results
            .iter()
            .find_map(|r| Some((r, r.sample_json.as_ref()?)))
        {
            let receivers = sampled.expected;
            let f = (0..3)
                .map(|_| floor::measure(json, receivers))
                .min_by_key(|f| f.total)
                .expect("three samples");
            let mut maxima: Vec<f64> = results
                .iter()
                .zip(&per_change_max)
                .filter(|(r, _)| r.expected == receivers)
                .map(|(_, max)| *max)
                .collect();
            maxima.sort_by(f64::total_cmp);
            let median_max_ms = maxima[maxima.len() / 2];
            let ratio = median_max_ms / (f.total.as_secs_f64() * 1e3);
            let compared = if maxima.len() == results.len() {
                String::new()
            } else {
                format!(" (of the {} with {receivers} receivers)", maxima.len())
            };
            println!(
                "    floor: zstd-1 + Noise encrypt of the {}-byte message × {receivers} streams = {}; median change{compared} completes in {median_max_ms:.1}ms = {ratio:.1}× the floor",
                f.json_len,
                ms(f.total)
            );
            out["floor"] = json!({"json_bytes": f.json_len, "wire_bytes_per_stream": f.wire_len,
                "receivers": f.receivers, "ms": f.total.as_secs_f64()*1e3,
                "median_change_complete_ms": median_max_ms, "changes_compared": maxima.len(),
                "ratio": ratio, "sample": String::from_utf8_lossy(&json[..json.len().min(400)])});
        }
        out
    }

    async fn fanout(&self) -> Value {
        let rounds = self.args.fanout_rounds;
        println!(
            "== fan-out: {rounds} changes of each kind; {}",
            self.viewers_label()
        );
        let w = Window::open(self);
        let n = self.nodes.len();
        let mut endpoint = Vec::new();
        for r in 0..rounds {
            let x = &self.nodes[(r * 7919 + 13) % n];
            let id = x.id.load(Ordering::Relaxed);
            match self
                .run_probe(
                    Target::Endpoints(id),
                    Some(x.index),
                    in_hub(x),
                    x.bump_endpoints(&self.ctx),
                )
                .await
            {
                Ok(res) => endpoint.push(res),
                Err(e) => println!("  endpoint change failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let newcomer = self.new_node(false);
            if let Err(e) = connect_with_retry(&newcomer, &self.ctx).await {
                println!("  newcomer could not connect: {e}");
                continue;
            }
            let target = Target::Joined(newcomer.node_key.to_string());
            let joined = self
                .run_probe(target, None, NEWCOMER_IN_HUB, async {
                    newcomer.register(&self.ctx).await?;
                    newcomer.open_stream(&self.ctx).await
                })
                .await;
            match joined {
                Ok(res) => joins.push(res),
                Err(e) => {
                    println!("  join failed: {e}");
                    continue;
                }
            }
            // Wait for the newcomer's own map (its ID), let its online patch pass, then leave.
            let t = Instant::now();
            while newcomer.id.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(60)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let id = newcomer.id.load(Ordering::Relaxed);
            if id == 0 {
                println!("  newcomer never received its own map; skipping its leave");
                newcomer.disconnect();
                continue;
            }
            let leave = newcomer.logout(&self.ctx);
            match self
                .run_probe(Target::Removed(id), None, in_hub(&newcomer), leave)
                .await
            {
                Ok(res) => leaves.push(res),
                Err(e) => println!("  leave failed: {e}"),
            }
            newcomer.disconnect();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut out = json!({
            "endpoint_change": self.report_kind("endpoint change (lite update)", &endpoint),
            "node_join": self.report_kind("node join", &joins),
            "node_leave": self.report_kind("node leave (logout)", &leaves),
        });
        out["policy_change"] = match &self.args.api_key {
            Some(api_key) => self.policy_rounds(api_key).await,
            None => {
                println!("  policy change: skipped (no --api-key)");
                json!("skipped: no --api-key")
            }
        };
        let win = w.close(self);
        print_window("fan-out", &win);
        out["window"] = win;
        out
    }

    /// Policy changes: each puts a packet filter with a new port in force, which every
    /// stream must be sent (the server recomputes every node's peers and filter).
    async fn policy_rounds(&self, api_key: &str) -> Value {
        let mut results = Vec::new();
        for r in 0..self.args.fanout_rounds {
            let port = 40_000 + r as u16;
            let policy = match self.args.policy {
                PolicyMode::None => admin::policy_with_port(port),
                PolicyMode::Hub => admin::hub_policy(Some(port)),
            };
            let set = admin::set_policy(&self.ctx.url, api_key, &policy);
            // Every node gets the new filter, whomever it sees.
            match self
                .run_probe(Target::FilterPort(port), None, true, set)
                .await
            {
                Ok(res) => results.push(res),
                Err(e) => println!("  policy change failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.report_kind(
            "policy change (a new packet filter for every node)",
            &results,
        )
    }

    /// A policy change that narrows who sees whom: from everyone-sees-everyone to the hub
    /// policy, under which a node outside the hub (a spoke) sees only the hub. Every spoke's
    /// stream must drop every other spoke; the probe waits for one of them to be dropped
    /// everywhere. Runs last (checked in `run`): the policy stays narrowed.
    async fn narrow(&self) -> Value {
        println!("== narrow: everyone-sees-everyone becomes the hub policy");
        let Some(api_key) = &self.args.api_key else {
            println!("  skipped (no --api-key)");
            return json!("skipped: no --api-key");
        };
        let Some(dropped) = self
            .nodes
            .iter()
            .rev()
            .find(|n| !in_hub(n) && n.id.load(Ordering::Relaxed) != 0)
        else {
            println!("  skipped: no connected node outside the hub");
            return json!("skipped: no spoke");
        };
        let id = dropped.id.load(Ordering::Relaxed);
        let spokes: Vec<bool> = self
            .viewers(Some(dropped.index), true)
            .into_iter()
            .zip(&self.nodes)
            .map(|(viewer, n)| viewer && !in_hub(n))
            .collect();
        let w = Window::open(self);
        let hub = admin::hub_policy(None);
        let set = admin::set_policy(&self.ctx.url, api_key, &hub);
        let result = match self.run_probe_to(Target::Removed(id), spokes, set).await {
            Ok(res) => self.report_kind(
                "policy narrowed (each spoke drops the other spokes)",
                &[res],
            ),
            Err(e) => {
                println!("  policy change failed: {e}");
                json!(format!("failed: {e}"))
            }
        };
        let win = w.close(self);
        print_window("narrow", &win);
        json!({"change": result, "window": win})
    }

    async fn storm(&self) -> Value {
        println!(
            "== storm: all {} nodes drop and reconnect at once",
            self.nodes.len()
        );
        let w = Window::open(self);
        let peak_sampler = self.spawn_peak_sampler();
        let t0 = Instant::now();
        let t0_us = self.ctx.micros();
        for n in &self.nodes {
            n.disconnect();
        }
        let mut set = JoinSet::new();
        for n in &self.nodes {
            let (n, ctx) = (n.clone(), self.ctx.clone());
            set.spawn(async move {
                connect_with_retry(&n, &ctx).await?;
                n.open_stream(&ctx).await
            });
        }
        let mut errors = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Err(e) = r.expect("node task panicked") {
                errors.push(e.to_string());
            }
        }
        let (all, _) = self.wait_all_full_maps(t0_us).await;
        let settled = t0.elapsed();
        peak_sampler.abort();
        let mut per_node: Vec<u64> = self
            .nodes
            .iter()
            .map(|n| n.full_map_at.load(Ordering::Acquire).saturating_sub(t0_us))
            .filter(|d| *d > 0)
            .collect();
        let s = Summary::of_micros(&mut per_node);
        println!(
            "  all {} had full maps again after {:.2}s{}; per node: {s}",
            self.nodes.len(),
            settled.as_secs_f64(),
            if all { "" } else { " (NOT ALL)" }
        );
        if !errors.is_empty() {
            println!(
                "  {} reconnect failures, first: {}",
                errors.len(),
                errors[0]
            );
        }
        let win = w.close(self);
        print_window("storm", &win);
        json!({"settled_seconds": settled.as_secs_f64(), "all": all, "failures": errors.len(),
               "first_error": errors.first(), "per_node": summary_json(&s), "window": win})
    }

    /// Samples the server every 100 ms so short RSS peaks are seen.
    fn spawn_peak_sampler(&self) -> tokio::task::JoinHandle<()> {
        let sampler = self.sampler.clone();
        tokio::spawn(async move {
            loop {
                sampler.sample();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    async fn churn(self: &Arc<Self>) -> Value {
        let rate = self.args.churn_rate;
        let secs = self.args.churn_secs;
        let life = Duration::from_secs(self.args.churn_lifetime_secs);
        println!(
            "== churn: ephemeral nodes join at {rate}/s for {secs}s, each leaving after {life:?}, while {} stay connected; one endpoint change per second; {}",
            self.nodes.len(),
            self.viewers_label()
        );
        let w = Window::open(self);
        let peak_sampler = self.spawn_peak_sampler();
        let mut set = JoinSet::new();
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.01));
        let end = Instant::now() + Duration::from_secs(secs);
        let mut next_endpoint = Instant::now();
        let mut round = 0usize;
        let mut endpoint = Vec::new();
        let mut ticker = tokio::time::interval(interval);
        while Instant::now() < end {
            ticker.tick().await;
            let bench = self.clone();
            let node = self.new_node(true);
            set.spawn(async move { bench.churn_one(node, life).await });
            if Instant::now() >= next_endpoint {
                next_endpoint += Duration::from_secs(1);
                let bench = self.clone();
                let x = self.nodes[(round * 104_729 + 7) % self.nodes.len()].clone();
                round += 1;
                set.spawn(async move {
                    let id = x.id.load(Ordering::Relaxed);
                    let r = bench
                        .run_probe(
                            Target::Endpoints(id),
                            Some(x.index),
                            in_hub(&x),
                            x.bump_endpoints(&bench.ctx),
                        )
                        .await;
                    (None, None, r.ok())
                });
            }
        }
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        let mut failures = 0;
        while let Some(r) = set.join_next().await {
            let (j, l, e) = r.expect("churn task panicked");
            if j.is_none() && l.is_none() && e.is_none() {
                failures += 1;
            }
            joins.extend(j);
            leaves.extend(l);
            endpoint.extend(e);
        }
        peak_sampler.abort();
        let out = json!({
            "rate_per_second": rate, "seconds": secs, "lifetime_seconds": life.as_secs(),
            "failed_tasks": failures,
            "join": self.report_kind("churn join", &joins),
            "leave": self.report_kind("churn leave", &leaves),
            "endpoint_change": self.report_kind("endpoint change under churn", &endpoint),
        });
        if failures > 0 {
            println!("  {failures} churn tasks failed");
        }
        let win = w.close(self);
        print_window("churn", &win);
        let mut out = out;
        out["window"] = win;
        out
    }

    async fn churn_one(
        &self,
        node: Arc<SimNode>,
        life: Duration,
    ) -> (
        Option<ProbeResult>,
        Option<ProbeResult>,
        Option<ProbeResult>,
    ) {
        if connect_with_retry(&node, &self.ctx).await.is_err() {
            return (None, None, None);
        }
        let target = Target::Joined(node.node_key.to_string());
        let joined = self
            .run_probe(target, None, NEWCOMER_IN_HUB, async {
                node.register(&self.ctx).await?;
                node.open_stream(&self.ctx).await
            })
            .await
            .ok();
        let t = Instant::now();
        while node.id.load(Ordering::Relaxed) == 0
            && t.elapsed() < life.max(Duration::from_secs(30))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(life.saturating_sub(t.elapsed())).await;
        let id = node.id.load(Ordering::Relaxed);
        let left = if id != 0 {
            self.run_probe(
                Target::Removed(id),
                None,
                in_hub(&node),
                node.logout(&self.ctx),
            )
            .await
            .ok()
        } else {
            None
        };
        node.disconnect();
        (joined, left, None)
    }
}

/// Whether `node` is a hub node (only meaningful under the hub policy).
fn in_hub(node: &SimNode) -> bool {
    node.ipv4().is_some_and(|ip| admin::HUB.contains(&ip))
}

/// Under the hub policy there are more base nodes than this, so that they fill the hub
/// (`admin::HUB`) and leave spokes.
const HUB_POLICY_NODES_ABOVE: usize = 300;

/// A node registering after the base nodes is never in the hub: they took its addresses,
/// which the server hands out in order (see `HUB_POLICY_NODES_ABOVE`).
const NEWCOMER_IN_HUB: bool = false;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let scenarios: Vec<String> = args
        .scenarios
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let hold = scenarios.iter().any(|s| s == "hold");
    if hold && (scenarios.len() > 1 || args.policy != PolicyMode::None) {
        bail!("the hold scenario runs alone, with no --policy");
    }
    if args.policy == PolicyMode::Hub {
        if args.api_key.is_none() {
            bail!("--policy hub puts the policy in force over the admin API: it needs --api-key");
        }
        if args.nodes <= HUB_POLICY_NODES_ABOVE {
            bail!(
                "--policy hub needs --nodes above {HUB_POLICY_NODES_ABOVE}, so that the hub (the nodes in {}) is not the whole tailnet",
                admin::HUB
            );
        }
    }
    for s in &scenarios {
        if ![
            "join", "steady", "fanout", "storm", "churn", "narrow", "hold",
        ]
        .contains(&s.as_str())
        {
            bail!("unknown scenario {s:?}");
        }
    }
    if let Some(at) = scenarios.iter().position(|s| s == "narrow") {
        if at + 1 != scenarios.len() || args.policy != PolicyMode::None {
            bail!(
                "the narrow scenario leaves the hub policy in force: it runs last, with no --policy"
            );
        }
        if args.nodes <= HUB_POLICY_NODES_ABOVE {
            bail!(
                "the narrow scenario needs --nodes above {HUB_POLICY_NODES_ABOVE}, so that there are spokes"
            );
        }
    }
    let server_pub = oxiscale_noise::client::fetch_server_key(&args.url)
        .await
        .context("fetching the server's Noise key from /key")?;
    let ctx = Arc::new(Ctx {
        url: args.url.trim_end_matches('/').to_owned(),
        server_pub,
        auth_key: args.auth_key.clone(),
        start: Instant::now(),
        probes: Default::default(),
        collect_limit: args.collect_limit,
        decode_errors: AtomicU64::new(0),
    });
    if hold {
        return hold::run(ctx, args.hostname, args.routes).await;
    }
    let sampler = Arc::new(Sampler {
        server: args.server_pid.map(|p| Proc::new(Some(p))),
        peak_rss: AtomicU64::new(0),
    });
    let nodes: Vec<Arc<SimNode>> = (0..args.nodes)
        .map(|i| Arc::new(SimNode::new(i, false)))
        .collect();
    let bench = Arc::new(Bench {
        timeout: Duration::from_secs(args.phase_timeout_secs),
        next_index: AtomicU64::new(args.nodes as u64),
        nodes,
        ctx,
        sampler,
        args,
    });
    println!(
        "oxiscale-loadgen: {} nodes against {} (server pid {:?}), policy {}",
        bench.nodes.len(),
        bench.ctx.url,
        bench.args.server_pid,
        match bench.args.policy {
            PolicyMode::None => "none (everyone sees everyone)".to_owned(),
            PolicyMode::Hub => format!("hub (everyone sees the nodes in {})", admin::HUB),
        }
    );
    if let (PolicyMode::Hub, Some(api_key)) = (bench.args.policy, &bench.args.api_key) {
        admin::set_policy(&bench.ctx.url, api_key, &admin::hub_policy(None))
            .await
            .context("putting the hub policy in force")?;
    }
    let mut report = json!({"nodes": bench.nodes.len(), "url": bench.ctx.url,
        "policy": bench.args.policy});
    report["join"] = bench.join().await;
    for s in &scenarios {
        report[s.as_str()] = match s.as_str() {
            "join" => continue,
            "steady" => bench.steady().await,
            "fanout" => bench.fanout().await,
            "storm" => bench.storm().await,
            "churn" => bench.churn().await,
            "narrow" => bench.narrow().await,
            _ => unreachable!("checked above"),
        };
    }
    let (bytes, messages, _) = bench.totals();
    let head_only: u64 = bench
        .nodes
        .iter()
        .map(|n| n.head_only.load(Ordering::Relaxed))
        .sum();
    let undecoded: u64 = bench
        .nodes
        .iter()
        .map(|n| n.undecoded.load(Ordering::Relaxed))
        .sum();
    let peers = bench
        .nodes
        .iter()
        .map(|n| n.last_peer_count.load(Ordering::Relaxed))
        .max();
    report["totals"] = json!({"bytes": bytes, "messages": messages, "head_only_messages": head_only,
        "undecoded_messages": undecoded,
        "decode_errors": bench.ctx.decode_errors.load(Ordering::Relaxed), "max_peer_count_seen": peers});
    println!(
        "== totals: {messages} messages, {} received, {head_only} decoded head-only, {undecoded} not decoded (no probe open), {} decode errors, largest peer list decoded {:?}",
        mib(bytes),
        bench.ctx.decode_errors.load(Ordering::Relaxed),
        peers
    );
    for n in &bench.nodes {
        n.disconnect();
    }
    if let Some(path) = &bench.args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
