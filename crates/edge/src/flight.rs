//! Request coalescing: concurrent fills of one key share a single upstream fetch.
//!
//! Not moka's `entry().or_insert_with`: that only coalesces fills of absent keys, and
//! a stale playlist must be refreshed once while it stays in the cache to serve if the
//! refresh fails.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub struct Flights<T> {
    inflight: Mutex<HashMap<String, Arc<OnceCell<T>>>>,
}

impl<T: Clone> Default for Flights<T> {
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Flights<T> {
    /// Runs `fill` unless a fill of `key` is under way, in which case its result is
    /// shared. Returns the result and whether this call ran the fill. If the caller
    /// running it is cancelled, a waiting caller takes over.
    pub async fn run<F: Future<Output = T>>(&self, key: &str, fill: F) -> (T, bool) {
        let cell = self
            .lock()
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let mut ran = false;
        let result = cell
            .get_or_init(|| {
                ran = true;
                fill
            })
            .await
            .clone();
        let mut inflight = self.lock();
        if inflight.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            inflight.remove(key);
        }
        (result, ran)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<T>>>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }
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
                    .run("k", async {
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
}
