//! The Redis backend: string keys with `PX` expiry for records, and a sorted set per
//! cluster and one for the whole directory (scored by lease expiry) as indexes of servers.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use streamcdn_support::clock::now_ms;

use crate::error::Result;

#[derive(Clone)]
pub(crate) struct RedisStore {
    connection: ConnectionManager,
    namespace: String,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Compare-and-set in one round trip, so two servers cannot interleave.
const REPLACE_IF: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1";

/// Take a free lease or renew our own, in one round trip; the holder's value if it is
/// someone else's.
const HOLD: &str = r"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false";

impl RedisStore {
    pub(crate) async fn connect(url: &str, namespace: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            connection,
            namespace: namespace.to_owned(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.namespace)
    }

    pub(crate) async fn put(&self, key: &str, value: String, ttl: Duration) -> Result<()> {
        let mut c = self.connection.clone();
        let options =
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(millis(ttl)));
        c.set_options::<_, _, ()>(self.key(key), value, options)
            .await?;
        Ok(())
    }

    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.connection.clone();
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        Ok(redis::cmd("MGET").arg(&keys).query_async(&mut c).await?)
    }

    /// The value under `key`, after storing `value` there if there was none (SET NX).
    pub(crate) async fn put_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<String> {
        let mut c = self.connection.clone();
        let key = self.key(key);
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(millis(ttl)));
        c.set_options::<_, _, ()>(&key, value, options).await?;
        let stored: Option<String> = c.get(&key).await?;
        Ok(stored.unwrap_or_else(|| value.to_owned()))
    }

    pub(crate) async fn replace_if(
        &self,
        key: &str,
        expected: &str,
        new: Option<(String, Duration)>,
    ) -> Result<bool> {
        let mut c = self.connection.clone();
        let (value, ttl) = new.map_or((String::new(), 0), |(v, t)| (v, millis(t)));
        let replaced: i64 = Script::new(REPLACE_IF)
            .key(self.key(key))
            .arg(expected)
            .arg(value)
            .arg(ttl)
            .invoke_async(&mut c)
            .await?;
        Ok(replaced == 1)
    }

    pub(crate) async fn hold(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>> {
        let mut c = self.connection.clone();
        Ok(Script::new(HOLD)
            .key(self.key(key))
            .arg(value)
            .arg(millis(ttl))
            .invoke_async(&mut c)
            .await?)
    }

    /// Adds `id` to the sorted set `index`, scored by its lease expiry.
    pub(crate) async fn add_member(&self, index: &str, id: &str, ttl: Duration) -> Result<()> {
        let mut c = self.connection.clone();
        let now = now_ms();
        let set = self.key(index);
        redis::pipe()
            .zadd(&set, id, now + millis(ttl))
            .ignore()
            // Members gone for an hour leave the index.
            .zrembyscore(&set, 0, now.saturating_sub(3_600_000))
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    pub(crate) async fn members(&self, index: &str) -> Result<Vec<String>> {
        let mut c = self.connection.clone();
        let set = self.key(index);
        // The node keys decide who is alive; the score only trims the candidates, with
        // slack for clock differences between servers.
        let since = now_ms().saturating_sub(60_000);
        Ok(c.zrangebyscore(&set, since, "+inf").await?)
    }
}
