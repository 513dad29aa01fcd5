//! The command line: `serve`, `worker`, `node`, `migrate`, `admin ...`.
//!
//! `admin` works on the database directly (no running server needed) and goes through
//! the same services as the HTTP admin surface, so validation and audit are identical.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::db::Db;
use crate::records::Timestamp;
use crate::services;

#[derive(Debug, Parser)]
#[command(
    name = "scaigrid",
    version,
    about = "Audio-first media server and multi-tenant AI gateway"
)]
pub struct Cli {
    /// TOML configuration file (environment and flags override it).
    #[arg(long, env = "SCAIGRID_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP/WebSocket server (and, in the embedded default, its workers).
    Serve,
    /// Run a background worker (job processing lands with the ScaiEcho/ScaiSpeak work).
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// The text-to-speech phonemizer child (espeak-ng in its own process); started by
    /// the server's engines, not by hand.
    #[command(hide = true)]
    Phonemizer,
    /// Run an inference node: load the engines and serve them over gRPC. `serve`
    /// starts its own; run this by hand for nodes on other machines.
    Node(NodeArgs),
    /// Print the error code table (code, HTTP status, WebSocket close code, the fix) as
    /// Markdown: `docs/errors.md`.
    Errors,
    /// Print the permissions and built-in roles as Markdown: `docs/permissions.md`.
    Permissions,
    /// Administer tenants, users and API keys directly in the database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Transcribe audio files and folders on a running server (`SCAIGRID_URL`,
    /// `SCAIGRID_API_KEY`): one subtitle or transcript file per input, resumable.
    Transcribe(crate::client::transcribe::Args),
    /// Synthesize a text on a running server into an audio file (`-o out.mp3`).
    Speak(crate::client::speak::Args),
}

/// `scaigrid node`: where it listens, and engine settings over `[engines]`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// `unix:/path/to/socket` or `host:port`.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: crate::inference::Address,
    /// The address edges reach this node at, announced in the registry (`[redis]`);
    /// default: the listening address.
    #[arg(long)]
    pub advertise: Option<crate::inference::Address>,
    /// This node's id (default: `[engines] node_id`), unique in the deployment.
    #[arg(long)]
    pub node_id: Option<String>,
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub intra_threads: Option<usize>,
    #[arg(long)]
    pub multilingual: bool,
    /// The engines to load at start, by id (comma separated; default `[engines]
    /// models`, else all but Whisper base). Others can be loaded later
    /// (`POST /v1/infra/nodes/{id}/models`).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Memory this node may fill with models, in MB (default `[engines]
    /// memory_limit_mb`; 0: the device's free memory).
    #[arg(long)]
    pub memory_limit_mb: Option<u64>,
    /// Where this node runs (default `[engines] region`), for instance placement.
    #[arg(long)]
    pub region: Option<String>,
    /// This node's class of capacity (default `[engines] capacity_tier`).
    #[arg(long)]
    pub capacity_tier: Option<String>,
    /// An instance's price per hour here, in cost units (default `[engines]
    /// price_per_hour`).
    #[arg(long)]
    pub price_per_hour: Option<f64>,
    #[arg(long)]
    pub stt_queue: Option<usize>,
    /// Largest request taken (default: `[limits] max_audio_seconds` of PCM).
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Started by a server: exit when its stdin closes (the server is gone).
    #[arg(long, hide = true)]
    pub supervised: bool,
}

