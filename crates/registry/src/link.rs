//! The connection to the Redis registry: one multiplexed connection to the master,
//! found directly or through Sentinel, replaced when it breaks. A command that fails
//! because its connection broke (the server restarted, the master failed over) is
//! retried once on a new connection; while the registry is known to be down, commands
//! fail at once and a background check reconnects. Each time the registry comes back
//! (after an outage, or as a different server: restarted, or a replica promoted) the
//! registry's [`Continuity`] moves on, so lease holders re-announce at once and caches
//! distrust "not found" for a lease.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ExistenceCheck, RedisError, RedisResult, RetryMethod,
    SetOptions,
};
use streamcdn_support::clock::now_ms;
use tokio::sync::{watch, Mutex};

use crate::address::RedisAddress;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a connected registry is pinged, so a broken connection is noticed
/// without waiting for a command.
pub(crate) const CHECK_UP_EVERY: Duration = Duration::from_millis(500);
/// How often reconnecting is tried while the registry is down.
pub(crate) const CHECK_DOWN_EVERY: Duration = Duration::from_millis(200);

/// The registry's availability as this process saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Continuity {
    /// How many times the registry came back: reconnected after an outage, or found
    /// to be another server than before (restarted, failed over).
    pub comebacks: u64,
    /// When it last came back.
    pub back_at: Option<Instant>,
}

enum Resolver {
    Server(redis::Client),
    Sentinel(Box<SentinelClient>),
}

/// What commands read: held only for a moment, never while connecting.
struct State {
    /// The connection in use and its number; `None` while down.
    connection: Option<(u64, MultiplexedConnection)>,
    generation: u64,
    /// The run id of the server last connected to (`INFO server`).
    run_id: Option<String>,
    /// A connection was lost since the last one was made.
    lost: bool,
    /// The registry's data marker as last read (see [`Link::check`]).
    marker: Option<String>,
}

pub(crate) struct Link {
    state: std::sync::Mutex<State>,
    /// Held while connecting, so one caller connects and the others wait for it.
    resolver: Mutex<Resolver>,
    config: AsyncConnectionConfig,
    continuity: watch::Sender<Continuity>,
    description: String,
    marker_key: String,
}

/// Errors that say the connection (or the server behind it) is gone or is no longer
/// the master: reconnecting, through Sentinel if so configured, may cure them.
fn connection_failed(error: &RedisError) -> bool {
    !matches!(error.retry_method(), RetryMethod::NoRetry)
}

fn down(what: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "registry unavailable",
        what.to_owned(),
    ))
}

