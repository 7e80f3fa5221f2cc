//! One virtual router's state machine (RFC 5798 section 6.4), without I/O.
//!
//! The router is told what happened ([`Event`]) and what time it is, and
//! answers with what to do ([`Action`]); [`Router::deadline`] says when it
//! next needs [`Event::Timer`]. Times follow the RFC, in centiseconds of
//! the master's advertisement interval:
//!
//! - `Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256`
//! - `Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time`
//!
//! so that, when a master dies, the backup with the highest priority
//! notices first. Beyond the RFC, as keepalived does: `preempt_delay`
//! (after startup, a backup with a higher priority waits this long before
//! it takes over from a lower one, so a host that just booted does not
//! take the address before its proxy is warm) and a priority that changes
//! while running ([`Event::Priority`], from health tracking).
//!
//! Two masters at once (a master paused, or cut off by its link, while a
//! backup took over; then back): the one that stays master never left the
//! Master state, so nothing of the RFC would move the neighbours' ARP
//! entries back from the other, which let the addresses go, and clients
//! lose the addresses until their ARP entries expire. So a master announces
//! its addresses again ([`Action::AnnounceAddresses`]) with an immediate
//! advertisement when it may have been taken over: when it hears a lower
//! master (as keepalived does), when its advertisement timer fires more
//! than two intervals late (it was paused: for three intervals nobody heard
//! it), and at the first advertisement after its advertisements could not
//! be sent ([`Event::AdvertisementFailed`]: link down).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The RFC's three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Initialize,
    Backup,
    Master,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
        }
    }
}

/// What one virtual router is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Virtual router id, 1 to 255, the same on every router of the group.
    pub vrid: u8,
    /// 1-254, or 255 for the owner of the addresses (who is master at once).
    pub priority: u8,
    /// This router's advertisement interval, 1 to 4095 centiseconds.
    pub interval_cs: u16,
    /// Whether a higher-priority backup takes over from a lower master.
    pub preempt: bool,
    /// How long after startup a higher-priority backup waits to preempt.
    pub preempt_delay: Duration,
    /// This router's own address on the interface: the tie-breaker when two
    /// masters advertise the same priority (the higher address wins).
    pub primary_address: Ipv4Addr,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Startup,
    Shutdown,
    /// The deadline passed.
    Timer,
    /// A valid advertisement for this vrid from another router.
    Advertisement {
        from: Ipv4Addr,
        priority: u8,
        interval_cs: u16,
    },
    /// Health tracking set this router's priority (1-255).
    Priority(u8),
    /// The last [`Action::Advertise`] could not be sent (link down).
    AdvertisementFailed,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (0: "I stop, take over").
    Advertise { priority: u8 },
    /// Add the virtual addresses to the interface and announce them with
    /// gratuitous ARP.
    TakeAddresses,
    /// Remove the virtual addresses from the interface.
    ReleaseAddresses,
    /// Announce the addresses, already on the interface, with gratuitous
    /// ARP again (to be done only if the advertisement before it was sent).
    AnnounceAddresses,
}

/// One virtual router.
#[derive(Debug)]
pub struct Router {
    settings: Settings,
    priority: u8,
    state: State,
    master_interval_cs: u16,
    deadline: Option<Instant>,
    preempt_from: Option<Instant>,
    /// An advertisement could not be sent since the last announcement.
    unheard: bool,
    /// When the addresses were last announced again for a lower master.
    reasserted_at: Option<Instant>,
}

fn centis(cs: u64) -> Duration {
    Duration::from_millis(cs * 10)
}

