//! Where a webhook goes: its URL, checked once when the admin sets it and again on every
//! delivery, and the addresses it may be sent to.
//!
//! Server-side request forgery: an endpoint URL must not make the relay reach its own
//! machine or its private network. The host is resolved and every address it resolves to is
//! checked (a name with one public and one private address is refused), and the connection
//! then goes to those checked addresses, never to a second lookup, so a name cannot resolve
//! to a public address for the check and a private one for the request. Loopback, private,
//! link-local, shared (CGNAT), unique-local, multicast, documentation and reserved ranges are
//! refused (also when embedded in IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 addresses)
//! unless the admin allows private addresses (`--webhook-allow-private-addresses`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::Uri;
use axum::http::uri::Scheme;

/// Longest endpoint URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Why an endpoint URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute `http://` or `https://` URL with a host, or longer than
    /// [`MAX_URL_BYTES`], or with credentials in it.
    #[error("invalid webhook URL: {0}")]
    Invalid(String),
    /// The host is, or resolves to, an address the relay does not post to.
    #[error(
        "webhook URL refused: {host} is {address}, a {range} address (allow with --webhook-allow-private-addresses)"
    )]
    Private {
        /// The URL's host.
        host: String,
        /// The refused address.
        address: IpAddr,
        /// Which range it is in.
        range: &'static str,
    },
    /// The host did not resolve.
    #[error("webhook host {0} does not resolve")]
    Unresolved(String),
}

/// A checked endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Whether to speak TLS.
    pub https: bool,
    /// The host as written (a name or an address, without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
    /// `host[:port]` for the `Host` header.
    pub authority: String,
}

impl Target {
    /// Parses `url` and refuses what can never be a webhook endpoint, including a literal
    /// address in a refused range (unless `allow_private`).
    pub fn parse(url: &str, allow_private: bool) -> Result<Target, TargetError> {
        let invalid = |why: &str| TargetError::Invalid(why.to_owned());
        if url.len() > MAX_URL_BYTES {
            return Err(invalid("longer than 2048 bytes"));
        }
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not accepted"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let target = Target {
            https,
            authority: authority.as_str().to_owned(),
            host,
            port,
            path,
        };
        if let Ok(ip) = target.host.parse::<IpAddr>() {
            target.check(ip, allow_private)?;
        }
        Ok(target)
    }

    /// Resolves the host and checks every address; the addresses to connect to.
    pub async fn resolve(&self, allow_private: bool) -> Result<Vec<SocketAddr>, TargetError> {
        let addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|_| TargetError::Unresolved(self.host.clone()))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(TargetError::Unresolved(self.host.clone()));
        }
        for addr in &addrs {
            self.check(addr.ip(), allow_private)?;
        }
        Ok(addrs)
    }

    /// When an admin sets the URL: a host that resolves must resolve to allowed addresses
    /// only; one that does not resolve (yet, or within 5 s) is accepted, and every delivery
    /// checks it again.
    pub async fn resolve_if_named(&self, allow_private: bool) -> Result<(), TargetError> {
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.resolve(allow_private),
        );
        match lookup.await {
            Ok(Err(TargetError::Unresolved(_))) | Err(_) => Ok(()),
            Ok(result) => result.map(|_| ()),
        }
    }

    fn check(&self, ip: IpAddr, allow_private: bool) -> Result<(), TargetError> {
        match refused_range(ip) {
            Some(range) if !allow_private => Err(TargetError::Private {
                host: self.host.clone(),
                address: ip,
                range,
            }),
            _ => Ok(()),
        }
    }
}

/// The name of the range `ip` is in if it is not a public unicast address.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "unspecified (0.0.0.0/8)",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        (100, 64..=127, _) => "shared (CGNAT, 100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        _ if ip.is_multicast() => "multicast",
        _ if a >= 240 => "reserved",
        _ => return None,
    };
    Some(range)
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let segments = ip.segments();
    let range = match segments[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        s if s & 0xfe00 == 0xfc00 => "unique local",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        s if s & 0xffc0 == 0xfec0 => "site-local",
        s if s & 0xff00 == 0xff00 => "multicast",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) embed an IPv4 address.
        0x0064 if segments[1] == 0xff9b && segments[2..6] == [0; 4] => {
            return refused_v4(embedded_v4(ip));
        }
        0 if segments[..6] == [0; 6] => return refused_v4(embedded_v4(ip)),
        // 6to4 (2002::/16) carries an IPv4 address in its next 32 bits.
        0x2002 => {
            let [a, b] = segments[1].to_be_bytes();
            let [c, d] = segments[2].to_be_bytes();
            return refused_v4(Ipv4Addr::new(a, b, c, d));
        }
        _ => return None,
    };
    Some(range)
}

fn embedded_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        refused_range(text.parse().expect("an address")).is_some()
    }

    #[test]
    fn private_and_special_addresses_are_refused_and_public_ones_pass() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(!refused(ip), "{ip} is public");
        }
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let private = Target::parse("http://127.0.0.1:9/hook", false);
        assert!(matches!(private, Err(TargetError::Private { .. })));
        let bracketed = Target::parse("http://[::1]:9/hook", false);
        assert!(matches!(bracketed, Err(TargetError::Private { .. })));
        assert!(Target::parse("http://127.0.0.1:9/hook", true).is_ok());
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "http://user:pw@example.com/",
            "/relative",
        ] {
            assert!(
                matches!(Target::parse(bad, true), Err(TargetError::Invalid(_))),
                "{bad}"
            );
        }
        let target = Target::parse("https://hooks.example.com/in?x=1", false).expect("public");
        assert_eq!(
            (target.https, target.port, target.path.as_str()),
            (true, 443, "/in?x=1")
        );
    }
}
