//! `streamcdn sign-url PROVIDER [--stream S] [--expires-in 1h] [--client CIDR]`: mints a
//! signed playback URL through the providers' API (`POST
//! /api/v1/providers/<name>/signed-urls`) and prints it.

use std::time::Duration;

use anyhow::bail;
use axum::http::{Method, StatusCode};

use streamcdn_federation::call::{call, client};

pub struct SignRequest<'a> {
    pub admin: &'a str,
    pub token: Option<&'a str>,
    pub provider: &'a str,
    pub stream: Option<&'a str>,
    pub expires_in: &'a str,
    pub client: Option<&'a str>,
    pub path: Option<&'a str>,
    /// Where viewers play, prefixed to the printed path.
    pub base: &'a str,
}

pub async fn run(request: SignRequest<'_>) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "expires_in": request.expires_in });
    for (name, value) in [
        ("stream", request.stream),
        ("client", request.client),
        ("path", request.path),
    ] {
        if let Some(value) = value {
            body[name] = value.into();
        }
    }
    let url = format!(
        "{}/api/v1/providers/{}/signed-urls",
        request.admin.trim_end_matches('/'),
        request.provider
    );
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(token) = request.token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let (status, _, answer) = call(
        &client(),
        Method::POST,
        &url,
        &headers,
        serde_json::to_vec(&body)?,
        Duration::from_secs(10),
    )
    .await?;
    if status != StatusCode::OK {
        bail!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        );
    }
    let minted: serde_json::Value = serde_json::from_slice(&answer)?;
    let path = minted["path"].as_str().unwrap_or_default();
    println!("{}{path}", request.base.trim_end_matches('/'));
    eprintln!("expires at {} (Unix time)", minted["expires"]);
    Ok(())
}
