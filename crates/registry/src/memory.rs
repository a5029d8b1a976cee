//! The in-process backend: a map with expiry times, for a single-process deployment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Inner {
    values: HashMap<String, (String, Instant)>,
    members: HashMap<String, HashMap<String, Instant>>,
    puts: u64,
}

/// The time leases are measured by, for tests that move it by hand: it starts when made
/// and stands still until [`ManualClock::advance`].
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    elapsed: Arc<Mutex<Duration>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            start: Instant::now(),
            elapsed: Arc::default(),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }

    fn now(&self) -> Instant {
        self.start + *self.elapsed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Default)]
pub(crate) struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// `None`: the system's monotonic clock.
    clock: Option<ManualClock>,
}

impl MemoryStore {
    pub(crate) fn with_clock(clock: ManualClock) -> Self {
        MemoryStore {
            inner: Arc::default(),
            clock: Some(clock),
        }
    }

    fn now(&self) -> Instant {
        self.clock
            .as_ref()
            .map_or_else(Instant::now, ManualClock::now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn put(&self, key: &str, value: String, ttl: Duration) {
        let now = self.now();
        let mut inner = self.lock();
        inner.puts += 1;
        // Expired entries nobody reads again are swept now and then.
        if inner.puts.is_multiple_of(1024) {
            inner.values.retain(|_, (_, expires)| *expires > now);
        }
        inner.values.insert(key.to_owned(), (value, now + ttl));
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let mut inner = self.lock();
        match inner.values.get(key) {
            Some((value, expires)) if *expires > self.now() => Some(value.clone()),
            Some(_) => {
                inner.values.remove(key);
                None
            }
            None => None,
        }
    }

    /// The value under `key`, after storing `value` there if there was none.
    pub(crate) fn put_if_absent(&self, key: &str, value: &str, ttl: Duration) -> String {
        if let Some(existing) = self.get(key) {
            return existing;
        }
        let mut inner = self.lock();
        inner
            .values
            .entry(key.to_owned())
            .or_insert_with(|| (value.to_owned(), self.now() + ttl))
            .0
            .clone()
    }

    /// Stores `value` under `key` for `ttl` if the key is free or already holds
    /// `value` (taken or renewed: `None`); else the value that holds it.
    pub(crate) fn hold(&self, key: &str, value: &str, ttl: Duration) -> Option<String> {
        let now = self.now();
        let mut inner = self.lock();
        match inner.values.get(key) {
            Some((held, expires)) if *expires > now && held != value => Some(held.clone()),
            _ => {
                inner
                    .values
                    .insert(key.to_owned(), (value.to_owned(), now + ttl));
                None
            }
        }
    }

    pub(crate) fn replace_if(
        &self,
        key: &str,
        expected: &str,
        new: Option<(String, Duration)>,
    ) -> bool {
        if self.get(key).as_deref() != Some(expected) {
            return false;
        }
        let mut inner = self.lock();
        match new {
            Some((value, ttl)) => {
                inner
                    .values
                    .insert(key.to_owned(), (value, self.now() + ttl));
            }
            None => {
                inner.values.remove(key);
            }
        }
        true
    }

    pub(crate) fn add_member(&self, index: &str, id: &str, ttl: Duration) {
        let now = self.now();
        let mut inner = self.lock();
        let members = inner.members.entry(index.to_owned()).or_default();
        members.retain(|_, expires| *expires > now);
        members.insert(id.to_owned(), now + ttl);
    }

    pub(crate) fn members(&self, index: &str) -> Vec<String> {
        let now = self.now();
        self.lock()
            .members
            .get(index)
            .map(|m| {
                m.iter()
                    .filter(|(_, expires)| **expires > now)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}
