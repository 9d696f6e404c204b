//! The thin layer around [`LinkModel`]: two network namespaces, a TUN device in each, and one
//! forwarding task per direction that reads IP packets from one TUN, passes them through that
//! direction's model and writes them to the other TUN when they are due.
//!
//! Needs root (`CAP_NET_ADMIN`), `/dev/net/tun` and the `ip` tool (iproute2).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_tun::Tun;
use tokio_util::sync::CancellationToken;

use super::model::{Fate, LinkConfig, LinkConfigError, LinkModel};
use super::packet::Flow;

/// Largest IP packet a TUN device hands over (its MTU is 1500, but GSO-free TUN never exceeds
/// 64 KiB).
const MAX_PACKET: usize = 65_536;

/// Which way a packet crosses the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From namespace A to namespace B.
    AToB,
    /// From namespace B to namespace A.
    BToA,
}

/// Everything needed to build one emulated link.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    /// Prefix of the namespaces and TUN devices: `NAME-a` and `NAME-b`. At most 12 characters
    /// of `[a-z0-9-]`, so the devices' names fit Linux's 15-character limit.
    pub name: String,
    /// The link's addresses are `10.77.SUBNET.1` (in A) and `10.77.SUBNET.2` (in B).
    pub subnet: u8,
    /// What happens to packets going from A to B.
    pub a_to_b: LinkConfig,
    /// What happens to packets going from B to A.
    pub b_to_a: LinkConfig,
    /// Seed of the A→B model; B→A uses the next seed, so the directions are independent.
    pub seed: u64,
}

impl LinkSpec {
    /// A link with the same configuration both ways.
    pub fn symmetric(name: &str, subnet: u8, config: LinkConfig, seed: u64) -> Self {
        Self {
            name: name.to_owned(),
            subnet,
            a_to_b: config.clone(),
            b_to_a: config,
            seed,
        }
    }

    /// The namespace (and TUN device) on side A.
    pub fn namespace_a(&self) -> String {
        format!("{}-a", self.name)
    }

    /// The namespace (and TUN device) on side B.
    pub fn namespace_b(&self) -> String {
        format!("{}-b", self.name)
    }

    /// The address of side A.
    pub fn addr_a(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// The address of side B.
    pub fn addr_b(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 2)
    }

    fn validate(&self) -> Result<(), EmulatorError> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if self.name.is_empty() || self.name.len() > 12 || !self.name.chars().all(valid_char) {
            return Err(EmulatorError::BadName(self.name.clone()));
        }
        self.a_to_b.validate()?;
        self.b_to_a.validate()?;
        Ok(())
    }
}

/// Why a link could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// One direction's configuration is impossible.
    #[error("bad link configuration: {0}")]
    BadConfig(#[from] LinkConfigError),
    /// The name cannot prefix namespace and interface names.
    #[error("link name {0:?} must be 1 to 12 characters of [a-z0-9-]")]
    BadName(String),
    /// An `ip` command could not be run (is iproute2 installed?).
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// An `ip` command failed (are we root?).
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The TUN device could not be created (needs root and `/dev/net/tun`).
    #[error("could not create TUN device {name}: {source}")]
    Tun {
        /// The device name.
        name: String,
        /// The driver's error.
        source: tokio_tun::Error,
    },
}

/// Packet and byte counts of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets that entered the link.
    pub packets_in: u64,
    /// IP bytes that entered the link (what the sender put on the wire).
    pub bytes_in: u64,
    /// Packets the loss model dropped.
    pub packets_dropped: u64,
    /// Packets written out the far side.
    pub packets_out: u64,
    /// IP bytes written out the far side.
    pub bytes_out: u64,
    /// Packets the far side's TUN refused (e.g. while it was going down).
    pub write_errors: u64,
    /// Packets still in the delay line when forwarding stopped.
    pub packets_held: u64,
}

/// IP bytes that entered the link for one flow, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowBytes {
    /// Bytes sent from A to B.
    pub a_to_b: u64,
    /// Bytes sent from B to A.
    pub b_to_a: u64,
}

