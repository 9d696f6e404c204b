//! The link emulator with real TUN devices, real namespaces and real sockets: both transports
//! deliver everything, in order, across a lossy link, and the emulator's loss and byte counts
//! agree with what was configured and sent. Needs root, `/dev/net/tun` and iproute2, as CI
//! has (`tests/run-all.sh` installs iproute2 when missing).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use aetherflow_benches::latency::{ReceiverReport, SenderReport};
use aetherflow_benches::link::emulator::{EmulatorError, Link, LinkSpec};
use aetherflow_benches::link::model::LinkConfig;
use aetherflow_benches::link::packet::Flow;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_transport-latency");
const MESSAGES: u64 = 300;
const SIZE: usize = 100;

/// Runs one transport's receiver in namespace B and sender in namespace A.
async fn exchange(link: &Link, transport: &str) -> (SenderReport, ReceiverReport) {
    let listen = SocketAddr::new(link.spec().addr_b().into(), 7000).to_string();
    let count = MESSAGES.to_string();
    let mut receiver = link
        .command_in_b(BIN)
        .args(["recv", "--transport", transport, "--listen", &listen])
        .args(["--count", &count])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start receiver");
    let stdout = receiver.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.next_line().await.expect("read receiver");
    assert_eq!(ready.as_deref(), Some("ready"), "{transport} receiver");
    let sent = link
        .command_in_a(BIN)
        .args(["send", "--transport", transport, "--to", &listen])
        .args([
            "--count",
            &count,
            "--rate",
            "200",
            "--size",
            &SIZE.to_string(),
        ])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run sender");
    assert!(
        sent.status.success(),
        "{transport} sender: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let report = lines
        .next_line()
        .await
        .expect("read receiver")
        .expect("receiver report");
    (
        serde_json::from_slice(&sent.stdout).expect("sender json"),
        serde_json::from_str(&report).expect("receiver json"),
    )
}

fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_deliver_everything_in_order_across_a_lossy_link() {
    // A namespace left behind by a crashed run must not stop the link from starting.
    let status = Command::new("ip")
        .args(["netns", "add", "afit-a"])
        .status()
        .expect("ip");
    assert!(
        status.success(),
        "creating a stale namespace (are we root?)"
    );

    let loss = 0.10;
    let config = LinkConfig {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(1),
        loss,
        ..LinkConfig::default()
    };
    let link = Link::start(LinkSpec::symmetric("afit", 250, config, 11)).expect("link starts");
    let (tcp, quantum) = tokio::join!(exchange(&link, "tcp"), exchange(&link, "quantum"));
    let stats = link.shutdown().await;

    for (name, (sender, receiver)) in [("tcp", &tcp), ("quantum", &quantum)] {
        assert_eq!(receiver.latencies_us.len() as u64, MESSAGES, "{name}");
        assert_eq!(receiver.out_of_order, 0, "{name}");
        assert_eq!(sender.quantum.is_some(), name == "quantum");
    }
    // The retransmissions prove the loss hit the transports' own packets.
    let q = quantum.0.quantum.expect("quantum counters");
    assert!(q.retransmits + quantum.1.fec_repaired.unwrap_or(0) > 0);

    // Wire bytes are counted per flow, at least the payload, both ways.
    for flow in [Flow::Tcp(7000), Flow::Udp(7000)] {
        let bytes = stats.flows.get(&flow).copied().unwrap_or_default();
        assert!(bytes.a_to_b > MESSAGES * SIZE as u64, "{flow:?}: {bytes:?}");
        assert!(bytes.b_to_a > 0, "{flow:?}: {bytes:?}");
    }
    // The measured drop rate agrees with the configuration (5 sigma, binomial).
    for d in [stats.a_to_b, stats.b_to_a] {
        let n = d.packets_in as f64;
        let sigma = (n * loss * (1.0 - loss)).sqrt();
        assert!(
            (d.packets_dropped as f64 - n * loss).abs() < 5.0 * sigma,
            "{d:?}"
        );
        // Every packet is accounted for: delivered, dropped, or still in flight at shutdown.
        let fates = d.packets_out + d.packets_dropped + d.packets_held + d.write_errors;
        assert_eq!(fates, d.packets_in, "{d:?}");
        assert_eq!(d.write_errors, 0, "{d:?}");
    }
    assert!(!namespaces().contains("afit-"), "namespaces left behind");
}

#[test]
fn bad_link_specs_are_rejected_before_touching_the_system() {
    let ok = LinkConfig::default();
    for name in ["", "UPPER", "much-too-long-name", "sp ace"] {
        let err = Link::start(LinkSpec::symmetric(name, 1, ok.clone(), 1)).err();
        assert!(matches!(err, Some(EmulatorError::BadName(_))), "{name:?}");
    }
    let lossy = LinkConfig {
        loss: 2.0,
        ..LinkConfig::default()
    };
    let err = Link::start(LinkSpec::symmetric("afbad", 1, lossy, 1)).err();
    assert!(matches!(err, Some(EmulatorError::BadConfig(_))));
    assert!(!namespaces().contains("afbad"));
}
