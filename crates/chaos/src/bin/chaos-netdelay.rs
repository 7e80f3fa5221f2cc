//! `chaos-netdelay`: hold the packets of an NFQUEUE for a delay ± jitter,
//! drop a fraction of them, release the rest in per-flow order. The chaos
//! suite's stand-in for `tc netem` on kernels without `sch_netem`; see
//! `bulwark_chaos::netdelay` for the why and `bulwark_chaos::net::degrade`
//! for how it is started (`ip netns exec HOST chaos-netdelay …`, plus
//! iptables `-j NFQUEUE --queue-bypass` rules in that namespace).
//!
//! ```text
//! chaos-netdelay [--queue N] [--delay-ms MS] [--jitter-ms MS] [--loss P] [--seed N]
//! ```
//!
//! Prints `ready` on stdout once bound to the queue. On SIGTERM or SIGINT
//! (or when its parent dies) it releases every packet still held, in order,
//! prints its counters as a second line on stdout and exits 0. If it dies some other way
//! the kernel drops what it held and, with `--queue-bypass` on the rules,
//! lets later packets through unqueued.
//!
//! The netlink protocol is the `nfq` crate's: pure Rust over a netlink
//! socket (no libnetfilter_queue/libmnl C library to install, MIT/Apache
//! like this project), and it supports holding messages and giving their
//! verdicts later and out of order, which a delay line needs. `nfqueue` and
//! `nf-queue` wrap the C libraries instead.
use bulwark_chaos::netdelay::{ArgsError, FlowKey, Impairment, Scheduler};
use nfq::{Message, Queue, Verdict};
use nix::errno::Errno;
use nix::libc::c_int;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// How often the queue is polled (`nfq` keeps its socket to itself, so
/// there is no fd to wait on): packets wait at most this long before they
/// are seen, on top of their delay.
const TICK: Duration = Duration::from_millis(1);
/// Bytes of each packet copied to userspace: the IP and TCP/UDP headers are
/// all the flow key needs, and a held packet then pins only a small buffer.
const COPY_RANGE: u16 = 128;
/// Packets the kernel may queue for us; past that (fail-open) they pass.
const QUEUE_MAX_LEN: u32 = 16384;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos-netdelay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the delayer stopped with a failure (printed on stderr).
#[derive(Debug, thiserror::Error)]
enum DelayerError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error("sigaction {signal}: {source}")]
    Sigaction {
        signal: Signal,
        #[source]
        source: Errno,
    },
    #[error("prctl: {0}")]
    Prctl(#[source] Errno),
    /// The test that started it died before it was set up.
    #[error("parent already gone")]
    Orphaned,
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("bind queue {queue}: {source}")]
    Bind {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("configure queue {queue}: {source}")]
    Configure {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("stdout: {0}")]
    Stdout(#[source] std::io::Error),
    /// Reading the queue failed while delaying (after `ready`).
    #[error("recv: {0}")]
    Recv(#[source] std::io::Error),
}

fn run() -> Result<(), DelayerError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (imp, rest) = Impairment::from_args(&args)?;
    let mut queue_num: u16 = 0;
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
            ^ u64::from(std::process::id());
    for (flag, value) in rest {
        match flag.as_str() {
            "--queue" => queue_num = value.parse().map_err(|e| ArgsError::number(&flag, &value, e))?,
            "--seed" => seed = value.parse().map_err(|e| ArgsError::number(&flag, &value, e))?,
            _ => return Err(ArgsError::Unknown { flag }.into()),
        }
    }

    let action = SigAction::new(SigHandler::Handler(on_stop), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { sigaction(sig, &action) }.map_err(|source| DelayerError::Sigaction { signal: sig, source })?;
    }
    // Never outlive the test that started us.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(DelayerError::Prctl)?;
    if nix::unistd::getppid().as_raw() == 1 {
        return Err(DelayerError::Orphaned);
    }

    let mut q = Queue::open().map_err(DelayerError::Socket)?;
    q.bind(queue_num).map_err(|source| DelayerError::Bind { queue: queue_num, source })?;
    let setup = |q: &mut Queue| -> std::io::Result<()> {
        q.set_copy_range(queue_num, COPY_RANGE)?;
        q.set_fail_open(queue_num, true)?;
        // Take GSO packets whole rather than have the kernel segment them
        // for us: we never change a payload.
        q.set_recv_gso(queue_num, true)?;
        q.set_queue_max_len(queue_num, QUEUE_MAX_LEN)
    };
    setup(&mut q).map_err(|source| DelayerError::Configure { queue: queue_num, source })?;
    q.set_nonblocking(true);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready").and_then(|_| out.flush()).map_err(DelayerError::Stdout)?;
    }

    let mut sched: Scheduler<Message> = Scheduler::new(imp, seed);
    let mut verdict_errors = 0u64;
    let mut verdict = |q: &mut Queue, mut m: Message, v: Verdict| {
        m.set_verdict(v);
        if let Err(e) = q.verdict(m) {
            verdict_errors += 1;
            if verdict_errors <= 3 {
                eprintln!("chaos-netdelay: verdict: {e}");
            }
        }
    };
    let mut failure = None;
    'run: while !STOP.load(Ordering::SeqCst) {
        loop {
            match q.recv() {
                Ok(m) => {
                    let flow = FlowKey::of_packet(m.get_payload());
                    if let Some(m) = sched.push(Instant::now(), flow, m) {
                        verdict(&mut q, m, Verdict::Drop);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue 'run,
                Err(e) => {
                    failure = Some(DelayerError::Recv(e));
                    break 'run;
                }
            }
        }
        let now = Instant::now();
        while let Some(m) = sched.pop_due(now) {
            verdict(&mut q, m, Verdict::Accept);
        }
        let wait = sched.next_due().map_or(TICK, |t| t.saturating_duration_since(Instant::now()).min(TICK));
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
    // Stopping: let everything still held through, in release order.
    while let Some(m) = sched.pop(Instant::now()) {
        verdict(&mut q, m, Verdict::Accept);
    }
    let _ = q.unbind(queue_num);
    let stats = sched.stats;
    // For net::restore; it may be gone (EPIPE) if the test died.
    let _ = writeln!(std::io::stdout(), "{stats}");
    if verdict_errors > 0 {
        eprintln!("chaos-netdelay: {verdict_errors} verdicts failed");
    }
    failure.map_or(Ok(()), Err)
}
