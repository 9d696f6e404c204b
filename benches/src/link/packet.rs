//! Just enough IP header parsing to tell which transport flow a packet belongs to, so the
//! emulator can count wire bytes per flow.

/// The flow a packet belongs to, named by its transport protocol and the lower of its two
/// ports. Benchmarks listen on fixed low ports and connect from ephemeral high ones, so the
/// lower port names the service in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flow {
    /// A TCP segment for this service port.
    Tcp(u16),
    /// A UDP datagram for this service port.
    Udp(u16),
    /// Anything else: ICMP, IPv6 neighbour discovery, truncated or unparsable packets.
    Other,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

impl Flow {
    /// Classifies a raw IP packet as read from a TUN device without packet information.
    /// Never panics, whatever the bytes.
    pub fn of(packet: &[u8]) -> Flow {
        let Some(&first) = packet.first() else {
            return Flow::Other;
        };
        let (protocol, header_len) = match first >> 4 {
            4 => match packet.get(9) {
                Some(&p) => (p, usize::from(first & 0x0f) * 4),
                None => return Flow::Other,
            },
            // Extension headers are not followed: the benchmarks do not use them.
            6 => match packet.get(6) {
                Some(&p) => (p, 40),
                None => return Flow::Other,
            },
            _ => return Flow::Other,
        };
        let Some(ports) = packet.get(header_len..header_len + 4) else {
            return Flow::Other;
        };
        let src = u16::from_be_bytes([ports[0], ports[1]]);
        let dst = u16::from_be_bytes([ports[2], ports[3]]);
        match protocol {
            TCP => Flow::Tcp(src.min(dst)),
            UDP => Flow::Udp(src.min(dst)),
            _ => Flow::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(protocol: u8, src: u16, dst: u16) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[9] = protocol;
        p.extend_from_slice(&src.to_be_bytes());
        p.extend_from_slice(&dst.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p
    }

    #[test]
    fn tcp_and_udp_flows_are_named_by_the_service_port_both_ways() {
        assert_eq!(Flow::of(&ipv4(TCP, 45000, 7001)), Flow::Tcp(7001));
        assert_eq!(Flow::of(&ipv4(TCP, 7001, 45000)), Flow::Tcp(7001));
        assert_eq!(Flow::of(&ipv4(UDP, 7002, 51000)), Flow::Udp(7002));
    }

    #[test]
    fn ipv4_options_move_the_ports() {
        let mut p = ipv4(UDP, 0, 0);
        p[0] = 0x46; // 24-byte header
        p.splice(20..20, [0u8; 4]);
        p[24..28].copy_from_slice(&[0x1b, 0x59, 0xc0, 0x00]);
        assert_eq!(Flow::of(&p), Flow::Udp(7001));
    }

    #[test]
    fn ipv6_udp_is_classified() {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[6] = UDP;
        p.extend_from_slice(&[0x1b, 0x59, 0xc0, 0x00, 0, 0, 0, 0]);
        assert_eq!(Flow::of(&p), Flow::Udp(7001));
    }

    #[test]
    fn icmp_truncated_and_garbage_are_other() {
        assert_eq!(Flow::of(&ipv4(1, 0, 0)), Flow::Other);
        assert_eq!(Flow::of(&[]), Flow::Other);
        assert_eq!(Flow::of(&[0x45, 0, 0]), Flow::Other);
        assert_eq!(Flow::of(&ipv4(TCP, 1, 2)[..22]), Flow::Other);
        assert_eq!(Flow::of(&[0xff; 64]), Flow::Other);
        // A header length pointing past the end.
        let mut p = ipv4(TCP, 1, 2);
        p[0] = 0x4f;
        assert_eq!(Flow::of(&p), Flow::Other);
    }
}