impl Link {
    /// `marker_key`: where the registry keeps the marker of its data (see [`Link::check`]).
    pub(crate) fn new(
        address: &RedisAddress,
        marker_key: String,
        continuity: watch::Sender<Continuity>,
    ) -> RedisResult<Self> {
        let (resolver, description) = match address {
            RedisAddress::Server(url) => (
                Resolver::Server(redis::Client::open(url.as_str())?),
                url.clone(),
            ),
            RedisAddress::Sentinel {
                sentinels,
                master_set,
                db,
                username,
                password,
            } => {
                let addresses = sentinels
                    .iter()
                    .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
                let mut builder =
                    SentinelClientBuilder::new(addresses, master_set, SentinelServerType::Master)?
                        .set_client_to_redis_db(*db);
                if let Some(username) = username {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = password {
                    builder = builder.set_client_to_redis_password(password);
                }
                let hosts: Vec<String> =
                    sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                (
                    Resolver::Sentinel(Box::new(builder.build()?)),
                    format!(
                        "master set {master_set} of the sentinels {}",
                        hosts.join(",")
                    ),
                )
            }
        };
        Ok(Self {
            state: std::sync::Mutex::new(State {
                connection: None,
                generation: 0,
                run_id: None,
                lost: false,
                marker: None,
            }),
            resolver: Mutex::new(resolver),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT)),
            continuity,
            description,
            marker_key,
        })
    }

    /// Runs `op` on the master's connection; once more on a new connection if the
    /// first one broke under it (writes here are idempotent, or compare-and-set).
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, connection) = self.current().await?;
        match op(connection).await {
            Err(e) if connection_failed(&e) => {
                self.lose(generation, &e).await;
                let (_, connection) = self.reconnect().await.map_err(|_| e)?;
                op(connection).await
            }
            outcome => outcome,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection in use, or an error at once while the registry is down (the
    /// background check reconnects; waiting here would hold every caller).
    async fn current(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let never_connected = {
            let state = self.state();
            if let Some((generation, c)) = &state.connection {
                return Ok((*generation, c.clone()));
            }
            state.generation == 0
        };
        if never_connected {
            self.reconnect().await
        } else {
            Err(down(&self.description))
        }
    }

    async fn lose(&self, generation: u64, error: &RedisError) {
        let mut state = self.state();
        if state
            .connection
            .as_ref()
            .is_some_and(|(g, _)| *g == generation)
        {
            tracing::warn!(registry = self.description, %error, "lost the registry connection");
            state.connection = None;
            state.lost = true;
        }
    }

    /// A working connection: the current one if another caller reconnected meanwhile,
    /// else a new one to the master (asking the sentinels which server that is).
    async fn reconnect(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut resolver = self.resolver.lock().await;
        if let Some((generation, c)) = &self.state().connection {
            return Ok((*generation, c.clone()));
        }
        let connecting = async {
            let client = match &mut *resolver {
                Resolver::Server(client) => client.clone(),
                Resolver::Sentinel(sentinel) => sentinel.async_get_client().await?,
            };
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut connection)
                .await?;
            Ok::<_, RedisError>((connection, run_id(&info)))
        };
        let (connection, run_id) = match tokio::time::timeout(CONNECT_TIMEOUT * 3, connecting).await
        {
            Ok(outcome) => outcome?,
            Err(_) => return Err(down(&self.description)),
        };
        let mut state = self.state();
        state.generation += 1;
        state.connection = Some((state.generation, connection.clone()));
        let other_server = state.run_id.is_some() && state.run_id != run_id;
        if state.lost || other_server {
            self.came_back(if other_server {
                "the registry is back as another server (restarted or failed over)"
            } else {
                "the registry is back"
            });
        }
        state.run_id = run_id;
        state.lost = false;
        Ok((state.generation, connection))
    }

    fn came_back(&self, why: &str) {
        tracing::warn!(
            registry = self.description,
            "{why}; lease holders announce everything again, caches trust where streams were for a lease"
        );
        self.continuity.send_modify(|c| {
            c.comebacks += 1;
            c.back_at = Some(Instant::now());
        });
    }

    /// The background check, which doubles as a ping: reads the registry's data
    /// marker, a key that lives as long as the registry's data (set by whoever finds
    /// it missing). A marker gone or changed means the registry lost its data without
    /// this process seeing a new server (`FLUSHALL`, or a restart between two checks
    /// that the run id would catch too). Reconnects while the registry is down.
    /// Returns whether the registry is up.
    pub(crate) async fn check(&self) -> bool {
        let fresh = format!("{}-{}", now_ms(), std::process::id());
        let key = &self.marker_key;
        let read = self
            .run(|mut c| {
                let fresh = fresh.clone();
                async move {
                    redis::pipe()
                        .set_options(
                            key,
                            fresh,
                            SetOptions::default().conditional_set(ExistenceCheck::NX),
                        )
                        .ignore()
                        .get(key)
                        .query_async::<(Option<String>,)>(&mut c)
                        .await
                }
            })
            .await;
        match read {
            Ok((marker,)) => {
                let mut state = self.state();
                if state.marker.is_some() && state.marker != marker {
                    self.came_back("the registry lost its data (flushed, or restarted empty)");
                }
                state.marker = marker;
                true
            }
            Err(_) => self.reconnect().await.is_ok(),
        }
    }
}

fn run_id(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
}

/// Keeps checking `link` until nothing else holds it; calls `on_comeback` after each
/// comeback.
pub(crate) fn watch_over<F, Fut>(link: &Arc<Link>, on_comeback: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(link);
    let mut continuity = link.continuity.subscribe();
    tokio::spawn(async move {
        let mut up = true;
        loop {
            tokio::time::sleep(if up { CHECK_UP_EVERY } else { CHECK_DOWN_EVERY }).await;
            let Some(link) = weak.upgrade() else { break };
            up = link.check().await;
            drop(link);
            if continuity.has_changed().unwrap_or(false) {
                continuity.borrow_and_update();
                on_comeback().await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_run_id_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:6379\r\n";
        assert_eq!(super::run_id(info).as_deref(), Some("abc123"));
        assert_eq!(super::run_id("garbage"), None);
    }
}
