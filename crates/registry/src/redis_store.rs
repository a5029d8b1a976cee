//! The Redis backend: string keys with `PX` expiry for records, and a sorted set per
//! cluster and one for the whole directory (scored by lease expiry) as indexes of servers.
//! Keys without expiry (settings made through the API) are durable writes, numbered, so
//! a registry that lost some is noticed (see [`PUT_DURABLE`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script};
use streamcdn_support::clock::now_ms;
use tokio::sync::watch;

use crate::address::RedisAddress;
use crate::error::Result;
use crate::link::{self, Continuity, Link};

/// The count of durable writes, and each durable key's number.
const DURABLE_COUNTER: &str = "durable-writes";
const DURABLE_NUMBERS: &str = "durable-numbers";
/// A key that lives as long as the registry's data (see `Link::check`).
const DATA_MARKER: &str = "data-marker";

/// A write that must outlive every server (provider settings set through the API,
/// the deployment's documents): stored with a number from a counter the registry
/// keeps, so a registry that comes back without it (restarted empty, or from an old
/// snapshot, because it did not persist) is noticed, and its writer can put it back.
static PUT_DURABLE: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_DURABLE_CODE));
const PUT_DURABLE_CODE: &str = r"
local n = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], KEYS[1], n)
return n";

/// Puts a durable write back unless the registry holds a later one of that key.
static REASSERT: LazyLock<Script> = LazyLock::new(|| Script::new(REASSERT_CODE));
const REASSERT_CODE: &str = r"
local held = tonumber(redis.call('HGET', KEYS[3], KEYS[1]) or '0')
local n = tonumber(ARGV[2])
if n == 0 then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
elseif held >= n then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if n > 0 then
  redis.call('HSET', KEYS[3], KEYS[1], n)
  if tonumber(redis.call('GET', KEYS[2]) or '0') < n then redis.call('SET', KEYS[2], n) end
end
return 1";

#[derive(Default)]
struct Durable {
    /// What this process wrote (or read back from a write-once key: number 0) and the
    /// number the registry gave it.
    written: HashMap<String, (String, u64)>,
    /// The highest durable-write number this process has seen the registry hold.
    highest_seen: u64,
}

struct Inner {
    link: Arc<Link>,
    namespace: String,
    durable: std::sync::Mutex<Durable>,
}

#[derive(Clone)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Compare-and-set in one round trip, so two servers cannot interleave.
static REPLACE_IF: LazyLock<Script> = LazyLock::new(|| Script::new(REPLACE_IF_CODE));
const REPLACE_IF_CODE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1";

/// Take a free lease or renew our own, in one round trip; the holder's value if it is
/// someone else's.
static HOLD: LazyLock<Script> = LazyLock::new(|| Script::new(HOLD_CODE));
const HOLD_CODE: &str = r"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false";

impl RedisStore {
    pub(crate) async fn connect(
        address: &RedisAddress,
        namespace: &str,
        continuity: watch::Sender<Continuity>,
    ) -> Result<Self> {
        let marker = format!("{namespace}:{DATA_MARKER}");
        let link = Arc::new(Link::new(address, marker, continuity)?);
        let store = Self {
            inner: Arc::new(Inner {
                link: link.clone(),
                namespace: namespace.to_owned(),
                durable: std::sync::Mutex::default(),
            }),
        };
        store.check_durable().await?;
        let weak = Arc::downgrade(&store.inner);
        link::watch_over(&link, move || {
            let weak = weak.clone();
            async move {
                if let Some(inner) = weak.upgrade() {
                    let store = RedisStore { inner };
                    if let Err(e) = store.check_durable().await {
                        tracing::warn!(error = %e, "cannot check the registry's durable settings");
                    }
                }
            }
        });
        Ok(store)
    }

