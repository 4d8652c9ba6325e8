//! Crashes and disks: the built binary as a child process, killed with SIGKILL in a burst of
//! registrations, stopped and started again under 1,000 connected nodes, and run with its
//! data directory on a tmpfs that fills up.

mod child;
mod fleet;
mod tmpfs;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use child::Launch;
use fleet::{Failure, Registered, SelfNode, SimNode};
use oxiscale_noise::client::fetch_server_key;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One heavy test at a time: they measure times, and each loads both cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Prints a measurement or a skip past libtest's capture of `println!`, so that it shows in
/// `scripts/test`'s output when the test passes.
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "crash: {line}");
}

/// `100.64.0.7/32` and `100.64.0.7` are the same address.
fn bare(addresses: &[String]) -> Vec<String> {
    let mut out: Vec<String> = addresses
        .iter()
        .map(|a| a.split('/').next().unwrap_or(a).to_owned())
        .collect();
    out.sort();
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// node key → addresses, as `nodes list` shows them.
async fn listed(launch: &Launch) -> HashMap<String, Vec<String>> {
    launch
        .nodes()
        .await
        .iter()
        .map(|n| {
            (
                n["node_key"].as_str().unwrap_or_default().to_owned(),
                bare(&strings(&n["ip_addresses"])),
            )
        })
        .collect()
}

/// What stays the same about a node while nothing is written: not its `last_seen`.
fn identities(nodes: &[Value]) -> Vec<Value> {
    nodes
        .iter()
        .map(|n| {
            json!({"id": n["id"], "given_name": n["given_name"], "node_key": n["node_key"],
                   "ip_addresses": n["ip_addresses"], "user": n["user"]["name"]})
        })
        .collect()
}

const BURST: usize = 1_000;
const BURST_CONCURRENCY: usize = 64;
/// Answered registrations before the kill: well inside the burst.
const KILL_AFTER: usize = 400;

/// What one node of the burst got before the server died.
struct BurstNode {
    node: SimNode,
    registered: Option<Registered>,
    /// Its own entry in its first map, when that came too (the address it was told).
    told: Option<SelfNode>,
    failure: Option<Failure>,
}

/// SIGKILL in the middle of 1,000 registrations: every registration answered as authorized
/// is on disk after a restart, with the address its node was told, and the node carries on
/// with its key: no login asked, its map served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_registration_burst_loses_no_answered_registration() {
    let _serial = SERIAL.lock().await;
    let launch = Launch::fresh("crash");
    let server = launch.start().await;
    let auth_key = launch.user_and_key("alice").await;
    let url = launch.url();
    let noise = fetch_server_key(&url).await.unwrap();

    let authorized = Arc::new(AtomicUsize::new(0));
    let (kill_now, kill_signal) = tokio::sync::oneshot::channel::<()>();
    let kill_now = Arc::new(std::sync::Mutex::new(Some(kill_now)));
    let killer = tokio::spawn({
        let authorized = authorized.clone();
        async move {
            let _ = kill_signal.await;
            let seen = authorized.load(Ordering::SeqCst);
            let started = Instant::now();
            server.kill();
            (seen, started.elapsed())
        }
    });

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(BURST_CONCURRENCY));
    let mut burst = JoinSet::new();
    for i in 0..BURST {
        let (url, auth_key, permits) = (url.clone(), auth_key.clone(), permits.clone());
        let (authorized, kill_now) = (authorized.clone(), kill_now.clone());
        burst.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let mut out = BurstNode {
                node: SimNode::new(format!("burst-{i}")),
                registered: None,
                told: None,
                failure: None,
            };
            let mut link = match out.node.connect(&url, noise).await {
                Ok(link) => link,
                Err(f) => {
                    out.failure = Some(f);
                    return out;
                }
            };
            match link.register(&out.node, Some(&auth_key)).await {
                Ok(r) => {
                    if r.machine_authorized
                        && authorized.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER
                        && let Some(kill) = kill_now.lock().unwrap().take()
                    {
                        let _ = kill.send(());
                    }
                    out.registered = Some(r);
                }
                Err(f) => {
                    out.failure = Some(f);
                    return out;
                }
            }
            match link.map_once(&out.node).await {
                Ok(me) => out.told = Some(me),
                Err(f) => out.failure = Some(f),
            }
            out
        });
    }
    let mut nodes = Vec::with_capacity(BURST);
    while let Some(n) = burst.join_next().await {
        nodes.push(n.unwrap());
    }
    let burst_time = started.elapsed();
    drop(kill_now);
    let (authorized_at_kill, kill_took) = tokio::time::timeout(Duration::from_secs(5), killer)
        .await
        .expect("the burst reached the kill point")
        .unwrap();

    let refused: Vec<_> = nodes
        .iter()
        .filter_map(|n| n.registered.as_ref().filter(|r| !r.machine_authorized))
        .collect();
    assert!(
        refused.is_empty(),
        "a pre-auth key registration was answered without authorization: {refused:?}"
    );
    let acked: Vec<&BurstNode> = nodes.iter().filter(|n| n.registered.is_some()).collect();
    let unanswered = BURST - acked.len();
    assert!(
        acked.len() >= KILL_AFTER && unanswered > 0,
        "the kill must cut the burst: {} of {BURST} answered",
        acked.len()
    );
    let told = acked.iter().filter(|n| n.told.is_some()).count();
    let answered = acked.len();
    let cut_off = nodes
        .iter()
        .find(|n| n.registered.is_none())
        .and_then(|n| n.failure.clone())
        .map_or_else(String::new, |f| f.to_string());

    let restarted = Instant::now();
    let server = launch.start().await;
    let restart_time = restarted.elapsed();

    // On disk: every answered registration, with the address its node was told.
    let present = listed(&launch).await;
    let mut missing = Vec::new();
    for n in &acked {
        let key = n.node.node_key.to_string();
        match (present.get(&key), &n.told) {
            (None, _) => missing.push(format!("{key}: not present")),
            (Some(addresses), Some(me)) if *addresses != bare(&me.addresses) => missing.push(
                format!("{key}: told {:?}, stored {addresses:?}", me.addresses),
            ),
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {answered} answered registrations lost or changed by the SIGKILL: {:?}{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        server.log_tail()
    );

    // Each of them carries on with its keys: its register (as a restarting client sends it,
    // without an auth key) is authorized with no login URL, its map says who it is.
    let permits = Arc::new(Semaphore::new(BURST_CONCURRENCY));
    let mut checks = JoinSet::new();
    for n in nodes.into_iter().filter(|n| n.registered.is_some()) {
        let (url, permits) = (url.clone(), permits.clone());
        checks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let key = n.node.node_key.to_string();
            let mut link = n
                .node
                .connect(&url, noise)
                .await
                .map_err(|f| format!("{key}: reconnect: {f}"))?;
            let r = link
                .register(&n.node, None)
                .await
                .map_err(|f| format!("{key}: register: {f}"))?;
            if !r.machine_authorized || !r.auth_url.is_empty() || !r.error.is_empty() {
                return Err(format!("{key}: asked to log in again: {r:?}"));
            }
            let me = link
                .map_once(&n.node)
                .await
                .map_err(|f| format!("{key}: map: {f}"))?;
            if me.key != key || n.told.as_ref().is_some_and(|t| t.addresses != me.addresses) {
                return Err(format!("{key}: map shows {me:?}, before {:?}", n.told));
            }
            Ok(())
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = checks.join_next().await {
        if let Err(e) = r.unwrap() {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} answered nodes could not carry on after the restart: {:?}{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        server.log_tail()
    );
    report(&format!(
        "SIGKILL at {authorized_at_kill} authorized registrations ({kill_took:?} to kill; burst of \
         {BURST}, {BURST_CONCURRENCY} at once, {:.1} s): {} answered ({told} also had their \
         map), {unanswered} not; after the restart {} nodes present ({} of the unanswered), \
         all {} answered present with the same key and address and back without a login; \
         restart to /health {:.2} s; an unanswered one: {cut_off}",
        burst_time.as_secs_f64(),
        answered,
        present.len(),
        present.len() - answered,
        answered,
        restart_time.as_secs_f64()
    ));
    drop(server);
    std::fs::remove_dir_all(launch.data.parent().unwrap()).ok();
}

const HELD: usize = 1_000;
const JOIN_CONCURRENCY: usize = 64;
/// Reconnect backoff of the simulated clients: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// Where each held node is: the time (µs since `epoch`) its current stream delivered its
/// first map, 0 while it has none; and its last failure.
struct Presence {
    epoch: Instant,
    back: Vec<AtomicU64>,
    last_failure: std::sync::Mutex<Vec<Option<String>>>,
}

impl Presence {
    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// How many have a stream whose first map came after `since`.
    fn back_since(&self, since: u64) -> usize {
        self.back
            .iter()
            .filter(|b| b.load(Ordering::Acquire) > since)
            .count()
    }
}

/// A node as a Tailscale client runs: registers once with the pre-auth key, then holds its
/// map stream and, when it ends or fails, dials again after a backoff (never registering
/// again: it has its keys).
async fn hold(
    i: usize,
    url: String,
    noise: oxiscale_tailcfg::MachinePublic,
    auth_key: String,
    join: Arc<Semaphore>,
    presence: Arc<Presence>,
) {
    let node = SimNode::new(format!("held-{i}"));
    let mut registered = false;
    let mut backoff = BACKOFF.0;
    loop {
        let attempt = async {
            let mut link = node.connect(&url, noise).await?;
            if !registered {
                let _permit = join.acquire().await.unwrap();
                let r = link.register(&node, Some(&auth_key)).await?;
                if !r.machine_authorized {
                    return Err(Failure::Status(200, format!("not authorized: {r:?}")));
                }
                registered = true;
            }
            let mut stream = link.open_stream(&node).await?;
            fleet::first_map(&mut stream).await?;
            presence.back[i].store(presence.micros(), Ordering::Release);
            backoff = BACKOFF.0;
            fleet::drain(&mut stream).await;
            presence.back[i].store(0, Ordering::Release);
            Ok::<_, Failure>(())
        };
        if let Err(f) = attempt.await {
            presence.last_failure.lock().unwrap()[i] = Some(f.to_string());
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Waits until every node has a stream that began after `since` and the server counts all
/// of them online; returns (all streams back, server sees all online) times from `t0`.
async fn all_back(
    launch: &Launch,
    presence: &Presence,
    since: u64,
    t0: Instant,
    limit: Duration,
) -> (Duration, Duration) {
    let streams = loop {
        let back = presence.back_since(since);
        if back == HELD {
            break t0.elapsed();
        }
        if t0.elapsed() > limit {
            let failures = presence.last_failure.lock().unwrap();
            let sample: Vec<&String> = failures.iter().flatten().take(5).collect();
            panic!("only {back} of {HELD} nodes back after {limit:?}; last failures: {sample:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    loop {
        let nodes = launch.nodes().await;
        let online = nodes.iter().filter(|n| n["online"] == json!(true)).count();
        if online == HELD && nodes.len() == HELD {
            return (streams, t0.elapsed());
        }
        assert!(
            t0.elapsed() <= limit,
            "the server sees {online} of {} nodes online after {limit:?}",
            nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 1,000 nodes hold their map streams; the server is stopped (SIGTERM, then SIGKILL) and
/// started again: every node has a new stream with its map, without logging in again,
/// and the server sees all of them online, within 30 s of the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_1000_nodes_connected_has_them_back_within_30_s() {
    const LIMIT: Duration = Duration::from_secs(30);
    let _serial = SERIAL.lock().await;
    // Both ends of 1,000 connections live on this machine.
    if let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard);
    }
    let launch = Launch::fresh("restart");
    let mut server = launch.start().await;
    let auth_key = launch.user_and_key("alice").await;
    let url = launch.url();
    let noise = fetch_server_key(&url).await.unwrap();
    let presence = Arc::new(Presence {
        epoch: Instant::now(),
        back: (0..HELD).map(|_| AtomicU64::new(0)).collect(),
        last_failure: std::sync::Mutex::new(vec![None; HELD]),
    });
    let join = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let mut fleet = JoinSet::new();
    let t0 = Instant::now();
    for i in 0..HELD {
        fleet.spawn(hold(
            i,
            url.clone(),
            noise,
            auth_key.clone(),
            join.clone(),
            presence.clone(),
        ));
    }
    let (joined, joined_online) =
        all_back(&launch, &presence, 0, t0, Duration::from_secs(180)).await;
    report(&format!(
        "{HELD} nodes joined: all streams after {:.1} s, all online after {:.1} s",
        joined.as_secs_f64(),
        joined_online.as_secs_f64()
    ));

    for how in ["SIGTERM", "SIGKILL"] {
        let since = presence.micros();
        let t0 = Instant::now();
        match how {
            "SIGTERM" => server.terminate().await,
            _ => server.kill(),
        }
        let stopped = t0.elapsed();
        server = launch.start().await;
        let healthy = t0.elapsed();
        let (streams, online) = all_back(&launch, &presence, since, t0, LIMIT).await;
        report(&format!(
            "restart by {how} with {HELD} nodes connected: stopped after {:.2} s, /health after \
             {:.2} s, every stream back with its map after {:.2} s, server sees all {HELD} \
             online after {:.2} s (from the signal)",
            stopped.as_secs_f64(),
            healthy.as_secs_f64(),
            streams.as_secs_f64(),
            online.as_secs_f64()
        ));
    }
    fleet.abort_all();
    drop(server);
    std::fs::remove_dir_all(launch.data.parent().unwrap()).ok();
}

/// The data directory on a small tmpfs, filled: registrations and administrative writes
/// fail with a clear error (not "unauthorized"), nothing of them is stored, the server
/// stays up and healthy; once space is back, the same writes succeed and what was there
/// before is intact, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_clear_errors_and_the_server_recovers() {
    let _serial = SERIAL.lock().await;
    let mut launch = Launch::fresh("disk");
    std::fs::create_dir_all(&launch.data).unwrap();
    let tmpfs = match tmpfs::PrivateTmpfs::mount(&launch.data, "16m") {
        Ok(t) => t,
        Err(why) => {
            report(&format!(
                "SKIPPED a_full_disk_gives_clear_errors_and_the_server_recovers: cannot mount a \
                 tmpfs in a private mount namespace here (unshare --mount needs root or \
                 CAP_SYS_ADMIN): {why}"
            ));
            std::fs::remove_dir_all(launch.data.parent().unwrap()).ok();
            return;
        }
    };
    launch.prefix = tmpfs.enter();
    let mut server = launch.start().await;
    let url = launch.url();
    let auth_key = launch.user_and_key("alice").await;
    let api_key = launch.cli_json(&["apikeys", "create"]).await;
    let api_key = api_key.as_str().expect("the API key").to_owned();
    let noise = fetch_server_key(&url).await.unwrap();

    let mut before = Vec::new();
    for i in 0..3 {
        let node = SimNode::new(format!("before-{i}"));
        let mut link = node.connect(&url, noise).await.unwrap();
        let r = link.register(&node, Some(&auth_key)).await.unwrap();
        assert!(r.machine_authorized, "{r:?}");
        let me = link.map_once(&node).await.unwrap();
        before.push((node, me));
    }
    let listed_before = identities(&launch.nodes().await);
    let first_id = listed_before[0]["id"].as_u64().unwrap().to_string();

    // A node holding its map stream through it all.
    let (holder, _) = &before[1];
    let mut held_link = holder.connect(&url, noise).await.unwrap();
    let mut held = held_link.open_stream(holder).await.unwrap();
    let held_rest = fleet::first_map(&mut held).await.unwrap();

    let filled = tmpfs.fill("filler");
    assert!(filled > 0, "the tmpfs had room to fill");

    // A registration: "not now" (the client retries), with a reason, never "unauthorized".
    let during = SimNode::new("during".into());
    let mut link = during.connect(&url, noise).await.unwrap();
    let register_answer = match link.register(&during, Some(&auth_key)).await {
        Err(Failure::Status(status, reason)) => {
            assert!(
                status >= 500 && status != 501,
                "a registration on a full disk answered {status}: {reason}"
            );
            assert!(!reason.trim().is_empty(), "{status} without a reason");
            format!("{status} {reason}")
        }
        other => panic!("a registration on a full disk answered {other:?}"),
    };
    // A known node's map request is served or put off, never answered with "log in
    // again" (every map request stores the node's last_seen, so a full disk puts it off).
    let (node, me) = &before[0];
    let mut known = node.connect(&url, noise).await.unwrap();
    let map_answer = match known.map_once(node).await {
        Ok(seen) => {
            assert_eq!(&seen, me);
            "served".to_owned()
        }
        Err(Failure::Status(status, reason)) if status >= 500 && status != 501 => {
            format!("{status} {reason}")
        }
        Err(other) => panic!("a known node's map request on a full disk: {other}"),
    };
    // The API and the CLI say what is wrong.
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{url}/api/v1/user"))
        .bearer_auth(&api_key)
        .json(&json!({"name": "bob"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(
        status.is_server_error() && body["message"].as_str().unwrap_or("").contains("full"),
        "creating a user on a full disk over the API: {status} {body}"
    );
    let mut cli_answers = Vec::new();
    for args in [
        &["users", "create", "carol"][..],
        &["nodes", "rename", "-i", &first_id, "renamed"][..],
    ] {
        let out = launch.cli(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("full"),
            "oxiscale {args:?} on a full disk: {:?}: {stderr}",
            out.status
        );
        cli_answers.push(stderr.trim().to_owned());
    }
    // Up, healthy, and nothing half-applied.
    assert!(server.running(), "the server exited: {}", server.log_tail());
    assert!(server.healthy().await, "/health on a full disk");
    let users = launch.cli_json(&["users", "list"]).await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["alice"],
        "only what was stored before the disk filled"
    );
    assert_eq!(
        identities(&launch.nodes().await),
        listed_before,
        "the nodes as they were before the disk filled"
    );

    std::fs::remove_file(tmpfs.path("filler")).unwrap();

    // Space is back: the same writes succeed at once.
    let r = link.register(&during, Some(&auth_key)).await.unwrap();
    assert!(r.machine_authorized, "{r:?}");
    let during_me = link.map_once(&during).await.unwrap();
    let res = http
        .post(format!("{url}/api/v1/user"))
        .bearer_auth(&api_key)
        .json(&json!({"name": "bob"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    launch.cli_json(&["users", "create", "carol"]).await;
    // The stream held since before the disk filled is still open and hears of the newcomer.
    tokio::time::timeout(
        Duration::from_secs(10),
        fleet::until_mentions(&mut held, held_rest, &during.node_key.to_string()),
    )
    .await
    .expect("the held stream hears of the node that joined once space was back")
    .expect("the stream held through the full disk stays open");
    drop(held_link);
    for (node, me) in &before {
        let mut link = node.connect(&url, noise).await.unwrap();
        assert_eq!(&link.map_once(node).await.unwrap(), me);
    }

    // And it is all on disk, the earlier nodes as they were.
    server.terminate().await;
    let server = launch.start().await;
    let users = launch.cli_json(&["users", "list"]).await;
    let mut names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let present = listed(&launch).await;
    assert_eq!(present.len(), 4, "{present:?}");
    for (node, me) in before
        .iter()
        .map(|(n, m)| (n, m))
        .chain([(&during, &during_me)])
    {
        assert_eq!(
            present.get(&node.node_key.to_string()),
            Some(&bare(&me.addresses)),
            "{}",
            node.hostname
        );
    }
    report(&format!(
        "full disk ({filled} bytes of filler on a 16 MiB tmpfs): register answered {register_answer:?}; \
         a known node's map request {map_answer:?}; API {status} {body}; CLI {cli_answers:?}; /health up, a held map stream kept; after \
         freeing, writes succeed and the state survives a restart"
    ));
    drop(server);
    drop(tmpfs);
    std::fs::remove_dir_all(launch.data.parent().unwrap()).ok();
}