impl Router {
    pub fn new(settings: Settings) -> Router {
        Router {
            priority: settings.priority,
            master_interval_cs: settings.interval_cs,
            settings,
            state: State::Initialize,
            deadline: None,
            preempt_from: None,
            unheard: false,
            reasserted_at: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The priority this router advertises now (after health tracking).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// When [`Event::Timer`] is next due; `None` in Initialize.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The master's advertisement interval as learned from its adverts.
    pub fn master_interval(&self) -> Duration {
        centis(self.master_interval_cs.into())
    }

    /// `((256 - Priority) * Master_Adver_Interval) / 256`.
    pub fn skew_time(&self) -> Duration {
        // In microseconds, so small intervals keep their precision.
        let us = (256 - u64::from(self.priority)) * u64::from(self.master_interval_cs) * 10_000 / 256;
        Duration::from_micros(us)
    }

    /// `3 * Master_Adver_Interval + Skew_Time`.
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_interval() + self.skew_time()
    }

    /// Handle `event` at `now`; the actions are to be carried out in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match (self.state, event) {
            (_, Event::Priority(p)) => {
                self.priority = p.max(1);
                Vec::new()
            }
            (State::Master, Event::AdvertisementFailed) => {
                self.unheard = true;
                Vec::new()
            }
            (_, Event::AdvertisementFailed) => Vec::new(),
            (State::Initialize, Event::Startup) => {
                self.preempt_from = Some(now + self.settings.preempt_delay);
                if self.priority == 255 {
                    self.become_master(now)
                } else {
                    self.become_backup(self.settings.interval_cs, now);
                    Vec::new()
                }
            }
            (State::Initialize, _) => Vec::new(),
            (State::Backup, Event::Shutdown) => {
                self.state = State::Initialize;
                self.deadline = None;
                Vec::new()
            }
            (State::Master, Event::Shutdown) => {
                self.state = State::Initialize;
                self.deadline = None;
                vec![Action::Advertise { priority: 0 }, Action::ReleaseAddresses]
            }
            (_, Event::Startup) => Vec::new(),
            (State::Backup, Event::Timer) => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.become_master(now)
                } else {
                    Vec::new()
                }
            }
            (State::Master, Event::Timer) => {
                let interval = centis(self.settings.interval_cs.into());
                match self.deadline {
                    Some(d) if now >= d => {
                        // Silent for over three intervals: a backup may have
                        // taken the addresses meanwhile.
                        let paused = now >= d + 2 * interval;
                        self.deadline = Some(now + interval);
                        if paused || std::mem::take(&mut self.unheard) {
                            vec![Action::Advertise { priority: self.priority }, Action::AnnounceAddresses]
                        } else {
                            vec![Action::Advertise { priority: self.priority }]
                        }
                    }
                    _ => Vec::new(),
                }
            }
            (State::Backup, Event::Advertisement { priority: 0, .. }) => {
                // The master stops: take over after the skew time alone, so
                // the highest-priority backup goes first.
                self.deadline = Some(now + self.skew_time());
                Vec::new()
            }
            (State::Backup, Event::Advertisement { priority, interval_cs, .. }) => {
                let may_preempt = self.settings.preempt && self.preempt_from.is_none_or(|t| now >= t);
                if !may_preempt || priority >= self.priority {
                    self.become_backup(interval_cs, now);
                }
                // Else: a lower master while we may preempt; let the
                // master-down timer run out and take over.
                Vec::new()
            }
            (State::Master, Event::Advertisement { priority: 0, .. }) => {
                // Another master stopped: make sure the group hears from us now.
                self.deadline = Some(now + centis(self.settings.interval_cs.into()));
                vec![Action::Advertise { priority: self.priority }]
            }
            (State::Master, Event::Advertisement { from, priority, interval_cs }) => {
                let higher =
                    priority > self.priority || (priority == self.priority && from > self.settings.primary_address);
                let interval = centis(self.settings.interval_cs.into());
                if higher {
                    self.become_backup(interval_cs, now);
                    vec![Action::ReleaseAddresses]
                } else if self.reasserted_at.is_some_and(|t| now < t + interval) {
                    // A backlog of its advertisements (read after a pause)
                    // is one event.
                    Vec::new()
                } else {
                    // A lower master: it steps down on our advertisement;
                    // the neighbours may still send it our traffic.
                    self.reasserted_at = Some(now);
                    self.deadline = Some(now + interval);
                    vec![Action::Advertise { priority: self.priority }, Action::AnnounceAddresses]
                }
            }
        }
    }

    fn become_master(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Master;
        self.unheard = false;
        self.deadline = Some(now + centis(self.settings.interval_cs.into()));
        vec![Action::Advertise { priority: self.priority }, Action::TakeAddresses]
    }

    fn become_backup(&mut self, master_interval_cs: u16, now: Instant) {
        self.state = State::Backup;
        self.master_interval_cs = master_interval_cs.max(1);
        self.deadline = Some(now + self.master_down_interval());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn router(priority: u8, preempt: bool) -> Router {
        Router::new(Settings {
            vrid: 51,
            priority,
            interval_cs: 100,
            preempt,
            preempt_delay: Duration::ZERO,
            primary_address: ME,
        })
    }

    fn advert(priority: u8) -> Event {
        Event::Advertisement { from: PEER, priority, interval_cs: 100 }
    }

    #[test]
    fn skew_and_master_down_interval_are_the_rfcs() {
        let r = router(100, true);
        // (256 - 100) * 100 cs / 256 = 60.9375 cs.
        assert_eq!(r.skew_time(), Duration::from_micros(609_375));
        assert_eq!(r.master_down_interval(), Duration::from_micros(3_609_375));
        // A higher priority notices a dead master sooner.
        assert!(router(200, true).master_down_interval() < r.master_down_interval());
    }

    #[test]
    fn a_backup_becomes_master_when_the_master_falls_silent() {
        let t0 = Instant::now();
        let mut r = router(100, true);
        assert_eq!(r.handle(Event::Startup, t0), vec![]);
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.deadline(), Some(t0 + r.master_down_interval()));
        // Adverts from a higher master keep it backup.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.handle(advert(150), t1), vec![]);
        assert_eq!(r.deadline(), Some(t1 + r.master_down_interval()));
        // A timer before the deadline does nothing.
        assert_eq!(r.handle(Event::Timer, t1 + Duration::from_secs(3)), vec![]);
        assert_eq!(r.state(), State::Backup);
        // Silence past the master-down interval: master.
        let t2 = t1 + r.master_down_interval();
        assert_eq!(r.handle(Event::Timer, t2), vec![Action::Advertise { priority: 100 }, Action::TakeAddresses]);
        assert_eq!(r.state(), State::Master);
        assert_eq!(r.deadline(), Some(t2 + Duration::from_secs(1)));
        // As master it advertises every interval.
        assert_eq!(r.handle(Event::Timer, t2 + Duration::from_secs(1)), vec![Action::Advertise { priority: 100 }]);
        // A higher router returns: back to backup, addresses released.
        let t3 = t2 + Duration::from_millis(1500);
        assert_eq!(r.handle(advert(150), t3), vec![Action::ReleaseAddresses]);
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.deadline(), Some(t3 + r.master_down_interval()));
    }

    #[test]
    fn the_owner_is_master_at_once() {
        let t0 = Instant::now();
        let mut r = router(255, true);
        assert_eq!(r.handle(Event::Startup, t0), vec![Action::Advertise { priority: 255 }, Action::TakeAddresses]);
        assert_eq!(r.state(), State::Master);
    }

    #[test]
    fn preemption_lets_a_higher_backup_take_over_and_can_be_off() {
        let t0 = Instant::now();
        let mut high = router(200, true);
        high.handle(Event::Startup, t0);
        // A lower master's adverts are ignored: the timer runs out.
        let t1 = t0 + Duration::from_secs(1);
        high.handle(advert(100), t1);
        assert_eq!(high.deadline(), Some(t0 + high.master_down_interval()));
        let acts = high.handle(Event::Timer, t0 + high.master_down_interval());
        assert_eq!(acts, vec![Action::Advertise { priority: 200 }, Action::TakeAddresses]);

        let mut polite = router(200, false);
        polite.handle(Event::Startup, t0);
        polite.handle(advert(100), t1);
        assert_eq!(polite.deadline(), Some(t1 + polite.master_down_interval()));
        assert_eq!(polite.handle(Event::Timer, t0 + polite.master_down_interval()), vec![]);
        assert_eq!(polite.state(), State::Backup);
    }

    #[test]
    fn preempt_delay_holds_preemption_after_startup() {
        let t0 = Instant::now();
        let mut r = Router::new(Settings { preempt_delay: Duration::from_secs(30), ..router(200, true).settings });
        r.handle(Event::Startup, t0);
        // Within the delay a lower master is followed like a higher one.
        let t1 = t0 + Duration::from_secs(10);
        r.handle(advert(100), t1);
        assert_eq!(r.deadline(), Some(t1 + r.master_down_interval()));
        // After it, the lower master is ignored and we take over.
        let t2 = t0 + Duration::from_secs(31);
        let deadline = r.deadline();
        r.handle(advert(100), t2);
        assert_eq!(r.deadline(), deadline);
    }

    #[test]
    fn priority_zero_hands_over_after_the_skew_time() {
        let t0 = Instant::now();
        let mut master = router(150, true);
        master.handle(Event::Startup, t0);
        master.handle(Event::Timer, t0 + master.master_down_interval());
        assert_eq!(master.state(), State::Master);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            master.handle(Event::Shutdown, t1),
            vec![Action::Advertise { priority: 0 }, Action::ReleaseAddresses]
        );
        assert_eq!(master.state(), State::Initialize);
        assert_eq!(master.deadline(), None);

        let mut backup = router(100, true);
        backup.handle(Event::Startup, t0);
        backup.handle(advert(150), t1);
        backup.handle(advert(0), t1);
        assert_eq!(backup.deadline(), Some(t1 + backup.skew_time()));
        let acts = backup.handle(Event::Timer, t1 + backup.skew_time());
        assert_eq!(acts, vec![Action::Advertise { priority: 100 }, Action::TakeAddresses]);
    }

    #[test]
    fn two_masters_at_the_same_priority_keep_the_higher_address() {
        let t0 = Instant::now();
        let mut r = router(100, true);
        r.handle(Event::Startup, t0);
        r.handle(Event::Timer, t0 + r.master_down_interval());
        // The peer's address is lower: we stay master, and tell it.
        let acts = r.handle(advert(100), t0 + Duration::from_secs(5));
        assert_eq!(acts, vec![Action::Advertise { priority: 100 }, Action::AnnounceAddresses]);
        assert_eq!(r.state(), State::Master);
        // A higher address at the same priority wins.
        let higher = Event::Advertisement { from: Ipv4Addr::new(10, 0, 0, 3), priority: 100, interval_cs: 100 };
        assert_eq!(r.handle(higher, t0 + Duration::from_secs(6)), vec![Action::ReleaseAddresses]);
        assert_eq!(r.state(), State::Backup);
    }

    #[test]
    fn a_master_whose_priority_drops_yields_to_a_preempting_backup() {
        let t0 = Instant::now();
        let mut a = router(150, true);
        let mut b = Router::new(Settings { primary_address: PEER, ..router(100, true).settings });
        a.handle(Event::Startup, t0);
        b.handle(Event::Startup, t0);
        a.handle(Event::Timer, t0 + a.master_down_interval());
        assert_eq!(a.state(), State::Master);
        // Health tracking takes 100 off the master.
        a.handle(Event::Priority(50), t0 + Duration::from_secs(5));
        let ad = |p| Event::Advertisement { from: ME, priority: p, interval_cs: 100 };
        let acts = a.handle(Event::Timer, a.deadline().unwrap());
        assert_eq!(acts, vec![Action::Advertise { priority: 50 }]);
        // b ignores the lower master and takes over when its timer runs out.
        let t1 = t0 + Duration::from_secs(5);
        b.handle(ad(150), t0 + Duration::from_secs(4));
        b.handle(ad(50), t1);
        let down = b.deadline().unwrap();
        assert_eq!(b.handle(Event::Timer, down), vec![Action::Advertise { priority: 100 }, Action::TakeAddresses]);
        // a hears b's higher priority and steps down.
        let from_b = Event::Advertisement { from: PEER, priority: 100, interval_cs: 100 };
        assert_eq!(a.handle(from_b, down), vec![Action::ReleaseAddresses]);
        assert_eq!(a.state(), State::Backup);
    }

    /// A master that was paused while the backup took over resumes with
    /// its timer long overdue and a backlog of the other's adverts: it
    /// announces its addresses again once, so that clients come back.
    #[test]
    fn a_paused_master_announces_its_addresses_again() {
        let t0 = Instant::now();
        let mut r = router(200, true);
        r.handle(Event::Startup, t0);
        r.handle(Event::Timer, t0 + r.master_down_interval());
        let due = r.deadline().unwrap();
        // On time (or a little late): a plain advertisement.
        let on_time = due + Duration::from_secs(1);
        assert_eq!(r.handle(Event::Timer, on_time), vec![Action::Advertise { priority: 200 }]);
        // Three intervals late: nobody heard us for longer than a backup waits.
        let resumed = r.deadline().unwrap() + Duration::from_secs(3);
        let acts = r.handle(Event::Timer, resumed);
        assert_eq!(acts, vec![Action::Advertise { priority: 200 }, Action::AnnounceAddresses]);
        assert_eq!(r.deadline(), Some(resumed + Duration::from_secs(1)));
        // The other master's queued adverts: one announcement per interval.
        let acts = r.handle(advert(140), resumed);
        assert_eq!(acts, vec![Action::Advertise { priority: 200 }, Action::AnnounceAddresses]);
        assert_eq!(r.handle(advert(140), resumed + Duration::from_millis(10)), vec![]);
        assert_eq!(r.handle(advert(140), resumed + Duration::from_millis(20)), vec![]);
        assert_eq!(r.state(), State::Master);
        let later = resumed + Duration::from_secs(1);
        assert_eq!(r.handle(advert(140), later).len(), 2);
    }

    /// A master whose link went down (its advertisements fail) announces
    /// its addresses again with the first advertisement after that.
    #[test]
    fn a_master_cut_off_announces_again_after_failed_advertisements() {
        let t0 = Instant::now();
        let mut r = router(200, true);
        r.handle(Event::Startup, t0);
        r.handle(Event::Timer, t0 + r.master_down_interval());
        assert_eq!(r.handle(Event::AdvertisementFailed, r.deadline().unwrap()), vec![]);
        let next = r.deadline().unwrap();
        assert_eq!(r.handle(Event::Timer, next), vec![Action::Advertise { priority: 200 }, Action::AnnounceAddresses]);
        // Sent this time: the next one is plain.
        assert_eq!(r.handle(Event::Timer, r.deadline().unwrap()), vec![Action::Advertise { priority: 200 }]);
        // A backup ignores a failed send.
        let mut b = router(100, true);
        b.handle(Event::Startup, t0);
        assert_eq!(b.handle(Event::AdvertisementFailed, t0), vec![]);
        assert_eq!(b.state(), State::Backup);
    }

    #[test]
    fn a_backup_learns_the_masters_interval() {
        let t0 = Instant::now();
        let mut r = router(100, true);
        r.handle(Event::Startup, t0);
        r.handle(Event::Advertisement { from: PEER, priority: 200, interval_cs: 10 }, t0);
        assert_eq!(r.master_interval(), Duration::from_millis(100));
        // 3 x 100 ms + (156 * 10 cs / 256) = 300 + 60.9375 ms.
        assert_eq!(r.master_down_interval(), Duration::from_micros(360_937));
    }
}
