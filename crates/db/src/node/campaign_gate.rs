//! When a node may campaign on request (`/raft/elect`, a leadership
//! transfer's last step).
//!
//! openraft's `trigger().elect()` campaigns whatever the node accepted
//! before, while the primary counts each acceptance of this node's for
//! this node's lease (`leader_acks`): a campaign within the lease after
//! an acceptance could elect a second primary while the first still
//! counts a quorum. So the node campaigns only once a lease has passed
//! since it last answered an append of a primary's, and while no append
//! is on its way through openraft (one accepted but still syncing is
//! about to count). The decision and the appends meet at two atomics: an
//! append announces itself (`in_flight`) before it checks whether a
//! campaign is being started (`deciding`), and the campaign announces
//! itself before it checks for appends, so one of the two always sees the
//! other (both sequentially consistent): the append is refused, or the
//! campaign waits for it.
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct CampaignGate {
    /// Appends handed towards openraft and not answered yet.
    in_flight: AtomicUsize,
    /// A campaign is being decided: appends arriving now are refused.
    deciding: AtomicBool,
    /// When this node last answered an append of a primary's.
    heard: Mutex<Option<Instant>>,
}

/// Why a campaign was not started.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum NoCampaign {
    #[error("a primary spoke to this node within its lease for {0:?}: it has not stepped aside")]
    PrimaryStillSpeaks(Duration),
}

/// A campaign being decided: arriving appends are refused until it is
/// dropped (whatever way the decision ends).
struct Deciding<'a>(&'a CampaignGate);

impl<'a> Deciding<'a> {
    fn begin(gate: &'a CampaignGate) -> Self {
        gate.deciding.store(true, SeqCst);
        Deciding(gate)
    }
}

impl Drop for Deciding<'_> {
    fn drop(&mut self) {
        self.0.deciding.store(false, SeqCst);
    }
}

/// One append on its way through openraft (see [`CampaignGate::append`]).
pub(crate) struct AppendPass<'a> {
    gate: &'a CampaignGate,
}

impl AppendPass<'_> {
    /// The append was answered: a primary spoke to this node now.
    pub(crate) fn answered(self) {
        *self.gate.heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

impl Drop for AppendPass<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, SeqCst);
    }
}

impl CampaignGate {
    /// An append arrives: its pass, or `None` while a campaign is being
    /// started (refuse it; its primary is being replaced).
    pub(crate) fn append(&self) -> Option<AppendPass<'_>> {
        self.in_flight.fetch_add(1, SeqCst);
        let pass = AppendPass { gate: self };
        (!self.deciding.load(SeqCst)).then_some(pass)
    }

    /// Run `start` (the campaign) once `lease` has passed since this node
    /// last answered an append and none is in flight; gives up after
    /// `limit`.
    pub(crate) async fn campaign<F: Future>(
        &self,
        lease: Duration,
        limit: Duration,
        start: impl FnOnce() -> F,
    ) -> Result<F::Output, NoCampaign> {
        let began = Instant::now();
        loop {
            let due = self.heard.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t + lease);
            let quiet = || self.in_flight.load(SeqCst) == 0 && due.is_none_or(|d| Instant::now() >= d);
            if quiet() {
                let deciding = Deciding::begin(self);
                // Appends first, then when one was last answered: an append
                // answered meanwhile set `heard` before it left `in_flight`,
                // so a count that saw it leave also sees its `heard`.
                let none_in_flight = self.in_flight.load(SeqCst) == 0;
                let heard_now = self.heard.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t + lease);
                if none_in_flight && heard_now == due {
                    let started = start().await;
                    drop(deciding);
                    return Ok(started);
                }
            }
            if began.elapsed() >= limit {
                return Err(NoCampaign::PrimaryStillSpeaks(began.elapsed()));
            }
            let wake = due.filter(|d| *d > Instant::now()).unwrap_or_else(|| Instant::now() + Duration::from_millis(5));
            tokio::time::sleep_until(wake.min(began + limit)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_campaign_waits_a_lease_after_the_last_append_and_for_appends_in_flight() {
        let gate = CampaignGate::default();
        let lease = Duration::from_millis(60);
        gate.append().expect("no campaign").answered();
        let heard = Instant::now();
        let at = gate.campaign(lease, Duration::from_secs(5), || async { Instant::now() }).await.unwrap();
        assert!(at >= heard + lease, "campaigned {:?} after the last append", at - heard);

        // An append in flight holds the campaign until it is answered.
        let pass = gate.append().expect("no campaign");
        let campaign = gate.campaign(lease, Duration::from_secs(5), || async { Instant::now() });
        let answer = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            pass.answered();
            Instant::now()
        };
        let (at, answered) = tokio::join!(campaign, answer);
        assert!(at.unwrap() >= answered + lease);

        // A primary that spoke within the lease, for longer than the
        // campaign may wait: no campaign.
        gate.append().expect("no campaign").answered();
        let r = gate.campaign(Duration::from_secs(5), Duration::from_millis(100), || async {}).await;
        assert!(matches!(r, Err(NoCampaign::PrimaryStillSpeaks(_))), "{r:?}");
    }

    #[test]
    fn an_append_during_the_decision_is_refused() {
        let gate = CampaignGate::default();
        gate.deciding.store(true, SeqCst);
        assert!(gate.append().is_none());
        assert_eq!(gate.in_flight.load(SeqCst), 0, "a refused append is not in flight");
        gate.deciding.store(false, SeqCst);
        assert!(gate.append().is_some());
    }
}
