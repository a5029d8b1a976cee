//! `streamcdn`: one binary, a subcommand per role. Only this crate knows how roles are
//! wired together.

mod admin;
mod check_config;
mod context;
mod directory;
mod http;
mod memory;
mod quickstart;
mod roles;
mod sign_url_cli;
mod tls;
mod trigger_cli;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use streamcdn_config::{Config, LogFormat, RegistryBackend};

use context::Role;
use roles::archiver::ArchiverRole;
use roles::cis::CisRole;
use roles::edge::EdgeRole;
use roles::ingest::Ingest;
use roles::provider_api::ProviderApi;
use roles::router::RouterRole;

#[derive(Parser)]
#[command(name = "streamcdn", version, about = "Self-hosted live-streaming CDN")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role on this machine: RTMP ingest, origin, edge cache, archiver,
    /// request router, admin API.
    Up {
        /// TOML configuration; without one, embedded defaults and a generated `demo`
        /// provider are used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `node.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the ingest role: RTMP in, HTTP origin out, recordings on local storage.
    Ingest {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the edge role: an HTTP cache below `edge.parents`, or a top tier that finds
    /// streams through the registry and archived recordings in on-demand storage.
    Edge {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the archiver of an ingest cluster (one per cluster): finished recordings to
    /// on-demand storage after their provider's `archive_after`.
    Archiver {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Purge, invalidate or preposition content on every server carrying it, through
    /// the command invocation system's admin API; shows progress until the command is
    /// final and exits 0 only if it completed.
    Trigger {
        operation: TriggerOperation,
        /// Content URLs (any hostname the deployment serves).
        urls: Vec<String>,
        /// RFC 8007 patterns (`*`, `?`, `$` escapes), e.g. `*/demo/cam/*.m4s`.
        #[arg(long = "pattern")]
        patterns: Vec<String>,
        /// An admin API: the CIS's (`up` or `router`), or any server's of the
        /// deployment, whose node directory leads to it (a standby CIS names the active
        /// one).
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        admin: String,
        /// Admin bearer token; default `$STREAMCDN_ADMIN_TOKEN`, else `./data/admin-token`
        /// (what `up` generated).
        #[arg(long)]
        token: Option<String>,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Run the request router: authoritative DNS for the delivery zone and HTTP
    /// redirects, answering each viewer with the best edge of the node directory.
    Router {
        #[arg(long)]
        config: PathBuf,
    },
    /// Mint a signed playback URL (the provider needs playback keys) through the admin
    /// API, and print it.
    SignUrl {
        provider: String,
        /// One stream; none: every stream of the provider.
        #[arg(long)]
        stream: Option<String>,
        #[arg(long, default_value = "1h")]
        expires_in: String,
        /// Bind the URL to a client network, e.g. 198.51.100.0/24.
        #[arg(long)]
        client: Option<String>,
        /// What it opens under the stream (default index.m3u8; "" for the player page).
        #[arg(long)]
        path: Option<String>,
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        admin: String,
        /// Admin bearer token; default `$STREAMCDN_ADMIN_TOKEN`, else `./data/admin-token`.
        #[arg(long)]
        token: Option<String>,
        /// Where viewers play, put before the printed path.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
    },
    /// Validate a configuration file and report the first error with its line and key;
    /// then list what the role will listen on.
    CheckConfig {
        file: PathBuf,
        /// The role the file is for; default: the file's name when it names one
        /// (`edge.toml`), else `up`.
        #[arg(long, value_enum)]
        role: Option<check_config::CheckedRole>,
    },
}

fn load(config: Option<&PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = data_dir {
        config.node.data_dir = dir;
    }
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::CheckConfig { file, role } = &cli.command {
        return match Config::load(file) {
            Ok(config) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let named = role.or_else(|| check_config::CheckedRole::from_file_name(file));
                let role = named.unwrap_or(check_config::CheckedRole::Up);
                print!(
                    "{}",
                    check_config::report(file, &text, &config, role, named.is_some())
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        };
    }
    if let Command::Trigger {
        operation,
        urls,
        patterns,
        admin,
        token,
        timeout,
    } = &cli.command
    {
        if urls.is_empty() && patterns.is_empty() {
            bail!("name at least one URL or --pattern");
        }
        let operation = match operation {
            TriggerOperation::Purge => "purge",
            TriggerOperation::Invalidate => "invalidate",
            TriggerOperation::Preposition => "preposition",
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let timeout = std::time::Duration::from_secs(*timeout);
        let token = trigger_cli::admin_token(token.as_deref());
        let complete = runtime.block_on(trigger_cli::run(
            admin,
            token.as_deref(),
            operation,
            urls,
            patterns,
            timeout,
        ))?;
        std::process::exit(if complete { 0 } else { 1 });
    }
    if let Command::SignUrl {
        provider,
        stream,
        expires_in,
        client,
        path,
        admin,
        token,
        base,
    } = &cli.command
    {
        let token = trigger_cli::admin_token(token.as_deref());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(sign_url_cli::run(sign_url_cli::SignRequest {
            admin,
            token: token.as_deref(),
            provider,
            stream: stream.as_deref(),
            expires_in,
            client: client.as_deref(),
            path: path.as_deref(),
            base,
        }));
    }
    // The configuration first: it says how to log, and a file that does not load is
    // reported before anything starts.
    let config = match &cli.command {
        Command::Up { config, data_dir } => load(config.as_ref(), data_dir.clone())?,
        Command::Ingest { config, data_dir } | Command::Archiver { config, data_dir } => {
            load(Some(config), data_dir.clone())?
        }
        Command::Edge { config } | Command::Router { config } => load(Some(config), None)?,
        Command::CheckConfig { .. } | Command::Trigger { .. } | Command::SignUrl { .. } => {
            return Ok(());
        }
    };
    init_logging(config.log.format);
    memory::start_trimming().context("starting the memory trimming thread")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up { .. } => up(config).await,
            Command::Ingest { .. } => {
                if config.providers.is_empty() {
                    bail!("the ingest role needs at least one [[providers]] entry in its configuration");
                }
                if config.registry.backend == RegistryBackend::Memory {
                    tracing::warn!("registry.backend is \"memory\": no edge in another process can find this server's streams");
                }
                context::run(config, vec![Box::new(Ingest), Box::new(ProviderApi)], |_| {}).await
            }
            Command::Edge { .. } => {
                if config.edge.parents.is_empty()
                    && config.registry.backend == RegistryBackend::Memory
                {
                    bail!("the edge role needs edge.parents (a mid-tier) or registry.backend = \"redis\" to find streams");
                }
                let edge = Box::new(EdgeRole::new(&config));
                context::run(config, vec![edge], |_| {}).await
            }
            Command::Archiver { .. } => {
                if config.registry.backend == RegistryBackend::Memory {
                    bail!("the archiver role shares the registry with its cluster: set registry.backend = \"redis\"");
                }
                let roles: Vec<Box<dyn Role>> = vec![Box::new(ArchiverRole), Box::new(ProviderApi)];
                context::run(config, roles, |_| {}).await
            }
            Command::Router { .. } => {
                if config.registry.backend == RegistryBackend::Memory {
                    bail!("the router finds edges in the node directory: set registry.backend = \"redis\"");
                }
                context::run(config, vec![Box::new(RouterRole), Box::new(CisRole)], |_| {}).await
            }
            Command::CheckConfig { .. } | Command::Trigger { .. } | Command::SignUrl { .. } => {
                Ok(())
            }
        }
    })
}

/// Log lines to standard output, filtered by `STREAMCDN_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STREAMCDN_LOG")
        .unwrap_or_else(|_| "info".into());
    let lines = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        // Colour codes only for a person at a terminal, never into a file or journald.
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        LogFormat::Json => lines.json().flatten_event(true).init(),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TriggerOperation {
    Purge,
    Invalidate,
    Preposition,
}

/// Every role on this machine, with embedded defaults: a generated `demo` provider if
/// the configuration names none, and the playback address on loopback if none is set.
async fn up(mut config: Config) -> anyhow::Result<()> {
    if config.providers.is_empty() {
        config
            .providers
            .push(quickstart::demo_provider(&config.node.data_dir)?);
    }
    if config.http.advertised_url().is_none() {
        config.http.advertise = Some(context::local_url(config.http.listen));
    }
    // Even the quickstart's admin API takes a token.
    let generated_token = if config.admin.tokens.is_empty() {
        let token = quickstart::admin_token(&config.node.data_dir)?;
        config
            .admin
            .tokens
            .push(streamcdn_config::AdminTokenConfig {
                token: token.clone(),
                role: streamcdn_config::AdminRole::Admin,
                provider: None,
            });
        Some(token)
    } else {
        None
    };
    let provider = config.providers[0].clone();
    let roles: Vec<Box<dyn Role>> = vec![
        Box::new(Ingest),
        Box::new(EdgeRole::new(&config)),
        Box::new(ArchiverRole),
        Box::new(ProviderApi),
        Box::new(RouterRole),
        Box::new(CisRole),
    ];
    context::run(config, roles, |ctx| {
        quickstart::print_quickstart(
            &ctx.config,
            &provider,
            ctx.tls_fingerprint.as_deref(),
            generated_token.as_deref(),
        )
    })
    .await
}
