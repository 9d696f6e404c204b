//! Stateless retry cookies: a server proves a client owns its address without keeping state.
//!
//! A cookie is a 4-byte time bucket followed by a 128-bit SipHash-2-4 of the client's address,
//! the connection id and that bucket, keyed with a secret from the configuration. The server
//! answers a SYN that lacks a valid cookie with one and forgets it; only a SYN that echoes a
//! valid cookie, which a spoofer cannot see, creates a connection.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use siphasher::sip128::{Hasher128, SipHasher24};

use crate::packet::{COOKIE_LEN, ConnectionId};

/// Issues and checks retry cookies.
#[derive(Debug, Clone)]
pub struct CookieJar {
    /// The secret key.
    key: [u8; 16],
    /// Length of one time bucket; a cookie is valid in its bucket and the next.
    bucket: Duration,
    /// Time zero for bucket numbers.
    epoch: Instant,
}

impl CookieJar {
    /// A jar with `key`, counting buckets of length `bucket` from `epoch`.
    pub fn new(key: [u8; 16], bucket: Duration, epoch: Instant) -> CookieJar {
        CookieJar {
            key,
            bucket: bucket.max(Duration::from_millis(1)),
            epoch,
        }
    }

    fn bucket_at(&self, now: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        // Truncation wraps after 2^32 buckets, long after any cookie expired.
        (elapsed / self.bucket.as_nanos()) as u32
    }

    fn tag(&self, bucket: u32, addr: SocketAddr, id: ConnectionId) -> [u8; 16] {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        match addr.ip() {
            IpAddr::V4(ip) => hasher.write(&ip.octets()),
            IpAddr::V6(ip) => hasher.write(&ip.octets()),
        }
        hasher.write(&addr.port().to_be_bytes());
        hasher.write(id.as_bytes());
        hasher.write(&bucket.to_be_bytes());
        hasher.finish128().as_bytes()
    }

    /// The cookie for `addr` and `id` at `now`.
    pub fn issue(&self, now: Instant, addr: SocketAddr, id: ConnectionId) -> [u8; COOKIE_LEN] {
        let bucket = self.bucket_at(now);
        let mut cookie = [0; COOKIE_LEN];
        cookie[..4].copy_from_slice(&bucket.to_be_bytes());
        cookie[4..].copy_from_slice(&self.tag(bucket, addr, id));
        cookie
    }

    /// Whether `cookie` was issued for `addr` and `id` in this bucket or the previous one.
    pub fn verify(&self, now: Instant, addr: SocketAddr, id: ConnectionId, cookie: &[u8]) -> bool {
        let Some((bucket, tag)) = cookie.split_first_chunk::<4>() else {
            return false;
        };
        let bucket = u32::from_be_bytes(*bucket);
        let current = self.bucket_at(now);
        if bucket != current && bucket.wrapping_add(1) != current {
            return false;
        }
        let expected = self.tag(bucket, addr, id);
        // Compare without an early exit so timing does not leak how much of a guess matched.
        tag.len() == expected.len()
            && tag
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_binds_address_id_and_time() {
        let t0 = Instant::now();
        let jar = CookieJar::new([9; 16], Duration::from_secs(10), t0);
        let addr: SocketAddr = "10.0.0.1:4000".parse().expect("literal");
        let other: SocketAddr = "10.0.0.2:4000".parse().expect("literal");
        let id = ConnectionId::new_v7(1, [1; 10]);
        let cookie = jar.issue(t0, addr, id);
        assert!(jar.verify(t0, addr, id, &cookie));
        assert!(jar.verify(t0 + Duration::from_secs(15), addr, id, &cookie));
        assert!(!jar.verify(t0 + Duration::from_secs(25), addr, id, &cookie));
        assert!(!jar.verify(t0, other, id, &cookie));
        assert!(!jar.verify(t0, addr, ConnectionId::new_v7(1, [2; 10]), &cookie));
        let other_key = CookieJar::new([8; 16], Duration::from_secs(10), t0);
        assert!(!other_key.verify(t0, addr, id, &cookie));
        assert!(!jar.verify(t0, addr, id, &cookie[..10]));
    }
}
