//! The NFQUEUE packet delayer (`chaos-netdelay`, `net::degrade_nfqueue`)
//! on two namespaces, for real: root, re-run under `unshare --net --mount`
//! like the chaos scenarios. Round-trip times with the delayer on and off,
//! per-flow order under jitter, the loss fraction, and nothing left after
//! `net::restore`. Correctness bounds, not a benchmark: every lower bound
//! holds by construction (each packet is held at least delay - jitter), the
//! upper ones are loose.
use bulwark_chaos::net::{self, run_isolated, Degraded, Impairment};
use nix::sched::CloneFlags;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 22);
const ECHO_PORT: u16 = 7000;
const UDP_PORT: u16 = 7001;

fn hosts() -> Vec<(String, Ipv4Addr)> {
    vec![("nda".to_string(), A), ("ndb".to_string(), B)]
}

/// Run `f` on a thread inside host `ns`'s network namespace; sockets it
/// creates stay in that namespace wherever they are used afterwards.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// A TCP echo server in host B, one connection at a time, forever.
fn start_echo() {
    let listener = in_netns("ndb", || TcpListener::bind((Ipv4Addr::UNSPECIFIED, ECHO_PORT)).expect("bind echo"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_nodelay(true);
            let mut b = [0u8; 1];
            while let Ok(1) = c.read(&mut b) {
                if c.write_all(&b).is_err() {
                    break;
                }
            }
        }
    });
}

/// Median round trip of 1-byte echoes from host A to host B over one TCP
/// connection (opened first, not timed).
fn median_rtt(rounds: usize) -> Duration {
    let mut s = in_netns("nda", || {
        TcpStream::connect_timeout(&SocketAddr::from((B, ECHO_PORT)), Duration::from_secs(5)).expect("connect")
    });
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rtts = Vec::new();
    let mut b = [0u8; 1];
    for i in 0..rounds {
        let t = Instant::now();
        s.write_all(&[i as u8]).unwrap();
        s.read_exact(&mut b).expect("echo");
        assert_eq!(b[0], i as u8);
        rtts.push(t.elapsed());
    }
    rtts.sort();
    rtts[rtts.len() / 2]
}

/// Send `n` numbered datagrams from A to B (one flow), one every 200 µs;
/// the sequence numbers B received, in arrival order.
fn udp_burst(n: u32) -> Vec<u32> {
    let rx = in_netns("ndb", || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT)).expect("bind udp"));
    let tx = in_netns("nda", || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind udp"));
    rx.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(len) = rx.recv(&mut buf) {
            assert_eq!(len, 4);
            got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
        }
        got
    });
    for i in 0..n {
        tx.send_to(&i.to_be_bytes(), (B, UDP_PORT)).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    receiver.join().unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn netdelay_delays_and_restores() {
    // Cargo built the delayer for this test: use exactly that one.
    std::env::set_var("BULWARK_CHAOS_NETDELAY", env!("CARGO_BIN_EXE_chaos-netdelay"));
    run_isolated("netdelay_delays_and_restores", || {
        let hosts = hosts();
        net::setup(&hosts);
        start_echo();

        let off = median_rtt(15);
        eprintln!("netdelay: RTT A->B, no delay: {:.2} ms", ms(off));

        // 30 ms ± 10 ms each way, no loss (a lost segment's retransmission
        // would only blur the RTT check; loss is checked below).
        let imp = Impairment { delay: Duration::from_millis(30), jitter: Duration::from_millis(10), loss: 0.0 };
        let how = net::degrade_nfqueue(&hosts, &imp).expect("degrade_nfqueue");
        let Degraded::Nfqueue { delayers, .. } = &how else { panic!("{how:?}") };
        assert_eq!(delayers.len(), 2);
        for (h, _) in &hosts {
            assert_eq!(net::nfqueue_rules(h).len(), 1, "{h}: {:?}", net::nfqueue_rules(h));
        }
        let on = median_rtt(15);
        eprintln!("netdelay: RTT A->B, {imp} each way: {:.2} ms", ms(on));
        // Every packet is held ≥ 20 ms each way: ≥ 40 ms per round trip.
        // Assert 30 ms more than without (half the configured 60 ms), and
        // less than a second.
        assert!(
            on >= off + Duration::from_millis(30),
            "RTT {:.2} ms with the delayer, {:.2} ms without",
            ms(on),
            ms(off)
        );
        assert!(on < Duration::from_secs(1), "RTT {:.2} ms with the delayer", ms(on));

        // One UDP flow under 10 ms of jitter: without per-flow ordering,
        // datagrams 200 µs apart would overtake each other.
        let got = udp_burst(300);
        eprintln!("netdelay: UDP under jitter: {} of 300 received", got.len());
        assert_eq!(got.len(), 300, "no loss configured");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "reordered: {got:?}");

        let pids: Vec<i32> = delayers.iter().map(|d| d.pid).collect();
        let stats = net::restore(&hosts, &how);
        eprintln!("netdelay: delayers: {stats:?}");
        assert_eq!(stats.len(), 2);
        assert!(stats.iter().all(|s| !s.contains(": 0 packets")), "{stats:?}");
        for (h, _) in &hosts {
            assert!(net::nfqueue_rules(h).is_empty(), "{h}: {:?}", net::nfqueue_rules(h));
        }
        for pid in pids {
            // Reaped by restore: the pid no longer exists.
            assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(), "delayer {pid} alive");
        }
        let after = median_rtt(15);
        eprintln!("netdelay: RTT A->B after restore: {:.2} ms", ms(after));
        assert!(
            after < off + Duration::from_millis(20),
            "RTT {:.2} ms after restore, {:.2} ms before",
            ms(after),
            ms(off)
        );

        // Loss: 25 % of 400 datagrams (expect 300 through; the bounds are
        // ±10 standard deviations).
        let lossy = Impairment { delay: Duration::from_millis(5), jitter: Duration::ZERO, loss: 0.25 };
        let how = net::degrade_nfqueue(&hosts, &lossy).expect("degrade_nfqueue");
        let got = udp_burst(400);
        let stats = net::restore(&hosts, &how);
        eprintln!("netdelay: {lossy}: {} of 400 received; {stats:?}", got.len());
        assert!((210..=390).contains(&got.len()), "{} of 400 datagrams through at 25 % loss", got.len());
        assert!(got.windows(2).all(|w| w[0] < w[1]), "reordered: {got:?}");
        for (h, _) in &hosts {
            assert!(net::nfqueue_rules(h).is_empty(), "{h}: {:?}", net::nfqueue_rules(h));
        }
    });
}

/// A bad command line stops the delayer before it touches netlink (no
/// root needed): exit 1 and one line on stderr that says what is wrong.
#[test]
fn netdelay_refuses_a_bad_command_line() {
    let refused = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chaos-netdelay"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running chaos-netdelay");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    assert_eq!(refused(&["--loss", "2"]), "chaos-netdelay: --loss 2: not between 0 and 1\n");
    assert_eq!(refused(&["--queue", "x"]), "chaos-netdelay: --queue x: invalid digit found in string\n");
    assert_eq!(refused(&["--delay-ms", "50", "--bogus", "1"]), "chaos-netdelay: unknown option --bogus\n");
    assert_eq!(refused(&["--seed"]), "chaos-netdelay: --seed needs a value\n");
}
