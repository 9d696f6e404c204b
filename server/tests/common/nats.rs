//! A three-node NATS JetStream cluster on loopback, for cluster mode's tests (used by the
//! relay's integration tests and, through `#[path]`, by the JetStream engine's unit tests).
//!
//! Needs the `nats-server` binary named by `AETHERFLOW_NATS_SERVER`; `tests/nats-server.sh`
//! installs the pinned one and prints its path.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Three `nats-server` processes clustered on loopback, each with JetStream in its own
/// directory; killed when dropped.
pub struct NatsCluster {
    servers: Vec<Child>,
    /// Client URLs, one per server.
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}

impl NatsCluster {
    /// Starts the cluster and waits until JetStream has a meta leader. Ports are picked free
    /// and then handed to the servers, so another process (a relay of a test running in
    /// parallel) may take one in between: a cluster that does not come up in 15 s is stopped
    /// and started again on fresh ports, up to three times.
    pub async fn start() -> NatsCluster {
        let binary = std::env::var_os("AETHERFLOW_NATS_SERVER").map(PathBuf::from).expect(
            "AETHERFLOW_NATS_SERVER must name a nats-server binary (tests/nats-server.sh prints one)",
        );
        for _ in 0..3 {
            let cluster = NatsCluster::spawn(&binary);
            if cluster.wait_for_jetstream(Duration::from_secs(15)).await {
                return cluster;
            }
            eprintln!("the NATS cluster did not elect a leader in 15 s; starting it again");
        }
        panic!("the JetStream cluster did not elect a leader in three tries of 15 s");
    }

    /// Three servers on fresh ports, not yet waited for.
    fn spawn(binary: &PathBuf) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let servers = (0..3)
            .map(|i| {
                let store = dir.path().join(format!("n{i}"));
                Command::new(binary)
                    .args(["--addr", "127.0.0.1", "--port"])
                    .arg(client_ports[i].to_string())
                    .args([
                        "--server_name",
                        &format!("n{i}"),
                        "--jetstream",
                        "--store_dir",
                    ])
                    .arg(&store)
                    .args(["--cluster_name", "aetherflow-test", "--cluster"])
                    .arg(format!("nats://127.0.0.1:{}", cluster_ports[i]))
                    .args(["--routes", &routes.join(",")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("nats-server starts")
            })
            .collect();
        let urls = client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        NatsCluster {
            servers,
            urls,
            _dir: dir,
        }
    }

    /// Kills server `index` (`n0`, `n1`, `n2`) with SIGKILL.
    pub fn kill(&mut self, index: usize) {
        let _ = self.servers[index].kill();
        let _ = self.servers[index].wait();
    }

    /// The index of the server leading `stream`, once it has a leader.
    pub async fn leader_of(&self, stream: &str) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(js) = self.jetstream().await
                && let Ok(info) = js.get_stream(stream).await.map(|s| s.cached_info().clone())
                && let Some(leader) = info.cluster.and_then(|c| c.leader)
                && let Some(index) = leader.strip_prefix('n').and_then(|n| n.parse().ok())
            {
                return index;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {stream} has no leader after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A JetStream context on the cluster, if a server answers.
    async fn jetstream(&self) -> Option<async_nats::jetstream::Context> {
        let servers: Vec<async_nats::ServerAddr> = self
            .urls
            .iter()
            .map(|u| u.parse().expect("a valid URL"))
            .collect();
        let client = async_nats::connect(servers).await.ok()?;
        Some(async_nats::jetstream::new(client))
    }

    /// All client URLs, comma-separated.
    pub fn url(&self) -> String {
        self.urls.join(",")
    }

    /// Whether JetStream answers (it has a meta leader) within `patience`.
    async fn wait_for_jetstream(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            if let Some(js) = self.jetstream().await
                && js.query_account().await.is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}
