//! One HTTP exchange with its body read whole, for the CIS's calls (servers' control
//! endpoints, partners) and the `trigger` CLI.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderMap, Method, StatusCode};
use streamcdn_support::http_client::ClientOptions;
use thiserror::Error;

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// The plain HTTP client. No idle connections kept: edges count open connections as
/// viewers.
pub fn client() -> Client {
    ClientOptions::new()
        .connect_timeout(Duration::from_secs(2))
        .client()
}

#[derive(Debug, Error)]
pub enum CallError {
    #[error("{url}: {source}")]
    Request {
        url: String,
        source: hyper::http::Error,
    },
    #[error("{url}: {source}")]
    Connect {
        url: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: {source}")]
    Body { url: String, source: hyper::Error },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// The answer: status, headers and body.
pub type Answer = (StatusCode, HeaderMap, Bytes);

/// One exchange, bounded by `timeout`.
pub async fn call<C>(
    client: &hyper_util::client::legacy::Client<C, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, CallError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|source| CallError::Request {
            url: url.to_owned(),
            source,
        })?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|source| CallError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|source| CallError::Body {
                url: url.to_owned(),
                source,
            })?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| CallError::Timeout {
            url: url.to_owned(),
            timeout,
        })?
}
