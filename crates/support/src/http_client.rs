//! One way to build hyper-util's HTTP client, for every server that calls another over
//! HTTP (the edge's upstreams, the router's health checks and probes, publish hooks, the
//! CIS's control requests and partners). Each caller states what differs (connect
//! timeout, idle connections, HTTP/2) in [`ClientOptions`]; `TCP_NODELAY` is always on,
//! as small requests and held playlist answers must not wait for Nagle.

use std::time::Duration;

use hyper::body::Body;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// How a client connects and which connections it keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientOptions {
    connect_timeout: Option<Duration>,
    keep_idle_for: Option<Duration>,
    http2_keep_alive: Option<Duration>,
    any_scheme: bool,
}

impl ClientOptions {
    /// HTTP/1.1, the system's connect timeout, and no idle connection kept: each request
    /// opens its own (edges count open connections as viewers, hook servers need not
    /// keep any alive).
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives up connecting after `timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Keeps idle connections for reuse, each closed after `idle` unused.
    pub fn keep_idle_for(mut self, idle: Duration) -> Self {
        self.keep_idle_for = Some(idle);
        self
    }

    /// Speaks HTTP/2 only (h2c on a plain connector: one connection per upstream),
    /// pinging every `keep_alive`, idle or not, and closing a connection whose ping is not
    /// answered within as long.
    pub fn http2(mut self, keep_alive: Duration) -> Self {
        self.http2_keep_alive = Some(keep_alive);
        self
    }

    /// Lets the connector take `https://` URLs, for a TLS connector that wraps it.
    pub fn under_tls(mut self) -> Self {
        self.any_scheme = true;
        self
    }

    /// The TCP connector with these options.
    pub fn connector(&self) -> HttpConnector {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(self.connect_timeout);
        if self.any_scheme {
            connector.enforce_http(false);
        }
        connector
    }

    /// The client builder with these options, for a connector of the caller's own (TLS).
    pub fn builder(&self) -> Builder {
        let mut builder = Client::builder(TokioExecutor::new());
        match self.keep_idle_for {
            Some(idle) => builder.pool_idle_timeout(idle),
            None => builder.pool_max_idle_per_host(0),
        };
        if let Some(keep_alive) = self.http2_keep_alive {
            builder
                .http2_only(true)
                .timer(TokioTimer::new())
                .http2_keep_alive_interval(keep_alive)
                .http2_keep_alive_timeout(keep_alive)
                .http2_keep_alive_while_idle(true);
        }
        builder
    }

    /// A plain-HTTP client with these options.
    pub fn client<B>(&self) -> Client<HttpConnector, B>
    where
        B: Body + Send,
        B::Data: Send,
    {
        self.builder().build(self.connector())
    }
}

/// An error and its sources on one line (hyper's own says only "client error").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_client_without_idle_connections_asks_over_a_new_one_each_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut connections = 0;
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                connections += 1;
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await.unwrap();
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
            connections
        });
        let client = ClientOptions::new()
            .connect_timeout(Duration::from_secs(2))
            .client::<Empty<Bytes>>();
        for _ in 0..2 {
            let response = client
                .get(format!("http://{address}/").parse().unwrap())
                .await
                .unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(server.await.unwrap(), 2);
    }

    #[test]
    fn options_say_what_differs_from_the_default() {
        let options = ClientOptions::new()
            .keep_idle_for(Duration::from_secs(30))
            .http2(Duration::from_secs(10))
            .under_tls();
        assert_ne!(options, ClientOptions::new());
        assert_eq!(ClientOptions::new(), ClientOptions::default());
    }
}
