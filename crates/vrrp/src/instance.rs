//! One floating address group at work: the [`Router`] driven by a real
//! socket, clock and interface.
//!
//! [`run`] opens the interface and the socket, removes addresses a crashed
//! earlier run may have left behind, starts the router, then loops over
//! three inputs: received advertisements, the router's deadline and the
//! proxy's health (a [`watch`] of "can serve"), and carries out the
//! router's actions. On `stop` it sends priority 0 and releases the
//! addresses, so a backup takes over after its skew time instead of the
//! whole master-down interval.

use crate::link::{Interface, Link};
use crate::packet::{Advertisement, Received};
use crate::router::{Action, Event, Router, Settings, State};
use crate::socket::{AdvertSocket, Destination};
use crate::{arp, VrrpError};
use bulwark_config::vrrp::VrrpInstance;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Gratuitous ARPs sent on taking the addresses: one at once, then these
/// more, `GARP_SPACING` apart, for neighbours that missed the first.
const GARP_REPEATS: u32 = 2;
const GARP_SPACING: Duration = Duration::from_millis(200);

/// What an instance shows to status pages and metrics.
#[derive(Debug, Default)]
pub struct InstanceStatus {
    state: AtomicU8,
    priority: AtomicU8,
    pub adverts_sent: AtomicU64,
    pub adverts_received: AtomicU64,
    /// Datagrams that were not a valid advertisement, or came from a
    /// sender that is not a configured unicast peer.
    pub bad_packets: AtomicU64,
    pub became_master: AtomicU64,
    pub became_backup: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl InstanceStatus {
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            1 => State::Backup,
            2 => State::Master,
            _ => State::Initialize,
        }
    }

    pub fn priority(&self) -> u8 {
        self.priority.load(Ordering::Relaxed)
    }

    /// The last error the instance met (interface, address, socket), if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, router: &Router) {
        let code = match router.state() {
            State::Initialize => 0,
            State::Backup => 1,
            State::Master => 2,
        };
        let old = self.state.swap(code, Ordering::Relaxed);
        if old != code {
            match router.state() {
                State::Master => self.became_master.fetch_add(1, Ordering::Relaxed),
                State::Backup => self.became_backup.fetch_add(1, Ordering::Relaxed),
                State::Initialize => 0,
            };
        }
        self.priority.store(router.priority(), Ordering::Relaxed);
    }

    fn error(&self, e: &VrrpError) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }
}

/// The priority to advertise: the configured one, less `track_weight`
/// while the proxy cannot serve.
pub fn effective_priority(config: &VrrpInstance, serving: bool) -> u8 {
    if serving || config.priority == 255 && config.track_weight == 0 {
        config.priority
    } else {
        config.priority.saturating_sub(config.track_weight).max(1)
    }
}

struct Speaker {
    config: VrrpInstance,
    link: Link,
    interface: Interface,
    socket: AdvertSocket,
    status: Arc<InstanceStatus>,
}

impl Speaker {
    /// Carry out `actions` in order; whether an advertisement among them
    /// could not be sent (the router is told: [`Event::AdvertisementFailed`]).
    async fn perform(&self, actions: Vec<Action>) -> bool {
        let mut advert_failed = false;
        for action in actions {
            let done = match action {
                Action::Advertise { priority } => {
                    let sent = self.advertise(priority);
                    advert_failed = sent.is_err();
                    sent
                }
                Action::TakeAddresses => self.take().await,
                Action::ReleaseAddresses => self.release().await,
                // Pointless while the link cannot carry the advertisement.
                Action::AnnounceAddresses if advert_failed => Ok(()),
                Action::AnnounceAddresses => {
                    tracing::info!(vrrp = %self.config.name, "announcing the addresses again (another master was heard, or this one was silent)");
                    self.announce();
                    Ok(())
                }
            };
            if let Err(e) = done {
                tracing::warn!(vrrp = %self.config.name, "{e}");
                self.status.error(&e);
            }
        }
        advert_failed
    }

