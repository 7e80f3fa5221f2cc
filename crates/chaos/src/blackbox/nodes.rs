//! The checker's three `bulwark db` processes: each with its own data dir
//! and log file under the work dir, on fixed loopback ports for its API
//! and its Raft listener (so a node restarted after a kill -9 comes back
//! at the addresses its peers know),
//! all three bootstrapping with the same peers. Started, killed, paused
//! and resumed only from the thread that created them: each child has a
//! parent-death signal, which Linux ties to the spawning thread.
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a node may take to print its ready line.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// What the nemesis did to a node last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    /// SIGSTOP: the process exists, its sockets accept, it answers nothing.
    Paused,
    /// Killed (or exited); its data dir stays.
    Down,
}

pub struct Node {
    pub id: u64,
    /// The client API.
    pub addr: SocketAddr,
    /// The Raft listener.
    pub raft_addr: SocketAddr,
    pub dir: PathBuf,
    child: Option<Child>,
    pub state: NodeState,
    /// Starts so far (1 after the first).
    pub starts: u32,
}

/// Why a node could not be (re)started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its data dir or its config file could not be written.
    #[error("node {node}: {}: {source}", path.display())]
    Files {
        node: u64,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every attempt failed; why the last one did.
    #[error("node {node} did not start: {last} (log: {})", log.display())]
    NoStart {
        node: u64,
        #[source]
        last: SpawnError,
        log: PathBuf,
    },
}

/// Why one attempt to start a node's process failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Its log file could not be opened.
    #[error("{}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The binary could not be run.
    #[error("running {}: {source}", bin.display())]
    Run {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// It printed no ready line in time (or exited first); `status` is how
    /// it ended once killed.
    #[error("no ready line within {within:?} ({status})")]
    NotReady { within: Duration, status: String },
}

/// Timing of the cluster, written into every node's config.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    pub write_timeout: Duration,
}

/// A node as its peers know it: id, API and Raft addresses.
pub type Peer = (u64, SocketAddr, SocketAddr);

/// `count` free consecutive loopback ports from `first` on (outside the
/// kernel's usual ephemeral range when `first` is, so no outgoing
/// connection takes one while its node is down).
pub fn free_ports(first: u16, count: u16) -> Option<u16> {
    let mut base = first;
    while base.checked_add(count).is_some() && base < first.saturating_add(2000) {
        let all = (0..count).all(|i| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, base + i)).is_ok());
        if all {
            return Some(base);
        }
        base += count;
    }
    None
}

impl Node {
    pub fn new(id: u64, addr: SocketAddr, raft_addr: SocketAddr, root: &Path) -> Node {
        let dir = root.join(format!("node{id}"));
        Node { id, addr, raft_addr, dir, child: None, state: NodeState::Down, starts: 0 }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    fn config(&self, secret: &str, peers: &[Peer], t: Timing) -> String {
        let mut c = format!(
            "node_id = {}\nlisten = \"{}\"\nraft_listen = \"{}\"\ndata_dir = \"{}\"\nsecret = \"{secret}\"\n\
             bootstrap = true\nheartbeat_interval = \"{}ms\"\nelection_timeout = \"{}ms\"\nwrite_timeout = \"{}ms\"\n",
            self.id,
            self.addr,
            self.raft_addr,
            self.dir.join("data").display(),
            t.heartbeat.as_millis(),
            t.election_timeout.as_millis(),
            t.write_timeout.as_millis(),
        );
        for (id, addr, raft_addr) in peers {
            c.push_str(&format!("\n[[peer]]\nid = {id}\naddress = \"{addr}\"\nraft_address = \"{raft_addr}\"\n"));
        }
        c
    }

    /// Start `bulwark db` and wait for its ready line. A node that exits
    /// before it is ready is tried twice more (its port may still be held
    /// for a moment by the killed process's sockets).
    pub fn start(&mut self, bin: &Path, secret: &str, peers: &[Peer], t: Timing) -> Result<(), StartError> {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let files = |path: &Path| {
            let (node, path) = (self.id, path.to_path_buf());
            move |source| StartError::Files { node, path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(files(&self.dir))?;
        let cfg = self.dir.join("db.toml");
        std::fs::write(&cfg, self.config(secret, peers, t)).map_err(files(&cfg))?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.spawn(bin, &cfg) {
                Ok(child) => {
                    self.child = Some(child);
                    self.state = NodeState::Running;
                    self.starts += 1;
                    return Ok(());
                }
                Err(last) if attempts >= 3 => {
                    return Err(StartError::NoStart { node: self.id, last, log: self.log_path() });
                }
                Err(_) => {}
            }
        }
    }

    fn spawn(&self, bin: &Path, cfg: &Path) -> Result<Child, SpawnError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|source| SpawnError::Log { path: self.log_path(), source })?;
        let mut cmd = Command::new(bin);
        cmd.arg("db").arg("-c").arg(cfg).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let mut child = cmd.spawn().map_err(|source| SpawnError::Run { bin: bin.to_path_buf(), source })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let ready = serde_json::from_str::<serde_json::Value>(&line).is_ok_and(|v| v.get("ready").is_some());
                if ready {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        match rx.recv_timeout(READY_WITHIN) {
            Ok(()) => Ok(child),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(SpawnError::NotReady { within: READY_WITHIN, status })
            }
        }
    }

    fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.state = NodeState::Down;
    }

    pub fn pause(&mut self) {
        self.signal(Signal::SIGSTOP);
        self.state = NodeState::Paused;
    }

    pub fn resume(&mut self) {
        self.signal(Signal::SIGCONT);
        self.state = NodeState::Running;
    }

    /// Whether the process ended on its own (a crash the nemesis did not
    /// cause); reaps it.
    pub fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(s)) => {
                self.child = None;
                self.state = NodeState::Down;
                Some(s.to_string())
            }
            _ => None,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_whose_binary_cannot_run_says_why_and_where_its_log_is() {
        let dir = tempfile::tempdir().unwrap();
        let loopback = |port| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let mut n = Node::new(7, loopback(1), loopback(2), dir.path());
        let t = Timing {
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(400),
            write_timeout: Duration::from_secs(1),
        };
        let e = n.start(Path::new("/nonexistent/bulwark"), "secret", &[], t).unwrap_err();
        let StartError::NoStart { node: 7, last: SpawnError::Run { bin, source }, log } = &e else {
            panic!("not a failed run: {e:?}")
        };
        assert_eq!(bin, Path::new("/nonexistent/bulwark"));
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(log, &dir.path().join("node7").join("node.log"));
        let text = e.to_string();
        assert!(text.starts_with("node 7 did not start: running /nonexistent/bulwark: "), "{text}");
        assert!(text.ends_with(&format!("(log: {})", log.display())), "{text}");
        assert_eq!(n.state, NodeState::Down);
        assert_eq!(n.starts, 0);
    }
}