/// What crossed a link so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Counts from A to B.
    pub a_to_b: DirectionStats,
    /// Counts from B to A.
    pub b_to_a: DirectionStats,
    /// Bytes that entered the link, per flow.
    pub flows: BTreeMap<Flow, FlowBytes>,
}

impl LinkStats {
    fn direction(&mut self, direction: Direction) -> &mut DirectionStats {
        match direction {
            Direction::AToB => &mut self.a_to_b,
            Direction::BToA => &mut self.b_to_a,
        }
    }

    fn record_in(&mut self, direction: Direction, packet: &[u8], fate: Fate) {
        let len = packet.len() as u64;
        let d = self.direction(direction);
        d.packets_in += 1;
        d.bytes_in += len;
        if fate == Fate::Dropped {
            d.packets_dropped += 1;
        }
        let flow = self.flows.entry(Flow::of(packet)).or_default();
        match direction {
            Direction::AToB => flow.a_to_b += len,
            Direction::BToA => flow.b_to_a += len,
        }
    }
}

/// A running emulated link. Dropping it stops forwarding and deletes its namespaces.
pub struct Link {
    spec: LinkSpec,
    stats: Arc<Mutex<LinkStats>>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _namespaces: Namespaces,
}

impl Link {
    /// Builds the namespaces and TUN devices and starts forwarding. Namespaces left behind by
    /// a crashed run under the same name are deleted first. Must be called inside a tokio
    /// runtime with IO and time enabled.
    pub fn start(spec: LinkSpec) -> Result<Link, EmulatorError> {
        spec.validate()?;
        let model_ab = LinkModel::new(spec.a_to_b.clone(), spec.seed)?;
        let model_ba = LinkModel::new(spec.b_to_a.clone(), spec.seed.wrapping_add(1))?;
        let namespaces = Namespaces::create(&[spec.namespace_a(), spec.namespace_b()])?;
        let tun_a = Arc::new(plug_tun(&spec.namespace_a(), spec.addr_a())?);
        let tun_b = Arc::new(plug_tun(&spec.namespace_b(), spec.addr_b())?);
        let stats = Arc::new(Mutex::new(LinkStats::default()));
        let cancel = CancellationToken::new();
        let forward = |from: &Arc<Tun>, to: &Arc<Tun>, model, direction| {
            let forwarder = Forwarder {
                from: from.clone(),
                to: to.clone(),
                model,
                direction,
                stats: stats.clone(),
            };
            tokio::spawn(forwarder.run(cancel.clone()))
        };
        let tasks = vec![
            forward(&tun_a, &tun_b, model_ab, Direction::AToB),
            forward(&tun_b, &tun_a, model_ba, Direction::BToA),
        ];
        Ok(Link {
            spec,
            stats,
            cancel,
            tasks,
            _namespaces: namespaces,
        })
    }

    /// The specification this link was built from.
    pub fn spec(&self) -> &LinkSpec {
        &self.spec
    }

    /// A snapshot of what crossed the link so far.
    pub fn stats(&self) -> LinkStats {
        lock(&self.stats).clone()
    }

    /// A command that runs `program` inside namespace A (`ip netns exec NAME-a program`).
    pub fn command_in_a(&self, program: &str) -> tokio::process::Command {
        in_namespace(&self.spec.namespace_a(), program)
    }

    /// A command that runs `program` inside namespace B.
    pub fn command_in_b(&self, program: &str) -> tokio::process::Command {
        in_namespace(&self.spec.namespace_b(), program)
    }

