//! Admission to `MAX_SHIP_NUM`: a counting semaphore whose permits are held by ships in status
//! RUNNING or CREATING, with a fair (FIFO) bounded wait.
//!
//! A permit belongs to a ship id, so releasing is idempotent: every path that stops or removes a
//! ship can release without double-counting. When a permit frees and requests are queued, it is
//! handed to the head of the queue directly, so nothing can overtake the queue and nothing polls.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

/// Why a permit was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The limit is reached and the caller did not want to wait.
    #[error("maximum number of ships reached")]
    Full,
    /// The caller waited for the whole bound.
    #[error("timeout waiting for available ship slot")]
    Timeout,
}

/// How to behave at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtLimit {
    /// Fail at once.
    Reject,
    /// Queue for at most this long.
    Wait(Duration),
}

#[derive(Debug, Default)]
struct Inner {
    holders: HashSet<String>,
    queue: VecDeque<(String, oneshot::Sender<()>)>,
    /// Admissions of real requests in progress (see [`Admission::begin_demand`]).
    demand: usize,
}

/// The ship-slot semaphore.
#[derive(Debug)]
pub struct Admission {
    limit: Option<usize>,
    inner: Mutex<Inner>,
    /// Signalled when a permit is given back and nobody in the queue took it.
    freed: Notify,
}

