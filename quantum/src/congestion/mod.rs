//! Congestion control behind a small trait: BBR by default, NewReno on request.
//!
//! The connection tells its controller about every transmission, acknowledgement, loss and
//! retransmission timeout; the controller answers with a congestion window (bytes that may be
//! in flight) and, optionally, a pacing rate, which the connection's pacer (a token bucket)
//! enforces.
//! Acknowledgements carry a delivery-rate sample ([`RateSample`]), measured per packet as
//! draft-cheng-iccrg-delivery-rate-estimation describes, which is what BBR builds its model on.

mod bbr;
pub(crate) mod delivery;
mod filter;
mod new_reno;
pub(crate) mod pacer;

use std::time::{Duration, Instant};

pub use bbr::{Bbr, BbrState};
pub use delivery::RateSample;
pub use new_reno::NewReno;

/// Which controller a connection runs; see [`Config::congestion`](crate::Config::congestion).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// BBR v1 with pacing: models the path's bottleneck bandwidth and minimum RTT, so random
    /// loss does not shrink its sending rate and it keeps the bottleneck queue short.
    #[default]
    Bbr,
    /// Loss-based NewReno without pacing.
    NewReno,
}

impl Algorithm {
    /// A fresh controller counting in packets of `mss` bytes; `seed` feeds its random choices.
    pub fn build(self, mss: u64, seed: u64) -> Box<dyn CongestionController> {
        match self {
            Algorithm::Bbr => Box::new(Bbr::new(mss, seed)),
            Algorithm::NewReno => Box::new(NewReno::new(mss)),
        }
    }
}

/// What one acknowledgement told the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Bytes newly acknowledged.
    pub bytes: u64,
    /// RTT measured from the newest newly acknowledged packet, unless it was retransmitted.
    pub rtt: Option<Duration>,
    /// Bytes still in flight after this acknowledgement.
    pub bytes_in_flight: u64,
    /// The delivery rate this acknowledgement measured, if it measured one.
    pub rate: Option<RateSample>,
}

/// BBR's picture of the path, for [`ConnectionStats`](crate::ConnectionStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathModel {
    /// The state machine's current state.
    pub state: BbrState,
    /// Windowed minimum RTT, once measured.
    pub min_rtt: Option<Duration>,
    /// Windowed maximum delivery rate in bytes per second; zero before the first sample.
    pub bottleneck_bandwidth: u64,
}

/// What a congestion controller must offer the connection.
pub trait CongestionController: std::fmt::Debug + Send {
    /// `bytes` left in a packet at `now`, with `bytes_in_flight` outstanding before it; zero
    /// means the sender restarts after being idle.
    fn on_sent(&mut self, now: Instant, bytes: u64, bytes_in_flight: u64);
    /// Some packets were acknowledged.
    fn on_ack(&mut self, now: Instant, ack: &Ack);
    /// Packets totalling `bytes` were declared lost (or, with FEC, repaired); the newest of
    /// them was sent at `sent`.
    fn on_loss(&mut self, now: Instant, bytes: u64, sent: Instant);
    /// The retransmission timer expired.
    fn on_rto(&mut self, now: Instant);
    /// Bytes that may be in flight.
    fn window(&self) -> u64;
    /// Bytes per second to pace at, or `None` to send as the window allows.
    fn pacing_rate(&self) -> Option<u64>;
    /// The path model of a model-based controller; `None` for loss-based ones.
    fn path_model(&self) -> Option<PathModel> {
        None
    }
}
