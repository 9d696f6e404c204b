//! The task that owns one socket and the sans-IO endpoint, and serves the handles.
//!
//! Each turn of its loop: run expired timers, hand events to the handles, admit waiting sends,
//! send everything the core produced, then sleep until a datagram, a command, the core's next
//! timeout or a handshake deadline.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::io::{Batch, UdpIo};
use super::{Connection, DriverConfig, DriverError, DriverStats};
use crate::connection::{CloseReason, ConnectionStats, Event, Role, Transmit};
use crate::endpoint::Endpoint as CoreEndpoint;
use crate::packet::ConnectionId;

/// Receive batches handled per wake-up before commands and timers get a turn.
const RECV_BATCHES_PER_TURN: usize = 8;
/// Commands handled per wake-up.
const COMMANDS_PER_TURN: usize = 256;

/// A request from a handle.
#[derive(Debug)]
pub(super) enum Command {
    Connect {
        remote: SocketAddr,
        reply: oneshot::Sender<Result<Connection, DriverError>>,
    },
    Send {
        id: ConnectionId,
        message: Bytes,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    Close {
        id: ConnectionId,
        reply: oneshot::Sender<()>,
    },
    /// Every handle of the connection is gone.
    Dropped {
        id: ConnectionId,
    },
    Stats {
        id: ConnectionId,
        reply: oneshot::Sender<Option<ConnectionStats>>,
    },
    EndpointStats {
        reply: oneshot::Sender<DriverStats>,
    },
    Rebind {
        socket: std::net::UdpSocket,
        reply: oneshot::Sender<Result<SocketAddr, DriverError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What a connection's handle receives.
#[derive(Debug)]
pub(super) enum Delivery {
    Message(Bytes),
    Finished,
    Closed(CloseReason),
}

/// A client connection whose handshake is under way.
#[derive(Debug)]
struct PendingConnect {
    reply: oneshot::Sender<Result<Connection, DriverError>>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    remote: SocketAddr,
    deadline: Instant,
}

/// The driver's side of one connection.
#[derive(Debug)]
struct Route {
    deliveries: mpsc::UnboundedSender<Delivery>,
    connecting: Option<PendingConnect>,
    /// Messages waiting for room in the send buffer, in order.
    sends: VecDeque<(Bytes, oneshot::Sender<Result<(), DriverError>>)>,
    /// Close once the waiting messages are in.
    close_queued: bool,
    remote: Arc<Mutex<SocketAddr>>,
}

impl Route {
    fn new(remote: SocketAddr) -> (Route, mpsc::UnboundedReceiver<Delivery>) {
        let (deliveries, receiver) = mpsc::unbounded_channel();
        let route = Route {
            deliveries,
            connecting: None,
            sends: VecDeque::new(),
            close_queued: false,
            remote: Arc::new(Mutex::new(remote)),
        };
        (route, receiver)
    }
}

/// Why the task woke up.
enum Wake {
    Command(Option<Command>),
    Readable,
    Writable,
    Timer,
}

/// The task's state.
struct Driver {
    core: CoreEndpoint,
    io: UdpIo,
    config: DriverConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For new handles; weak, so the task stops once every handle is gone.
    handles: mpsc::WeakUnboundedSender<Command>,
    incoming: Option<mpsc::UnboundedSender<Connection>>,
    routes: HashMap<ConnectionId, Route>,
    /// Handshake deadlines of pending connects.
    deadlines: BTreeSet<(Instant, ConnectionId)>,
    /// Connections with messages waiting for send-buffer room.
    waiting: HashSet<ConnectionId>,
    batch: Batch,
    /// A transmit that did not fit the current batch.
    stash: Option<Transmit>,
    write_blocked: bool,
    /// Set once every handle is gone: stop when the connections are over or at this instant.
    linger_until: Option<Instant>,
}

type Spawned = (
    mpsc::UnboundedSender<Command>,
    mpsc::UnboundedReceiver<Connection>,
    SocketAddr,
);

/// Starts the task on `socket`; returns the command sender, the accept queue and the address.
pub(super) fn spawn(
    socket: std::net::UdpSocket,
    config: DriverConfig,
) -> Result<Spawned, DriverError> {
    let io = UdpIo::new(socket)?;
    let local = io.local_addr()?;
    let core = CoreEndpoint::new(config.quantum.clone(), Instant::now(), SystemTime::now())?;
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        core,
        io,
        incoming: config.quantum.accept_incoming.then_some(incoming_tx),
        config,
        commands,
        handles: commands_tx.downgrade(),
        routes: HashMap::new(),
        deadlines: BTreeSet::new(),
        waiting: HashSet::new(),
        batch: Batch::default(),
        stash: None,
        write_blocked: false,
        linger_until: None,
    };
    tokio::spawn(driver.run());
    Ok((commands_tx, incoming_rx, local))
}

impl Driver {
    async fn run(mut self) {
        loop {
            let now = Instant::now();
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
            }
            self.expire_handshakes(now);
            self.dispatch_events();
            self.admit_waiting();
            self.flush(now);
            // The core forgets finished connections (a reset just sent, say) only when its
            // events are polled, so poll once more after sending.
            self.dispatch_events();
            if self.linger_until.is_some_and(|until| {
                now >= until || (self.core.connection_count() == 0 && self.batch.is_empty())
            }) {
                return;
            }
            match self.wait().await {
                Wake::Command(Some(command)) => {
                    if !self.handle_command(command) {
                        return;
                    }
                    for _ in 0..COMMANDS_PER_TURN {
                        let Ok(command) = self.commands.try_recv() else {
                            break;
                        };
                        if !self.handle_command(command) {
                            return;
                        }
                    }
                }
                Wake::Command(None) => self.start_lingering(),
                Wake::Readable => self.receive(),
                Wake::Writable => self.write_blocked = false,
                Wake::Timer => {}
            }
        }
    }

    async fn wait(&mut self) -> Wake {
        let deadline = [
            self.core.poll_timeout(),
            self.deadlines.first().map(|&(at, _)| at),
            self.linger_until,
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep = tokio::time::sleep_until(
            deadline.map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std),
        );
        let lingering = self.linger_until.is_some();
        tokio::select! {
            command = self.commands.recv(), if !lingering => Wake::Command(command),
            ready = self.io.readable() => match ready {
                Ok(()) => Wake::Readable,
                // Readiness cannot fail on a live socket; treat it as a spurious wake-up.
                Err(_) => Wake::Timer,
            },
            _ = self.io.writable(), if self.write_blocked => Wake::Writable,
            () = sleep, if deadline.is_some() => Wake::Timer,
        }
    }

    /// Feeds received datagrams to the core.
    fn receive(&mut self) {
        for _ in 0..RECV_BATCHES_PER_TURN {
            let now = Instant::now();
            let core = &mut self.core;
            match self
                .io
                .try_recv(|from, datagram| core.handle(now, from, datagram))
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors and the like surface here; the protocol's timers cope.
                    tracing::debug!(error = %e, "quantum: receive failed");
                    return;
                }
            }
        }
    }

    /// Sends everything the core has, in GSO batches, until it has nothing or the socket is
    /// full.
    fn flush(&mut self, now: Instant) {
        let max_segments = self.io.max_segments();
        loop {
            if !self.batch.is_empty() && self.io.try_send(&mut self.batch).is_err() {
                self.write_blocked = true;
                return;
            }
            while let Some(transmit) = self.stash.take().or_else(|| self.core.poll_transmit(now)) {
                if let Err(transmit) = self.batch.push(transmit, max_segments) {
                    self.stash = Some(transmit);
                    break;
                }
            }
            if self.batch.is_empty() {
                return;
            }
        }
    }

    /// Returns `false` when the task must stop.
    fn handle_command(&mut self, command: Command) -> bool {
        match command {
            Command::Connect { remote, reply } => self.connect(remote, reply),
            Command::Send { id, message, reply } => self.queue_send(id, message, reply),
            Command::Close { id, reply } => {
                if let Some(route) = self.routes.get_mut(&id) {
                    route.close_queued = true;
                }
                self.admit(id);
                let _ = reply.send(());
            }
            Command::Dropped { id } => {
                if let Some(route) = self.routes.get_mut(&id) {
                    route.close_queued = true;
                    route.sends.clear();
                }
                self.admit(id);
            }
            Command::Stats { id, reply } => {
                let _ = reply.send(self.core.connection(id).map(|c| c.stats()));
            }
            Command::EndpointStats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Rebind { socket, reply } => {
                let result = UdpIo::new(socket).and_then(|mut io| {
                    let local = io.local_addr()?;
                    io.counters = self.io.counters;
                    self.io = io;
                    self.write_blocked = false;
                    Ok(local)
                });
                let _ = reply.send(result.map_err(DriverError::from));
            }
            Command::Shutdown { reply } => {
                self.shutdown();
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    fn connect(
        &mut self,
        remote: SocketAddr,
        reply: oneshot::Sender<Result<Connection, DriverError>>,
    ) {
        let now = Instant::now();
        let id = self.core.connect(now, remote);
        let deadline = now + self.config.handshake_timeout;
        let (mut route, deliveries) = Route::new(remote);
        route.connecting = Some(PendingConnect {
            reply,
            deliveries,
            remote,
            deadline,
        });
        self.routes.insert(id, route);
        self.deadlines.insert((deadline, id));
    }

    fn queue_send(
        &mut self,
        id: ConnectionId,
        message: Bytes,
        reply: oneshot::Sender<Result<(), DriverError>>,
    ) {
        match self.routes.get_mut(&id) {
            Some(route) if !route.close_queued => route.sends.push_back((message, reply)),
            _ => {
                let _ = reply.send(Err(DriverError::Closed));
                return;
            }
        }
        self.admit(id);
    }

    /// Moves waiting messages of `id` into the core while its send buffer has room, then
    /// closes the connection if that was asked for.
    fn admit(&mut self, id: ConnectionId) {
        let Some(route) = self.routes.get_mut(&id) else {
            return;
        };
        let Some(conn) = self.core.connection_mut(id) else {
            for (_, reply) in route.sends.drain(..) {
                let _ = reply.send(Err(DriverError::Closed));
            }
            return;
        };
        let fragment = self.config.quantum.max_fragment() as u64;
        while !route.sends.is_empty() {
            let buffered = conn.unacked_fragments() * fragment;
            if buffered > 0 && buffered >= self.config.send_buffer as u64 {
                self.waiting.insert(id);
                return;
            }
            if let Some((message, reply)) = route.sends.pop_front() {
                let _ = reply.send(conn.send(&message).map_err(DriverError::from));
            }
        }
        self.waiting.remove(&id);
        if route.close_queued {
            conn.close();
        }
    }

    fn admit_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let waiting: Vec<ConnectionId> = self.waiting.iter().copied().collect();
        for id in waiting {
            self.admit(id);
        }
    }

    fn expire_handshakes(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                return;
            }
            self.deadlines.pop_first();
            let Some(route) = self.routes.remove(&id) else {
                continue;
            };
            if let Some(pending) = route.connecting {
                if let Some(conn) = self.core.connection_mut(id) {
                    conn.abort();
                }
                let _ = pending.reply.send(Err(DriverError::HandshakeTimeout {
                    remote: pending.remote,
                    timeout: self.config.handshake_timeout,
                }));
            } else {
                // Connected in time: the deadline was stale.
                self.routes.insert(id, route);
            }
        }
    }

    fn dispatch_events(&mut self) {
        while let Some((id, event)) = self.core.poll_event() {
            match event {
                Event::Connected => self.on_connected(id),
                Event::Message(bytes) => self.deliver(id, Delivery::Message(Bytes::from(bytes))),
                Event::Finished => self.deliver(id, Delivery::Finished),
                Event::Migrated(addr) => {
                    if let Some(route) = self.routes.get(&id) {
                        *route
                            .remote
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner()) = addr;
                    }
                }
                Event::Closed(reason) => self.on_closed(id, reason),
            }
        }
    }

    fn deliver(&mut self, id: ConnectionId, delivery: Delivery) {
        if let Some(route) = self.routes.get(&id) {
            // A closed receiver means every handle is gone and the close is under way.
            let _ = route.deliveries.send(delivery);
        }
    }

    fn on_connected(&mut self, id: ConnectionId) {
        let Some(commands) = self.handles.upgrade() else {
            // Every handle is gone: nobody will use this connection.
            if let Some(conn) = self.core.connection_mut(id) {
                conn.close();
            }
            return;
        };
        if let Some(route) = self.routes.get_mut(&id) {
            if let Some(pending) = route.connecting.take() {
                self.deadlines.remove(&(pending.deadline, id));
                let conn = Connection::new(id, commands, pending.deliveries, route.remote.clone());
                // If the caller gave up, the handle's drop closes the connection.
                let _ = pending.reply.send(Ok(conn));
            }
            return;
        }
        let Some(core_conn) = self.core.connection(id) else {
            return;
        };
        if core_conn.role() != Role::Server {
            return;
        }
        let (route, deliveries) = Route::new(core_conn.remote());
        let conn = Connection::new(id, commands, deliveries, route.remote.clone());
        self.routes.insert(id, route);
        if let Some(incoming) = &self.incoming {
            // If nobody accepts any more, the handle's drop closes the connection.
            let _ = incoming.send(conn);
        }
    }

    fn on_closed(&mut self, id: ConnectionId, reason: CloseReason) {
        self.waiting.remove(&id);
        let Some(route) = self.routes.remove(&id) else {
            return;
        };
        for (_, reply) in route.sends {
            let _ = reply.send(Err(DriverError::ConnectionLost(reason)));
        }
        if let Some(pending) = route.connecting {
            self.deadlines.remove(&(pending.deadline, id));
            let _ = pending.reply.send(Err(DriverError::ConnectionLost(reason)));
        }
        let _ = route.deliveries.send(Delivery::Closed(reason));
    }

    /// Every handle is gone: close what is left gracefully and stop after the linger time.
    fn start_lingering(&mut self) {
        let ids: Vec<ConnectionId> = self.routes.keys().copied().collect();
        for id in ids {
            if let Some(conn) = self.core.connection_mut(id) {
                conn.close();
            }
        }
        self.incoming = None;
        self.linger_until = Some(Instant::now() + self.config.linger);
    }

    /// Resets every connection and sends the resets before the task stops.
    fn shutdown(&mut self) {
        let ids: Vec<ConnectionId> = self.routes.keys().copied().collect();
        for id in ids {
            if let Some(conn) = self.core.connection_mut(id) {
                conn.abort();
            }
        }
        self.flush(Instant::now());
        self.dispatch_events();
        // Anything the socket would not take now is lost; the peers' idle timers end those.
    }

    fn stats(&self) -> DriverStats {
        let io = self.io.counters;
        DriverStats {
            endpoint: self.core.stats().clone(),
            connections: self.core.connection_count(),
            datagrams_received: io.datagrams_received,
            datagrams_sent: io.datagrams_sent,
            receive_calls: io.receive_calls,
            send_calls: io.send_calls,
            send_errors: io.send_errors,
            max_gso_segments: self.io.max_segments(),
        }
    }
}
