//! The liveness rule every transport applies: ping each interval; a session that left one
//! ping unanswered is IDLE, one that left two is closed.
//!
//! Pure: the transport calls [`Heartbeat::heard`] whenever the peer sends anything and
//! [`Heartbeat::tick`] once per interval, and does what the returned [`Beat`] says.
//!
//! ```
//! use aetherflow_server::heartbeat::{Beat, Heartbeat};
//!
//! let mut heartbeat = Heartbeat::new();
//! assert_eq!(heartbeat.tick(), Beat::Ping);      // first ping
//! assert_eq!(heartbeat.tick(), Beat::PingIdle);  // unanswered: idle, ping again
//! heartbeat.heard();                             // a pong
//! assert_eq!(heartbeat.tick(), Beat::Ping);      // active again
//! assert_eq!(heartbeat.tick(), Beat::PingIdle);
//! assert_eq!(heartbeat.tick(), Beat::Timeout);   // two unanswered: close
//! ```

/// What to do at a heartbeat tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The peer answered since the last tick: send a ping (the session is ACTIVE).
    Ping,
    /// The last ping went unanswered: mark the session IDLE and ping once more.
    PingIdle,
    /// Two pings went unanswered: close the session.
    Timeout,
}

/// One session's heartbeat state.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Whether the peer sent anything (a pong counts) since the last tick.
    heard: bool,
    /// Whether the previous tick already found the peer silent.
    missed: bool,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A heartbeat for a peer just heard from (it has just connected).
    pub fn new() -> Heartbeat {
        Heartbeat {
            heard: true,
            missed: false,
        }
    }

    /// The peer sent something.
    pub fn heard(&mut self) {
        self.heard = true;
    }

    /// One interval has passed.
    pub fn tick(&mut self) -> Beat {
        let beat = match (self.heard, self.missed) {
            (true, _) => Beat::Ping,
            (false, false) => Beat::PingIdle,
            (false, true) => Beat::Timeout,
        };
        self.missed = !self.heard;
        self.heard = false;
        beat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_answers_every_ping_stays_active() {
        let mut heartbeat = Heartbeat::new();
        for _ in 0..100 {
            assert_eq!(heartbeat.tick(), Beat::Ping);
            heartbeat.heard();
        }
    }

    #[test]
    fn a_silent_peer_is_idle_after_one_interval_and_closed_after_two() {
        let mut heartbeat = Heartbeat::new();
        heartbeat.heard();
        assert_eq!(heartbeat.tick(), Beat::Ping);
        assert_eq!(heartbeat.tick(), Beat::PingIdle);
        assert_eq!(heartbeat.tick(), Beat::Timeout);
    }

    #[test]
    fn an_idle_peer_that_answers_late_is_active_again() {
        let mut heartbeat = Heartbeat::new();
        heartbeat.tick();
        assert_eq!(heartbeat.tick(), Beat::PingIdle);
        heartbeat.heard();
        assert_eq!(heartbeat.tick(), Beat::Ping);
        assert_eq!(heartbeat.tick(), Beat::PingIdle);
    }
}