    /// The background check, now (see [`Link::check`]).
    pub(crate) async fn recheck(&self) {
        self.inner.link.check().await;
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.inner.namespace)
    }

    fn durable(&self) -> std::sync::MutexGuard<'_, Durable> {
        self.inner.durable.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // Boxed: the callers' futures nest deep enough already (async layouts of the
        // roles' handlers hit the compiler's query depth otherwise).
        Ok(Box::pin(self.inner.link.run(op)).await?)
    }

    pub(crate) async fn put(&self, key: &str, value: String, ttl: Duration) -> Result<()> {
        let key = self.key(key);
        self.run(|mut c| {
            let options =
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(millis(ttl)));
            let (key, value) = (key.clone(), value.clone());
            async move { c.set_options::<_, _, ()>(key, value, options).await }
        })
        .await
    }

    /// Stores `value` under `key` for good, as a durable write (see [`PUT_DURABLE`]).
    pub(crate) async fn put_durable(&self, key: &str, value: String) -> Result<()> {
        let key = self.key(key);
        let (counter, numbers) = (self.key(DURABLE_COUNTER), self.key(DURABLE_NUMBERS));
        let number: u64 = self
            .run(|mut c| {
                let mut invocation = PUT_DURABLE.key(&key);
                invocation.key(&counter).key(&numbers).arg(&value);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let mut durable = self.durable();
        durable.highest_seen = durable.highest_seen.max(number);
        durable.written.insert(key, (value, number));
        Ok(())
    }

    /// Whether the registry still holds every durable write this process saw; if it
    /// does not (it came back without persisting), says so loudly and puts back what
    /// this process wrote.
    async fn check_durable(&self) -> Result<()> {
        let counter = self.key(DURABLE_COUNTER);
        let held: Option<u64> = self
            .run(|mut c| {
                let counter = counter.clone();
                async move { c.get(counter).await }
            })
            .await?;
        let held = held.unwrap_or(0);
        let (highest_seen, lost) = {
            let mut durable = self.durable();
            let highest_seen = durable.highest_seen;
            durable.highest_seen = highest_seen.max(held);
            let lost: Vec<(String, String, u64)> = durable
                .written
                .iter()
                .filter(|(_, (_, n))| *n == 0 || *n > held)
                .map(|(k, (v, n))| (k.clone(), v.clone(), *n))
                .collect();
            (highest_seen, lost)
        };
        if held >= highest_seen {
            return Ok(());
        }
        tracing::error!(
            registry_holds = held,
            seen_before = highest_seen,
            "THE REGISTRY LOST SETTINGS: it came back without the last {} changes made through \
             the API (provider settings, keys, documents). Redis must persist them: run it with \
             `appendonly yes` (see the README). Putting back the {} this server made.",
            highest_seen - held,
            lost.iter().filter(|(_, _, n)| *n > 0).count()
        );
        let numbers = self.key(DURABLE_NUMBERS);
        for (key, value, number) in lost {
            let put_back: i64 = self
                .run(|mut c| {
                    let mut invocation = REASSERT.key(&key);
                    invocation
                        .key(&counter)
                        .key(&numbers)
                        .arg(&value)
                        .arg(number);
                    async move { invocation.invoke_async(&mut c).await }
                })
                .await?;
            if put_back == 1 {
                tracing::warn!(key, "put a lost setting back into the registry");
            }
        }
        Ok(())
    }

    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.run(|mut c| {
            let keys = keys.clone();
            async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await }
        })
        .await
    }

    /// The value under `key`, after storing `value` there for good if there was none
    /// (SET NX). The value is remembered, to be put back if the registry loses it.
    pub(crate) async fn put_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let key = self.key(key);
        let stored: Option<String> = self
            .run(|mut c| {
                let key = key.clone();
                let options =
                    redis::SetOptions::default().conditional_set(redis::ExistenceCheck::NX);
                async move {
                    c.set_options::<_, _, ()>(&key, value, options).await?;
                    c.get(&key).await
                }
            })
            .await?;
        let stored = stored.unwrap_or_else(|| value.to_owned());
        self.durable()
            .written
            .entry(key)
            .or_insert_with(|| (stored.clone(), 0));
        Ok(stored)
    }

    pub(crate) async fn replace_if(
        &self,
        key: &str,
        expected: &str,
        new: Option<(String, Duration)>,
    ) -> Result<bool> {
        let (value, ttl) = new.map_or((String::new(), 0), |(v, t)| (v, millis(t)));
        let key = self.key(key);
        let replaced: i64 = self
            .run(|mut c| {
                let mut invocation = REPLACE_IF.key(&key);
                invocation.arg(expected).arg(&value).arg(ttl);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(replaced == 1)
    }

    pub(crate) async fn hold(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>> {
        let key = self.key(key);
        self.run(|mut c| {
            let mut invocation = HOLD.key(&key);
            invocation.arg(value).arg(millis(ttl));
            async move { invocation.invoke_async(&mut c).await }
        })
        .await
    }

    /// Adds `id` to the sorted set `index`, scored by its lease expiry.
    pub(crate) async fn add_member(&self, index: &str, id: &str, ttl: Duration) -> Result<()> {
        let set = self.key(index);
        self.run(|mut c| {
            let now = now_ms();
            let set = set.clone();
            async move {
                redis::pipe()
                    .zadd(&set, id, now + millis(ttl))
                    .ignore()
                    // Members gone for an hour leave the index.
                    .zrembyscore(&set, 0, now.saturating_sub(3_600_000))
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await
    }

    pub(crate) async fn members(&self, index: &str) -> Result<Vec<String>> {
        let set = self.key(index);
        self.run(|mut c| {
            // The node keys decide who is alive; the score only trims the candidates,
            // with slack for clock differences between servers.
            let since = now_ms().saturating_sub(60_000);
            let set = set.clone();
            async move { c.zrangebyscore(&set, since, "+inf").await }
        })
        .await
    }
}
