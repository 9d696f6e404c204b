//! A simulated network for two endpoints: virtual time stepped to the next event, and a
//! seeded link with loss, delay, jitter, reordering, duplication and, optionally, a bottleneck:
//! a rate limit with a finite tail-drop queue in each direction.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use aetherflow_quantum::crypto::Keypair;
use aetherflow_quantum::fec::FecHeader;
use aetherflow_quantum::packet::Flags;
use aetherflow_quantum::{Config, ConnectionId, Endpoint, Event, Packet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the link treats each datagram, the same in both directions.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Probability a datagram is dropped.
    pub loss: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from zero to this, so datagrams may overtake each other.
    pub jitter: Duration,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Bottleneck rate in bytes per second, if any; datagrams queue behind each other there.
    pub rate: Option<u64>,
    /// Bytes the bottleneck queue holds (the datagram being serialised included); a datagram
    /// that does not fit is dropped.
    pub queue_bytes: u64,
}

impl Link {
    pub fn clean(delay_ms: u64) -> Link {
        Link {
            loss: 0.0,
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::ZERO,
            duplicate: 0.0,
            rate: None,
            queue_bytes: u64::MAX,
        }
    }

    /// A clean link through a bottleneck of `rate` bytes/s with a queue of `queue_bytes`.
    pub fn bottleneck(delay_ms: u64, rate: u64, queue_bytes: u64) -> Link {
        Link {
            rate: Some(rate),
            queue_bytes,
            ..Link::clean(delay_ms)
        }
    }
}

/// One direction's bottleneck queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Queue {
    /// When the bottleneck finishes sending what is queued.
    busy_until: Option<Instant>,
    /// Most bytes ever queued at once, the arriving datagram included.
    pub max_backlog: u64,
    /// Datagrams dropped because the queue was full.
    pub drops: u64,
}

impl Queue {
    /// Queues `len` bytes arriving at `now`; returns when they leave the bottleneck, or
    /// `None` if the queue is full.
    fn enqueue(&mut self, now: Instant, len: u64, rate: u64, capacity: u64) -> Option<Instant> {
        let busy = self.busy_until.filter(|&b| b > now).unwrap_or(now);
        let backlog = ((busy - now).as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
        if backlog + len > capacity {
            self.drops += 1;
            return None;
        }
        self.max_backlog = self.max_backlog.max(backlog + len);
        let done = busy + Duration::from_nanos(len * 1_000_000_000 / rate);
        self.busy_until = Some(done);
        Some(done)
    }
}

/// A datagram on the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// What travels: sealed after the handshake.
    pub bytes: Vec<u8>,
    /// The packet inside, re-encoded in clear (as its sender's keys read it), for the
    /// tests' assertions about packet kinds and sequence numbers; empty if unreadable.
    pub plain: Vec<u8>,
}

/// The seed of the relay key every simulated server holds and every client pins.
pub const RELAY_KEY_SEED: u64 = 0x5e4e;

pub fn relay_key() -> Keypair {
    Keypair::from_seed(RELAY_KEY_SEED)
}

/// Decides, for tests that target one packet, whether the link drops it.
pub type DropRule = Box<dyn FnMut(Instant, &Datagram) -> bool>;

/// An attacker on the path: given each datagram the link carries, returns forged datagrams
/// (bytes) to deliver alongside it, from the same sender to the same receiver.
pub type Mangler = Box<dyn FnMut(&Datagram) -> Vec<Vec<u8>>>;

pub struct Sim {
    pub seed: u64,
    rng: ChaCha8Rng,
    pub start: Instant,
    pub now: Instant,
    pub client: Endpoint,
    pub server: Endpoint,
    pub client_addr: SocketAddr,
    pub server_addr: SocketAddr,
    pub link: Link,
    wire: BinaryHeap<Reverse<(Instant, u64, Datagram)>>,
    order: u64,
    pub client_events: Vec<(ConnectionId, Event)>,
    pub server_events: Vec<(ConnectionId, Event)>,
    /// Every datagram handed to the link, with its send time.
    pub sent: Vec<(Instant, Datagram)>,
    pub drop_rule: Option<DropRule>,
    /// Forged datagrams injected next to each real one.
    pub mangler: Option<Mangler>,
    /// The bottleneck queue towards the server.
    pub upstream: Queue,
    /// The bottleneck queue towards the client.
    pub downstream: Queue,
}