impl NodeArgs {
    /// The node's options: these flags over the configuration's `[engines]`.
    pub fn options(self, config: &Config) -> anyhow::Result<crate::inference::serve::NodeOptions> {
        let mut engines = config.engines.clone();
        if let Some(id) = self.node_id {
            engines.node_id = id;
        }
        if let Some(dir) = self.models_dir {
            engines.models_dir = dir;
        }
        if let Some(device) = &self.device {
            engines.device = crate::config::parse_device(device)?;
        }
        if let Some(threads) = self.intra_threads {
            engines.intra_threads = threads.max(1);
        }
        engines.multilingual |= self.multilingual;
        if let Some(models) = self.models {
            engines::node::with_needs(&models).map_err(|e| anyhow::anyhow!("--models: {e}"))?;
            engines.models = Some(models);
        }
        if let Some(limit) = self.memory_limit_mb {
            engines.memory_limit_mb = limit;
        }
        let labels = &mut engines.labels;
        labels.region = self.region.unwrap_or(labels.region.clone());
        labels.capacity_tier = self.capacity_tier.unwrap_or(labels.capacity_tier.clone());
        labels.price_per_hour = self.price_per_hour.unwrap_or(labels.price_per_hour);
        labels.check()?;
        if let Some(queue) = self.stt_queue {
            engines.stt_queue = queue.max(1);
        }
        Ok(crate::inference::serve::NodeOptions {
            address: self.listen,
            engines,
            max_message_bytes: self.max_message_bytes.unwrap_or_else(|| {
                crate::inference::max_message_bytes(config.limits.max_audio_seconds)
            }),
            supervised: self.supervised,
            registry: config.redis.clone().map(|redis| (redis, self.advertise)),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a tenant.
    CreateTenant {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: String,
    },
    /// List tenants.
    ListTenants,
    /// Create a user.
    CreateUser {
        #[arg(long)]
        tenant_id: String,
        #[arg(long)]
        email: String,
        /// Read from SCAIGRID_NEW_USER_PASSWORD if not given.
        #[arg(long, env = "SCAIGRID_NEW_USER_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Create an API key (printed once).
    CreateKey {
        #[arg(long)]
        tenant_id: String,
        #[arg(long)]
        name: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// RFC 3339 expiry, e.g. 2030-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List the API keys of a tenant.
    ListKeys {
        #[arg(long)]
        tenant_id: String,
    },
    /// Revoke an API key.
    RevokeKey { id: String },
}

/// The largest page: the CLI lists what an operator asked for at once.
fn all() -> crate::db::page::Page {
    crate::db::page::Page {
        limit: crate::db::page::MAX_LIMIT,
        after: None,
    }
}

fn non_empty(values: Vec<String>) -> Option<Vec<String>> {
    (!values.is_empty()).then_some(values)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs `scaigrid admin ...` against the configured database.
pub async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    let db = Db::connect(&config.database).await?;
    crate::db::migrate::run(&db).await?;
    crate::bootstrap::run(&db, &config).await?;
    let err = |e: crate::error::ApiError| anyhow::anyhow!("{e}");
    match command {
        AdminCommand::CreateTenant { name, slug } => {
            let request = services::tenants::CreateTenant { name, slug };
            print_json(
                &services::tenants::create(&db, &config, None, request)
                    .await
                    .map_err(err)?,
            )
        }
        AdminCommand::ListTenants => {
            print_json(&services::tenants::list(&db, None).await.map_err(err)?)
        }
        AdminCommand::CreateUser {
            tenant_id,
            email,
            password,
            roles,
        } => {
            let request = services::users::CreateUser {
                email,
                password,
                tenant_id: Some(tenant_id),
                roles: non_empty(roles),
                permissions: None,
            };
            print_json(
                &services::users::create(&db, None, request)
                    .await
                    .map_err(err)?,
            )
        }
        AdminCommand::CreateKey {
            tenant_id,
            name,
            roles,
            permissions,
            expires_at,
        } => {
            let expires_at = match expires_at {
                Some(text) => Some(
                    Timestamp::parse_rfc3339(&text)
                        .ok_or_else(|| anyhow::anyhow!("--expires-at: `{text}` is not RFC 3339"))?,
                ),
                None => None,
            };
            let request = services::api_keys::CreateApiKey {
                name,
                tenant_id: Some(tenant_id),
                roles: non_empty(roles),
                permissions: non_empty(permissions),
                expires_at,
                rate_limit: None,
            };
            print_json(
                &services::api_keys::create(&db, None, request)
                    .await
                    .map_err(err)?,
            )
        }
        AdminCommand::ListKeys { tenant_id } => print_json(
            &services::api_keys::list(&db, None, Some(&tenant_id), None, &all())
                .await
                .map_err(err)?
                .0,
        ),
        AdminCommand::RevokeKey { id } => print_json(
            &services::api_keys::revoke(&db, None, &id)
                .await
                .map_err(err)?,
        ),
    }
}