    /// Stops forwarding, deletes the namespaces and returns the final counts.
    pub async fn shutdown(mut self) -> LinkStats {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            // A forwarder that panicked has nothing left to flush; its counts are in `stats`.
            let _ = task.await;
        }
        self.stats()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn in_namespace(namespace: &str, program: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("ip");
    command.args(["netns", "exec", namespace, program]);
    command
}

fn lock(stats: &Mutex<LinkStats>) -> MutexGuard<'_, LinkStats> {
    // Counters stay meaningful even if a holder panicked mid-update.
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One direction's packet pump.
struct Forwarder {
    from: Arc<Tun>,
    to: Arc<Tun>,
    model: LinkModel<Vec<u8>>,
    direction: Direction,
    stats: Arc<Mutex<LinkStats>>,
}

impl Forwarder {
    async fn run(mut self, cancel: CancellationToken) {
        let mut buf = vec![0u8; MAX_PACKET];
        loop {
            let next = self.model.next_release();
            let due = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    let held = self.model.held() as u64;
                    lock(&self.stats).direction(self.direction).packets_held = held;
                    return;
                }
                () = due => self.release_due().await,
                read = self.from.recv(&mut buf) => match read {
                    Ok(n) => self.offer(&buf[..n]),
                    Err(e) => {
                        tracing_free_warn(&format!("{:?}: TUN read failed: {e}", self.direction));
                        return;
                    }
                },
            }
        }
    }

    fn offer(&mut self, packet: &[u8]) {
        let fate = self
            .model
            .offer(Instant::now(), packet.to_vec(), packet.len());
        lock(&self.stats).record_in(self.direction, packet, fate);
    }

    async fn release_due(&mut self) {
        while let Some(packet) = self.model.pop_due(Instant::now()) {
            // The far side may be down for a moment (e.g. being reconfigured); a real link
            // loses the packet then too, so a failed write counts as not delivered.
            let written = self.to.send(&packet).await.is_ok();
            let mut stats = lock(&self.stats);
            let d = stats.direction(self.direction);
            if written {
                d.packets_out += 1;
                d.bytes_out += packet.len() as u64;
            } else {
                d.write_errors += 1;
            }
        }
    }
}

/// The benches crate has no tracing subscriber; a forwarder that stops says why on stderr.
fn tracing_free_warn(message: &str) {
    eprintln!("link emulator: {message}");
}

/// Creates the TUN device `name` in the root namespace, moves it into namespace `name` and
/// gives it `addr/24` there. The device lives as long as the returned handle.
fn plug_tun(name: &str, addr: Ipv4Addr) -> Result<Tun, EmulatorError> {
    let tun = Tun::builder()
        .name(name)
        .build()
        .map_err(|source| EmulatorError::Tun {
            name: name.to_owned(),
            source,
        })?
        .into_iter()
        .next()
        .ok_or_else(|| EmulatorError::Command {
            command: format!("create TUN {name}"),
            stderr: "the driver returned no queue".to_owned(),
        })?;
    ip(&["link", "set", "dev", name, "netns", name])?;
    // No IPv6 link-local address: its router solicitations would cross the link as noise.
    ip(&[
        "-n",
        name,
        "link",
        "set",
        "dev",
        name,
        "addrgenmode",
        "none",
    ])?;
    ip(&[
        "-n",
        name,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        name,
    ])?;
    ip(&["-n", name, "link", "set", "dev", name, "up"])?;
    ip(&["-n", name, "link", "set", "dev", "lo", "up"])?;
    Ok(tun)
}

/// Runs `ip ARGS`, turning a failure into an error that carries its stderr.
fn ip(args: &[&str]) -> Result<(), EmulatorError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| EmulatorError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(EmulatorError::Command {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Network namespaces that are deleted when this guard drops.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(names: &[String]) -> Result<Self, EmulatorError> {
        let mut created = Namespaces(Vec::new());
        for name in names {
            delete_namespace(name);
            ip(&["netns", "add", name])?;
            created.0.push(name.clone());
        }
        Ok(created)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            delete_namespace(name);
        }
    }
}

/// Deletes a namespace if it exists: a leftover of a crashed run, or ours at exit.
fn delete_namespace(name: &str) {
    // Absence is the goal, so "no such namespace" is not an error worth reporting.
    let _ = ip(&["netns", "del", name]);
}