impl Admission {
    /// A semaphore with `limit` permits (`None` = unlimited).
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            inner: Mutex::new(Inner::default()),
            freed: Notify::new(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `ship_id` holds a permit (start-up recovery), even above the limit.
    pub fn adopt(&self, ship_id: &str) {
        self.inner().holders.insert(ship_id.to_owned());
    }

    /// Whether `ship_id` holds a permit.
    pub fn holds(&self, ship_id: &str) -> bool {
        self.inner().holders.contains(ship_id)
    }

    /// The ship ids holding a permit, sorted.
    pub fn holders(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner().holders.iter().cloned().collect();
        v.sort();
        v
    }

    /// Number of permits held.
    pub fn occupancy(&self) -> usize {
        self.inner().holders.len()
    }

    /// Resolves after a permit was given back that the queue did not take (one waiter; a
    /// release with nobody waiting is remembered for the next call). The warm pool waits here
    /// for room.
    pub async fn freed(&self) {
        self.freed.notified().await;
    }

    /// Marks an admission of a real request as in progress until [`Admission::end_demand`]:
    /// meanwhile [`Admission::try_acquire_spare`] grants nothing, so a permit given back for
    /// the request (a warm-pool ship retired for it) cannot go to the pool instead.
    pub fn begin_demand(&self) {
        self.inner().demand += 1;
    }

    /// Ends what [`Admission::begin_demand`] began.
    pub fn end_demand(&self) {
        let mut inner = self.inner();
        inner.demand = inner.demand.saturating_sub(1);
    }

    /// Admissions of real requests in progress.
    pub fn demand(&self) -> usize {
        self.inner().demand
    }

    /// Takes a permit for `ship_id` only if one is free, nobody is queued and no admission of
    /// a real request is in progress — checked under the lock, in one step. The warm pool
    /// takes its permits this way, so it never competes with demand.
    pub fn try_acquire_spare(&self, ship_id: &str) -> bool {
        let mut inner = self.inner();
        let free = self.limit.is_none_or(|l| inner.holders.len() < l);
        if free && inner.queue.is_empty() && inner.demand == 0 {
            inner.holders.insert(ship_id.to_owned());
            return true;
        }
        false
    }

    /// Number of queued requests.
    pub fn waiting(&self) -> usize {
        self.inner().queue.len()
    }

    /// Takes a permit for `ship_id` (a no-op when it already holds one).
    pub async fn acquire(&self, ship_id: &str, at_limit: AtLimit) -> Result<(), AdmissionError> {
        let rx = {
            let mut inner = self.inner();
            if inner.holders.contains(ship_id) {
                return Ok(());
            }
            let free = self.limit.is_none_or(|l| inner.holders.len() < l);
            if free && inner.queue.is_empty() {
                inner.holders.insert(ship_id.to_owned());
                return Ok(());
            }
            let AtLimit::Wait(bound) = at_limit else {
                return Err(AdmissionError::Full);
            };
            let (tx, rx) = oneshot::channel();
            inner.queue.push_back((ship_id.to_owned(), tx));
            (rx, bound)
        };
        let (rx, bound) = rx;
        let mut guard = QueueGuard {
            admission: self,
            ship_id,
            armed: true,
        };
        let outcome = tokio::time::timeout(bound, rx).await;
        let mut inner = self.inner();
        guard.armed = false;
        inner.queue.retain(|(id, _)| id != ship_id);
        match outcome {
            Ok(Ok(())) => Ok(()),
            // The permit may have been handed over just as the timer fired.
            _ if inner.holders.contains(ship_id) => Ok(()),
            _ => Err(AdmissionError::Timeout),
        }
    }

    /// Gives back the permit of `ship_id` (idempotent) and hands it to the head of the queue.
    pub fn release(&self, ship_id: &str) {
        let mut inner = self.inner();
        if inner.holders.remove(ship_id) {
            Self::hand_over(&mut inner, self.limit);
            if inner.queue.is_empty() {
                self.freed.notify_one();
            }
        }
    }

    fn hand_over(inner: &mut Inner, limit: Option<usize>) {
        while limit.is_none_or(|l| inner.holders.len() < l) {
            let Some((id, tx)) = inner.queue.pop_front() else {
                return;
            };
            inner.holders.insert(id.clone());
            if tx.send(()).is_err() {
                // The waiter left (client disconnected): try the next one.
                inner.holders.remove(&id);
            }
        }
    }
}

/// Leaves the queue (and gives back a permit handed over too late) when a waiting request is
/// dropped, e.g. because its client disconnected.
struct QueueGuard<'a> {
    admission: &'a Admission,
    ship_id: &'a str,
    armed: bool,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut inner = self.admission.inner();
        inner.queue.retain(|(id, _)| id != self.ship_id);
        if inner.holders.remove(self.ship_id) {
            Admission::hand_over(&mut inner, self.admission.limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn reject_at_the_limit_and_release_is_idempotent() {
        let a = Admission::new(Some(1));
        a.acquire("a", AtLimit::Reject).await.unwrap();
        assert_eq!(
            a.acquire("b", AtLimit::Reject).await,
            Err(AdmissionError::Full)
        );
        a.release("a");
        a.release("a");
        a.acquire("b", AtLimit::Reject).await.unwrap();
        assert_eq!(a.occupancy(), 1);
    }

    #[tokio::test]
    async fn spare_permits_yield_to_demand() {
        let a = Admission::new(Some(2));
        assert!(a.try_acquire_spare("warm-1"));
        a.begin_demand();
        assert!(!a.try_acquire_spare("warm-2"), "demand in progress");
        a.acquire("real", AtLimit::Reject).await.unwrap();
        a.end_demand();
        assert!(!a.try_acquire_spare("warm-2"), "no permit left");
        a.release("real");
        assert!(a.try_acquire_spare("warm-2"));
        assert_eq!(a.holders(), ["warm-1", "warm-2"]);
    }

    #[tokio::test]
    async fn waiters_are_served_first_in_first_out() {
        let a = Arc::new(Admission::new(Some(1)));
        a.acquire("holder", AtLimit::Reject).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for name in ["w1", "w2", "w3"] {
            let (a2, order) = (a.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                a2.acquire(name, AtLimit::Wait(Duration::from_secs(5)))
                    .await
                    .unwrap();
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
                a2.release(name);
            }));
            while a.waiting() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        // A newcomer must not overtake the queue.
        assert_eq!(
            a.acquire("late", AtLimit::Reject).await,
            Err(AdmissionError::Full)
        );
        a.release("holder");
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["w1", "w2", "w3"]);
        assert_eq!(a.occupancy(), 0);
    }

    #[tokio::test]
    async fn wait_times_out_and_a_dropped_waiter_leaves_the_queue() {
        let a = Arc::new(Admission::new(Some(1)));
        a.acquire("holder", AtLimit::Reject).await.unwrap();
        let r = a
            .acquire("w", AtLimit::Wait(Duration::from_millis(30)))
            .await;
        assert_eq!(r, Err(AdmissionError::Timeout));
        assert_eq!(a.waiting(), 0);
        let a2 = a.clone();
        let dropped = tokio::spawn(async move {
            a2.acquire("gone", AtLimit::Wait(Duration::from_secs(30)))
                .await
        });
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        dropped.abort();
        let _ = dropped.await;
        assert_eq!(a.waiting(), 0);
        a.release("holder");
        assert_eq!(a.occupancy(), 0, "no permit may leak to a gone waiter");
    }
}