    fn advertise(&self, priority: u8) -> Result<(), VrrpError> {
        let ad = Advertisement {
            vrid: self.config.vrid,
            priority,
            interval_cs: self.config.interval_cs(),
            addresses: self.config.virtual_addresses(),
        };
        self.socket.send(&ad).map_err(|e| VrrpError::Socket { action: "sending an advertisement", source: e })?;
        self.status.adverts_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn take(&self) -> Result<(), VrrpError> {
        for &net in &self.config.addresses {
            self.link.add(self.interface.index, net).await?;
        }
        self.announce();
        Ok(())
    }

    /// Gratuitous ARPs for the addresses, from a task: one round now, then
    /// [`GARP_REPEATS`] more.
    fn announce(&self) {
        let (index, mac) = (self.interface.index, self.interface.mac);
        let addresses: Vec<Ipv4Addr> = self.config.virtual_addresses();
        let name = self.config.name.clone();
        tokio::spawn(async move {
            for round in 0..=GARP_REPEATS {
                if round > 0 {
                    tokio::time::sleep(GARP_SPACING).await;
                }
                for a in &addresses {
                    if let Err(e) = arp::announce(index, mac, *a) {
                        tracing::warn!(vrrp = %name, "gratuitous ARP for {a}: {e}");
                    }
                }
            }
        });
    }

    async fn release(&self) -> Result<(), VrrpError> {
        for &net in &self.config.addresses {
            self.link.remove(self.interface.index, net).await?;
        }
        Ok(())
    }
}

/// Carry out a step's actions; a failed advertisement goes back to the
/// router (a master announces its addresses again once it is heard).
async fn act(speaker: &Speaker, router: &mut Router, actions: Vec<Action>) {
    if speaker.perform(actions).await {
        let again = router.handle(Event::AdvertisementFailed, Instant::now());
        speaker.status.set(router);
        speaker.perform(again).await;
    }
}

/// Run one `[[vrrp]]` entry until `stop` is cancelled.
pub async fn run(
    config: VrrpInstance,
    mut serving: watch::Receiver<bool>,
    stop: CancellationToken,
    status: Arc<InstanceStatus>,
) -> Result<(), VrrpError> {
    let link = Link::open()?;
    let interface = link.interface(&config.interface).await?;
    let virtuals: Vec<Ipv4Addr> = config.virtual_addresses();
    let source = match config.source {
        Some(s) => s,
        None => {
            interface.addresses.iter().copied().find(|a| !virtuals.contains(a)).ok_or_else(|| VrrpError::Interface {
                name: interface.name.clone(),
                reason: "has no IPv4 address of its own to send advertisements from".into(),
            })?
        }
    };
    let destination = match &config.unicast_peers {
        p if p.is_empty() => Destination::Multicast,
        p => Destination::Unicast(p.clone()),
    };
    let socket = AdvertSocket::open(&interface, source, destination)
        .map_err(|e| VrrpError::Socket { action: "opening the VRRP socket", source: e })?;
    let speaker = Speaker { config: config.clone(), link, interface, socket, status: status.clone() };
    // A master killed without a clean stop left its addresses behind.
    if let Err(e) = speaker.release().await {
        tracing::warn!(vrrp = %config.name, "{e}");
    }

    let mut router = Router::new(Settings {
        vrid: config.vrid,
        priority: effective_priority(&config, *serving.borrow_and_update()),
        interval_cs: config.interval_cs(),
        preempt: config.preempt,
        preempt_delay: config.preempt_delay,
        primary_address: source,
    });
    let mut last = State::Initialize;
    let step = |router: &mut Router, event: Event| {
        let actions = router.handle(event, Instant::now());
        status.set(router);
        actions
    };
    let actions = step(&mut router, Event::Startup);
    act(&speaker, &mut router, actions).await;
    tracing::info!(vrrp = %config.name, vrid = config.vrid, %source, priority = router.priority(), "vrrp started");
    let mut buf = vec![0u8; 2048];
    let mut health_open = true;
    loop {
        if router.state() != last {
            tracing::info!(vrrp = %config.name, from = last.as_str(), to = router.state().as_str(), "vrrp state changed");
            last = router.state();
        }
        let deadline = router.deadline().map(tokio::time::Instant::from_std);
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {
                let actions = step(&mut router, Event::Shutdown);
                speaker.perform(actions).await;
                tracing::info!(vrrp = %config.name, "vrrp stopped");
                return Ok(());
            }
            _ = timer => {
                let actions = step(&mut router, Event::Timer);
                act(&speaker, &mut router, actions).await;
            }
            changed = serving.changed(), if health_open => {
                if changed.is_err() {
                    health_open = false;
                    continue;
                }
                let p = effective_priority(&config, *serving.borrow_and_update());
                if p != router.priority() {
                    tracing::info!(vrrp = %config.name, priority = p, "vrrp priority changed by health tracking");
                }
                step(&mut router, Event::Priority(p));
            }
            got = speaker.socket.recv(&mut buf) => {
                let n = match got {
                    Ok(n) => n,
                    Err(e) => {
                        let e = VrrpError::Socket { action: "receiving", source: e };
                        tracing::warn!(vrrp = %config.name, "{e}");
                        status.error(&e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let received = match Received::parse(&buf[..n]) {
                    Ok(r) => r,
                    Err(e) => {
                        status.bad_packets.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(vrrp = %config.name, "ignored a datagram: {e}");
                        continue;
                    }
                };
                if received.source == source || received.advertisement.vrid != config.vrid {
                    continue;
                }
                if !speaker.socket.expects(received.source) {
                    status.bad_packets.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                status.adverts_received.fetch_add(1, Ordering::Relaxed);
                let ad = received.advertisement;
                let event = Event::Advertisement { from: received.source, priority: ad.priority, interval_cs: ad.interval_cs };
                let actions = step(&mut router, event);
                act(&speaker, &mut router, actions).await;
            }
        }
    }
}