pub fn config(seed: u64) -> Config {
    let relay = relay_key();
    Config {
        seed,
        cookie_key: [7; 16],
        static_secret: Some(relay.secret),
        server_public_key: Some(relay.public),
        ..Config::default()
    }
}

impl Sim {
    pub fn new(seed: u64, link: Link) -> Sim {
        Sim::with_configs(
            seed,
            link,
            config(seed),
            Config {
                accept_incoming: true,
                ..config(seed ^ 0x5eed)
            },
        )
    }

    pub fn with_configs(seed: u64, link: Link, client: Config, server: Config) -> Sim {
        println!("simulation seed = {seed} (rerun with this seed to reproduce)");
        let start = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        Sim {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            start,
            now: start,
            client: Endpoint::new(client, start, wall).expect("valid client config"),
            server: Endpoint::new(server, start, wall).expect("valid server config"),
            client_addr: "192.0.2.1:5000".parse().expect("literal"),
            server_addr: "198.51.100.1:443".parse().expect("literal"),
            link,
            wire: BinaryHeap::new(),
            order: 0,
            client_events: Vec::new(),
            server_events: Vec::new(),
            sent: Vec::new(),
            drop_rule: None,
            mangler: None,
            upstream: Queue::default(),
            downstream: Queue::default(),
        }
    }

    /// Drops the client's data packets (retransmissions included) whose 1-based count since
    /// this call `drop_nth` picks.
    pub fn drop_client_data(&mut self, mut drop_nth: impl FnMut(usize) -> bool + 'static) {
        let client_addr = self.client_addr;
        let mut seen = 0;
        self.drop_rule = Some(Box::new(move |_, d: &Datagram| {
            if d.from != client_addr || data_seq(&d.plain).is_none() {
                return false;
            }
            seen += 1;
            drop_nth(seen)
        }));
    }

    pub fn connect(&mut self) -> ConnectionId {
        self.client.connect(self.now, self.server_addr)
    }

    fn put_on_wire(&mut self, datagram: Datagram) {
        self.sent.push((self.now, datagram.clone()));
        let forged = self
            .mangler
            .as_mut()
            .map(|m| m(&datagram))
            .unwrap_or_default();
        for bytes in forged {
            // Forgeries arrive with the original's delay, but never reach the mangler again.
            let at = self.now + self.link.delay;
            self.order += 1;
            let fake = Datagram {
                bytes,
                plain: Vec::new(),
                ..datagram.clone()
            };
            self.wire.push(Reverse((at, self.order, fake)));
        }
        let now = self.now;
        if self
            .drop_rule
            .as_mut()
            .is_some_and(|rule| rule(now, &datagram))
        {
            return;
        }
        if self.rng.random_bool(self.link.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.link.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter_ns = self.link.jitter.as_nanos() as u64;
            let jitter = Duration::from_nanos(if jitter_ns == 0 {
                0
            } else {
                self.rng.random_range(0..=jitter_ns)
            });
            let mut at = self.now;
            if let Some(rate) = self.link.rate {
                let queue = if datagram.to == self.server_addr {
                    &mut self.upstream
                } else {
                    &mut self.downstream
                };
                let len = datagram.bytes.len() as u64;
                let Some(done) = queue.enqueue(self.now, len, rate, self.link.queue_bytes) else {
                    continue;
                };
                at = done;
            }
            let at = at + self.link.delay + jitter;
            self.order += 1;
            self.wire.push(Reverse((at, self.order, datagram.clone())));
        }
    }

    fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit(self.now) {
            let datagram = Datagram {
                from: self.client_addr,
                to: t.destination,
                plain: plain(&self.client, &t.contents),
                bytes: t.contents,
            };
            self.put_on_wire(datagram);
        }
        while let Some(t) = self.server.poll_transmit(self.now) {
            let datagram = Datagram {
                from: self.server_addr,
                to: t.destination,
                plain: plain(&self.server, &t.contents),
                bytes: t.contents,
            };
            self.put_on_wire(datagram);
        }
        while let Some(event) = self.client.poll_event() {
            self.client_events.push(event);
        }
        while let Some(event) = self.server.poll_event() {
            self.server_events.push(event);
        }
    }

    /// The next arrival or timeout, once everything due has been sent.
    fn next_event(&mut self) -> Option<Instant> {
        self.flush();
        let arrival = self.wire.peek().map(|Reverse((at, _, _))| *at);
        [
            arrival,
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles every event up to `at`, then sets the clock to `at` (for actions at set times).
    pub fn advance_to(&mut self, at: Instant) {
        while self.next_event().is_some_and(|next| next <= at) {
            self.step();
        }
        self.now = self.now.max(at);
    }

    /// Advances to the next arrival or timeout; returns false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.step_capped(None)
    }

    /// Like [`Sim::step`], but never beyond `cap`: with nothing due by then, the clock stops
    /// at `cap`, so an application can act at exact times.
    pub fn step_capped(&mut self, cap: Option<Instant>) -> bool {
        let next = self.next_event();
        let Some(next) = next.map(|n| cap.map_or(n, |c| n.min(c))).or(cap) else {
            return false;
        };
        self.now = self.now.max(next);
        while self
            .wire
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= self.now)
        {
            let Some(Reverse((_, _, datagram))) = self.wire.pop() else {
                break;
            };
            if datagram.to == self.server_addr {
                self.server.handle(self.now, datagram.from, &datagram.bytes);
            } else if datagram.to == self.client_addr {
                self.client.handle(self.now, datagram.from, &datagram.bytes);
            }
        }
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.flush();
        true
    }

    /// Steps until `done` holds or `limit` of virtual time has passed; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = self.now + limit;
        while !done(self) {
            if self.now >= deadline || !self.step() {
                return done(self);
            }
        }
        true
    }

    /// Steps for `span` of virtual time.
    pub fn run_for(&mut self, span: Duration) {
        let deadline = self.now + span;
        while self.now < deadline && self.step() {}
    }

    /// Steps until exactly `span` of virtual time has passed.
    pub fn run_exactly(&mut self, span: Duration) {
        let deadline = self.now + span;
        while self.now < deadline && self.step_capped(Some(deadline)) {}
    }

    pub fn server_messages(&self) -> Vec<Vec<u8>> {
        messages(&self.server_events)
    }

    /// How many messages the server received, without copying them.
    pub fn server_message_count(&self) -> usize {
        self.server_events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Message(_)))
            .count()
    }

    pub fn client_messages(&self) -> Vec<Vec<u8>> {
        messages(&self.client_events)
    }

    pub fn connected(&self) -> bool {
        self.client_events
            .iter()
            .any(|(_, e)| *e == Event::Connected)
            && self
                .server_events
                .iter()
                .any(|(_, e)| *e == Event::Connected)
    }

    /// Connects and runs until both sides report the handshake done.
    pub fn establish(&mut self) -> ConnectionId {
        let id = self.connect();
        assert!(
            self.run_until(Duration::from_secs(30), Sim::connected),
            "handshake (seed {})",
            self.seed
        );
        id
    }
}

/// The packet `sender` sealed into `bytes`, re-encoded in clear.
fn plain(sender: &Endpoint, bytes: &[u8]) -> Vec<u8> {
    sender
        .inspect_sent(bytes)
        .and_then(|packet| packet.to_bytes().ok())
        .unwrap_or_default()
}

pub fn messages(events: &[(ConnectionId, Event)]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// A message whose bytes say which one it is, `len` bytes long.
pub fn numbered(n: u32, len: usize) -> Vec<u8> {
    let mut message = n.to_be_bytes().to_vec();
    message.extend((0..len.saturating_sub(4)).map(|i| (i as u32 ^ n) as u8));
    message.truncate(len.max(4));
    message
}

/// The sequence number of a data packet (message fragment or FIN), if `bytes` is one.
pub fn data_seq(bytes: &[u8]) -> Option<u32> {
    let packet = Packet::decode(bytes).ok()?;
    let flags = packet.header.flags;
    let control = Flags::SYN | Flags::URG | Flags::FEC;
    let data = !packet.payload.is_empty() || flags.contains(Flags::PSH);
    (data && flags.bits() & control.bits() == 0).then_some(packet.header.sequence)
}

/// The FEC sub-header of a parity packet, if `bytes` is one.
pub fn parity_header(bytes: &[u8]) -> Option<FecHeader> {
    let packet = Packet::decode(bytes).ok()?;
    if !packet.header.flags.contains(Flags::FEC) {
        return None;
    }
    FecHeader::decode(&packet.payload).ok().map(|(h, _)| h)
}
