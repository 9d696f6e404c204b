//! The client address behind trusted reverse proxies: `--trusted-proxies` and the `Forwarded`
//! (RFC 7239) / `X-Forwarded-For` headers.
//!
//! Pure: [`TrustedProxies::client_addr`] takes the TCP peer's address and the request's header
//! values and returns the address to treat as the client's. The headers count only when the
//! peer is one of the trusted proxies, since anyone else can write anything in them. The
//! hops are read from the right (the proxy nearest the relay appends last), skipping every hop
//! that is itself a trusted proxy; the first one that is not is the client. `Forwarded` wins
//! over `X-Forwarded-For` when a request carries both. Whatever cannot be used (a malformed
//! header, an element without `for=`, an obfuscated `for=_hidden` or `for=unknown` hop where
//! the client should be) leaves the peer's address: the relay never guesses past a hop it
//! cannot read. When every hop is trusted the leftmost is the client.
//!
//! ```
//! use aetherflow_server::forwarded::TrustedProxies;
//!
//! let proxies: TrustedProxies = "10.0.0.0/8,127.0.0.1/32".parse().unwrap();
//! let peer = "127.0.0.1:51000".parse().unwrap();
//! let client = proxies.client_addr(peer, None, Some("203.0.113.7, 10.1.2.3"));
//! assert_eq!(client, "203.0.113.7:0".parse().unwrap());
//! // The same header from an untrusted peer is ignored.
//! let stranger = "198.51.100.1:4000".parse().unwrap();
//! assert_eq!(proxies.client_addr(stranger, None, Some("203.0.113.7")), stranger);
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// Why a `--trusted-proxies` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("{0:?} is not an IP address or CIDR range")]
    Address(String),
    /// The prefix length is not a number within the address family's bits.
    #[error("{0:?} has a prefix length outside 0-32 (IPv4) or 0-128 (IPv6)")]
    Prefix(String),
}

/// An IP range such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The range's first address (host bits cleared).
    network: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
    /// dual-stack socket reports IPv4 peers) matches the IPv4 range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn mask32(bits: u32, prefix: u8) -> u32 {
    bits & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(bits: u128, prefix: u8) -> u128 {
    bits & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let ip = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| CidrError::Address(text.to_owned()))?,
        );
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix(text.to_owned()))?,
        };
        let network = match ip {
            IpAddr::V4(v4) => IpAddr::from(mask32(u32::from(v4), prefix).to_be_bytes()),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask128(u128::from(v6), prefix))),
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose forwarding headers the relay believes (`--trusted-proxies`). Empty by
/// default: then no header changes any address. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    /// Trusts the given ranges.
    pub fn new(ranges: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(ranges.into())
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trusted ranges.
    pub fn ranges(&self) -> &[Cidr] {
        &self.0
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(ip))
    }

    /// The client's address for a request from `peer` carrying these header values (every
    /// `Forwarded` header joined with `,`, likewise `X-Forwarded-For`). A forwarded hop
    /// without a port gets port 0.
    pub fn client_addr(
        &self,
        peer: SocketAddr,
        forwarded: Option<&str>,
        x_forwarded_for: Option<&str>,
    ) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = match (forwarded, x_forwarded_for) {
            (Some(header), _) => forwarded_hops(header),
            (None, Some(header)) => Some(
                header
                    .split(',')
                    .map(|hop| parse_node(hop.trim()))
                    .collect(),
            ),
            (None, None) => None,
        };
        hops.and_then(|hops| self.rightmost_untrusted(&hops))
            .unwrap_or(peer)
    }

    /// The rightmost hop that is not a trusted proxy (the leftmost if all are); `None` when
    /// that hop, or one to its right, cannot be read.
    fn rightmost_untrusted(&self, hops: &[Option<SocketAddr>]) -> Option<SocketAddr> {
        let mut last = None;
        for hop in hops.iter().rev() {
            let addr = (*hop)?;
            if !self.trusts(addr.ip()) {
                return Some(addr);
            }
            last = Some(addr);
        }
        last
    }
}

