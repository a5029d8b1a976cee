//! Request coalescing: concurrent fills of one key share a single upstream fetch.
//!
//! Not moka's `entry().or_insert_with`: that only coalesces fills of absent keys, and
//! a stale playlist must be refreshed once while it stays in the cache to serve if the
//! refresh fails.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::{BoxFuture, FutureExt, Shared};

type Inflight<T> = Arc<Mutex<HashMap<String, Shared<BoxFuture<'static, T>>>>>;

pub struct Flights<T> {
    inflight: Inflight<T>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Runs `fill` as a task of its own unless a fill of `key` is under way, in which
    /// case its result is shared. Returns the result and whether this call started the
    /// fill. The fill runs to its end even if every caller waiting for it goes away: a
    /// request an upstream holds for seconds (LL-HLS) is neither cancelled nor sent
    /// again because the viewer that started it left.
    pub async fn run<F>(&self, key: &str, fill: F) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (flight, started) = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let (map, owned) = (self.inflight.clone(), key.to_owned());
                    // Removes its own entry (none other can be under `key` meanwhile)
                    // once its result is stored, so later callers do not join it.
                    let task = tokio::spawn(async move {
                        let result = fill.await;
                        lock(&map).remove(&owned);
                        result
                    });
                    let flight = async move {
                        match task.await {
                            Ok(result) => result,
                            // Cancelled only when the runtime shuts down, with its
                            // waiters; a panic is the waiters' too.
                            Err(e) => std::panic::resume_unwind(e.into_panic()),
                        }
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key.to_owned(), flight.clone());
                    (flight, true)
                }
            }
        };
        (flight.await, started)
    }
}

fn lock<T>(
    inflight: &Inflight<T>,
) -> MutexGuard<'_, HashMap<String, Shared<BoxFuture<'static, T>>>> {
    inflight.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_fills_share_one_run() {
        let flights = Arc::new(Flights::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        7
                    })
                    .await
            }));
        }
        let mut leaders = 0;
        for t in tasks {
            let (value, ran) = t.await.unwrap();
            assert_eq!(value, 7);
            leaders += usize::from(ran);
        }
        assert_eq!((runs.load(Ordering::SeqCst), leaders), (1, 1));
        // Done flights are forgotten: the next fill runs again.
        let (value, ran) = flights.run("k", async { 8 }).await;
        assert_eq!((value, ran), (8, true));
    }

    /// A held fill outlives the request that started it: a request after the starter
    /// left joins the same fill, which runs once.
    #[tokio::test(start_paused = true)]
    async fn a_fill_outlives_the_caller_that_started_it() {
        let flights = Arc::new(Flights::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let fill = |runs: Arc<AtomicUsize>| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(5)).await;
            1
        };
        let starter = tokio::spawn({
            let (flights, runs) = (flights.clone(), runs.clone());
            async move { flights.run("held", fill(runs)).await }
        });
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        starter.abort();
        assert!(starter.await.unwrap_err().is_cancelled());
        tokio::time::advance(Duration::from_secs(2)).await;
        let (value, started) = flights.run("held", fill(runs.clone())).await;
        assert_eq!((value, started), (1, false));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