impl FromStr for TrustedProxies {
    type Err = CidrError;

    /// A comma-separated list of ranges; an empty string trusts nothing.
    fn from_str(text: &str) -> Result<TrustedProxies, CidrError> {
        let ranges = text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(TrustedProxies::new(ranges))
    }
}

/// The `for=` node of each element of a `Forwarded` header, left to right; `None` inside for
/// an element without a usable one, `None` outside for a header that does not parse.
fn forwarded_hops(header: &str) -> Option<Vec<Option<SocketAddr>>> {
    let mut hops = Vec::new();
    for element in split_unquoted(header, ',')? {
        let mut node = None;
        for pair in split_unquoted(element, ';')? {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once('=')?;
            if name.trim().eq_ignore_ascii_case("for") {
                node = Some(unquote(value.trim())?);
            }
        }
        hops.push(node.and_then(|node| parse_node(&node)));
    }
    Some(hops)
}

/// Splits at `separator` outside quoted strings; `None` if a quote is left open.
fn split_unquoted(text: &str, separator: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(&text[start..]);
    Some(parts)
}

/// A token or a quoted string (RFC 7230), unescaped.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// An RFC 7239 node (`192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:4711`; also a bare IPv6
/// address, as `X-Forwarded-For` writes it) as an address; `None` for `unknown`, an obfuscated
/// `_name` or anything else. An obfuscated port (`_port`) is dropped.
fn parse_node(node: &str) -> Option<SocketAddr> {
    let (ip, port) = if let Some(rest) = node.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (IpAddr::V6(host.parse::<Ipv6Addr>().ok()?), port)
    } else if let Ok(ip) = node.parse::<IpAddr>() {
        (ip, None)
    } else {
        let (host, port) = node.rsplit_once(':')?;
        (IpAddr::V4(host.parse::<Ipv4Addr>().ok()?), Some(port))
    };
    let port = match port {
        None => 0,
        Some(obfuscated) if obfuscated.starts_with('_') => 0,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<u16>().ok()?
        }
        Some(_) => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn proxies(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

    const PROXY: &str = "10.0.0.5:40000";

    #[test]
    fn ranges_parse_and_match_their_members_only() {
        let p = proxies("10.0.0.0/8, 192.168.1.7, 2001:db8::/32");
        assert_eq!(p.ranges().len(), 3);
        assert!(p.trusts("10.255.0.1".parse().unwrap()));
        assert!(!p.trusts("11.0.0.1".parse().unwrap()));
        assert!(p.trusts("192.168.1.7".parse().unwrap()));
        assert!(!p.trusts("192.168.1.8".parse().unwrap()));
        assert!(p.trusts("2001:db8:ffff::1".parse().unwrap()));
        assert!(!p.trusts("2001:db9::1".parse().unwrap()));
        // A dual-stack socket's view of an IPv4 peer.
        assert!(p.trusts("::ffff:10.1.1.1".parse().unwrap()));
        assert!(proxies("0.0.0.0/0").trusts("8.8.8.8".parse().unwrap()));
        assert!(proxies("").is_empty());
        assert_eq!(proxies("10.1.2.3/8").ranges()[0].to_string(), "10.0.0.0/8");
    }

    #[test]
    fn bad_ranges_are_refused_with_what_is_wrong() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "example.com",
            "10.0.0/8",
        ] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix("10.0.0.0/33".into()))
        );
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let p = proxies("10.0.0.0/8");
        let peer = addr("203.0.113.9:5000");
        assert_eq!(p.client_addr(peer, None, Some("198.51.100.1")), peer);
        assert_eq!(p.client_addr(peer, Some("for=198.51.100.1"), None), peer);
        assert_eq!(
            TrustedProxies::default().client_addr(peer, None, Some("1.2.3.4")),
            peer
        );
    }

    #[test]
    fn x_forwarded_for_gives_the_rightmost_untrusted_hop() {
        let p = proxies("10.0.0.0/8");
        let client = |xff| p.client_addr(addr(PROXY), None, Some(xff));
        assert_eq!(client("198.51.100.1"), addr("198.51.100.1:0"));
        // A client-supplied (spoofed) hop on the left is skipped: the proxy appended the real one.
        assert_eq!(client("1.1.1.1, 198.51.100.1"), addr("198.51.100.1:0"));
        // Trusted proxies on the right are skipped.
        assert_eq!(
            client("198.51.100.1, 10.0.0.7, 10.0.0.8"),
            addr("198.51.100.1:0")
        );
        // All trusted: the leftmost.
        assert_eq!(client("10.0.0.7,10.0.0.8"), addr("10.0.0.7:0"));
        assert_eq!(client("2001:db8::1"), addr("[2001:db8::1]:0"));
        assert_eq!(client("[2001:db8::1]:4711"), addr("[2001:db8::1]:4711"));
        assert_eq!(client("198.51.100.1:8080"), addr("198.51.100.1:8080"));
    }

    #[test]
    fn forwarded_reads_for_with_ports_quotes_and_ipv6() {
        let p = proxies("10.0.0.0/8");
        let client = |fwd| p.client_addr(addr(PROXY), Some(fwd), None);
        assert_eq!(
            client("for=192.0.2.60;proto=http;by=203.0.113.43"),
            addr("192.0.2.60:0")
        );
        assert_eq!(client("For=\"192.0.2.43:47011\""), addr("192.0.2.43:47011"));
        assert_eq!(
            client("for=\"[2001:db8:cafe::17]:4711\""),
            addr("[2001:db8:cafe::17]:4711")
        );
        assert_eq!(
            client("for=\"[2001:db8:cafe::17]\""),
            addr("[2001:db8:cafe::17]:0")
        );
        assert_eq!(client("for=\"192.0.2.43:_port\""), addr("192.0.2.43:0"));
        // Several elements and several headers (joined with a comma by the caller).
        assert_eq!(
            client("for=192.0.2.43, for=198.51.100.17"),
            addr("198.51.100.17:0")
        );
        assert_eq!(
            client("for=192.0.2.43, for=10.0.0.9;by=x"),
            addr("192.0.2.43:0")
        );
        // A comma inside a quoted value does not split the element.
        assert_eq!(client("for=192.0.2.43;ext=\"a,b\""), addr("192.0.2.43:0"));
        // Forwarded wins over X-Forwarded-For.
        assert_eq!(
            p.client_addr(addr(PROXY), Some("for=192.0.2.1"), Some("192.0.2.2")),
            addr("192.0.2.1:0")
        );
    }

    #[test]
    fn unreadable_or_hidden_clients_leave_the_peer_address() {
        let p = proxies("10.0.0.0/8");
        let peer = addr(PROXY);
        for fwd in [
            "for=_hidden",
            "for=unknown",
            "for=192.0.2.43, for=_secret",
            "proto=https",
            "for=\"192.0.2.43",
            "for",
            "for=\"[2001:db8::1\"",
            "for=2001:db8::zz",
        ] {
            assert_eq!(p.client_addr(peer, Some(fwd), None), peer, "{fwd}");
        }
        for xff in [
            "",
            "not-an-ip",
            "198.51.100.1, garbage",
            "unknown",
            "300.1.1.1",
        ] {
            assert_eq!(p.client_addr(peer, None, Some(xff)), peer, "{xff}");
        }
        assert_eq!(p.client_addr(peer, None, None), peer);
        // A hidden hop left of the client does not matter: reading stops at the client.
        assert_eq!(
            p.client_addr(peer, Some("for=_hidden, for=192.0.2.43"), None),
            addr("192.0.2.43:0")
        );
    }
}
