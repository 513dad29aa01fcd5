//! The server's configuration: one struct, loaded once at start-up.
//!
//! Precedence is TOML file (`--config`) < `SCAIGRID_*` environment < command-line flags.
//! The file is parsed into [`FileConfig`] (every field optional, unknown keys rejected);
//! flags and environment arrive through clap as [`Overrides`]; [`Config::load`] merges
//! them and validates the result into typed values, failing with a message that names
//! the offending key. With nothing configured the server runs the embedded default:
//! SQLite and the object folder under `./data/`, bound to `127.0.0.1:8080`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// A secret value: usable, never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Values that may come from the environment or flags (clap fills both).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address to listen on, e.g. `127.0.0.1:0` for an ephemeral port.
    #[arg(long, env = "SCAIGRID_BIND", global = true)]
    pub bind: Option<String>,
    /// Folder of the embedded database and object store.
    #[arg(long, env = "SCAIGRID_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://path` or `postgres://...`; defaults to `<data_dir>/scaigrid.db`.
    #[arg(
        long,
        env = "SCAIGRID_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<Secret>,
    /// Folder of the local object store; defaults to `<data_dir>/objects`.
    #[arg(long, env = "SCAIGRID_OBJECT_STORE_DIR", global = true)]
    pub object_store_dir: Option<PathBuf>,
    /// `redis://host:port/db`: the scaled deployment's counters, queue and registry.
    #[arg(
        long,
        env = "SCAIGRID_REDIS_URL",
        global = true,
        hide_env_values = true
    )]
    pub redis_url: Option<Secret>,
    /// S3 bucket of the object store (selects S3 instead of the local folder).
    #[arg(long, env = "SCAIGRID_S3_BUCKET", global = true)]
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL for S3-compatible servers (path-style addressing is then used).
    #[arg(long, env = "SCAIGRID_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    /// Makes sure a platform-admin API key with exactly this value exists.
    #[arg(
        long,
        env = "SCAIGRID_BOOTSTRAP_ADMIN_KEY",
        global = true,
        hide_env_values = true
    )]
    pub bootstrap_admin_key: Option<Secret>,
    /// HMAC secret of the local JWT issuer; generated into the data folder if absent.
    #[arg(
        long,
        env = "SCAIGRID_JWT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub jwt_secret: Option<Secret>,
    /// `text` (default) or `json` log lines.
    #[arg(long, env = "SCAIGRID_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Where `models/fetch` installed ONNX Runtime and the models.
    #[arg(long, env = "SCAIGRID_MODELS_DIR", global = true)]
    pub models_dir: Option<PathBuf>,
    /// ScaiEcho backend B: base URL of the managed OpenAI-compatible relay.
    #[arg(long, env = "SCAIGRID_SCAIECHO_RELAY_URL", global = true)]
    pub scaiecho_relay_url: Option<String>,
    /// ScaiEcho backend B: the relay's API key.
    #[arg(
        long,
        env = "SCAIGRID_SCAIECHO_RELAY_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub scaiecho_relay_api_key: Option<Secret>,
    /// ScaiSpeak backend B: base URL of the managed OpenAI-compatible relay.
    #[arg(long, env = "SCAIGRID_SCAISPEAK_RELAY_URL", global = true)]
    pub scaispeak_relay_url: Option<String>,
    /// ScaiSpeak backend B: the relay's API key.
    #[arg(
        long,
        env = "SCAIGRID_SCAISPEAK_RELAY_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub scaispeak_relay_api_key: Option<Secret>,
    /// Key sealing stored secrets (upstream API keys, webhook secrets): 64 hex digits or
    /// base64 of 32 bytes. Unset: one generated into the data folder (embedded only).
    #[arg(
        long,
        env = "SCAIGRID_SECRETS_KEY",
        global = true,
        hide_env_values = true
    )]
    pub secrets_key: Option<Secret>,
    /// Keys that sealed stored secrets before, comma-separated (rotation).
    #[arg(
        long,
        env = "SCAIGRID_SECRETS_PREVIOUS_KEYS",
        global = true,
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub secrets_previous_keys: Option<Vec<Secret>>,
}

/// The TOML file's shape; every field optional so the file may say as little as it likes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<Secret>,
    pub object_store_dir: Option<PathBuf>,
    pub bootstrap_admin_key: Option<Secret>,
    pub log_format: Option<String>,
    pub default_modules: Option<Vec<String>>,
    pub shutdown_grace_seconds: Option<u64>,
    #[serde(default)]
    pub auth: FileAuth,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub http: FileHttp,
    #[serde(default)]
    pub engines: FileEngines,
    #[serde(default)]
    pub scaiecho: FileScaiecho,
    #[serde(default)]
    pub scaispeak: FileScaispeak,
    #[serde(default)]
    pub jobs: FileJobs,
    #[serde(default)]
    pub gateway: FileGateway,
    #[serde(default)]
    pub accounting: FileAccounting,
    #[serde(default)]
    pub webhooks: FileWebhooks,
    #[serde(default)]
    pub redis: FileRedis,
    #[serde(default)]
    pub s3: FileS3,
    #[serde(default)]
    pub webrtc: FileWebrtc,
    #[serde(default)]
    pub secrets: FileSecrets,
}

/// Sealing of stored secrets at rest (see `vault`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSecrets {
    /// `SCAIGRID_SECRETS_KEY`; required with PostgreSQL (every process must share it).
    pub key: Option<Secret>,
    /// Keys replaced by `key`: still opened, and re-sealed under `key` at start.
    pub previous_keys: Option<Vec<Secret>>,
}

/// WebRTC sessions (ScaiEcho and ScaiSpeak).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWebrtc {
    /// Answer offers (default true; false makes offers 501 as a build without the
    /// `webrtc` feature does, e.g. where UDP cannot reach the server).
    pub enabled: Option<bool>,
    /// IPs the answer offers host candidates on (default: 127.0.0.1 and the address of
    /// the interface the default route leaves by).
    pub candidate_ips: Option<Vec<std::net::IpAddr>>,
    /// Advertised instead of each candidate IP, for a host behind 1:1 NAT.
    pub public_ip: Option<std::net::IpAddr>,
    /// STUN/TURN servers handed to clients in `POST /sessions` (`urls`, `username`,
    /// `credential`), for browsers behind NAT.
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
    /// Sessions (created or running) per tenant (default 8); then 429.
    pub max_sessions_per_tenant: Option<usize>,
    /// A session with no offer after this long is dropped (default 60).
    pub offer_timeout_seconds: Option<u64>,
}

/// One STUN/TURN server as `RTCPeerConnection` takes it.
#[derive(Debug, Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    /// `redis://[:password@]host:port[/db]` (`SCAIGRID_REDIS_URL`); unset: in-process.
    pub url: Option<Secret>,
    /// Prefix of every key and channel, so deployments can share a Redis (`scaigrid`).
    pub key_prefix: Option<String>,
    /// With a `rediss://` URL: the PEM CA that signed the server's certificate, instead
    /// of the system's trust store.
    pub tls_ca_file: Option<PathBuf>,
    /// With a `rediss://` URL: a PEM client certificate and key (mutual TLS).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

/// The S3 object store. Credentials not given here come from the standard AWS chain
/// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance roles).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileS3 {
    pub bucket: Option<String>,
    /// For S3-compatible servers; implies path-style addressing unless `path_style` says.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    /// Key prefix inside the bucket (none).
    pub prefix: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// Create the bucket at start-up if it does not exist (false).
    pub create_bucket: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGateway {
    /// Longest a streamed chat response may run (`DISPATCH_STREAM_TIMEOUT_S`, 600).
    pub stream_timeout_seconds: Option<u64>,
    /// Consecutive failures that open a backend's circuit breaker (5).
    pub breaker_failure_threshold: Option<u32>,
    /// How long an open breaker stays open before a half-open probe (30).
    pub breaker_open_seconds: Option<u64>,
    /// Interval of active health probes of every backend (30).
    pub health_interval_seconds: Option<u64>,
    /// Output tokens reserved against budgets when a request names no `max_tokens` (256).
    pub default_max_tokens: Option<u64>,
    /// Chat calls in flight at once (streams included) before new ones are shed with
    /// 503 and `Retry-After`, so a stalled upstream cannot pile up memory (1024).
    pub max_in_flight: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccounting {
    /// How often buffered usage records are written to SQL (1000 ms).
    pub flush_interval_ms: Option<u64>,
    /// Cost of one second of audio heard (ScaiEcho) or spoken (ScaiSpeak) (0).
    pub audio_second_cost: Option<f64>,
    /// Cost of one character synthesized (ScaiSpeak) (0).
    pub character_cost: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWebhooks {
    /// Attempts per delivery before it is marked failed (8).
    pub max_attempts: Option<u32>,
    /// First retry delay; each retry doubles it (2000 ms).
    pub retry_base_ms: Option<u64>,
    /// Consecutive failed attempts after which a webhook is disabled (20).
    pub disable_after_failures: Option<u32>,
    /// Per-attempt timeout (10 s).
    pub timeout_seconds: Option<u64>,
    /// Allow loopback, private and link-local targets (off: they are refused).
    pub allow_private_targets: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJobs {
    /// Job workers inside `serve` (0: only `scaigrid worker` processes run jobs).
    pub workers: Option<usize>,
    /// A running job's lease, renewed while it runs; also the queue's visibility
    /// timeout: a dead worker's job is taken over after this long (60).
    pub lease_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileScaiecho {
    /// Backend B: base URL of an OpenAI-compatible speech-to-text API.
    pub relay_url: Option<String>,
    pub relay_api_key: Option<Secret>,
    /// The upstream model name (default `whisper-1`).
    pub relay_model: Option<String>,
    pub relay_timeout_seconds: Option<u64>,
    /// A stream with no frame from the client for this long is closed (default 30).
    pub stream_idle_timeout_seconds: Option<u64>,
    /// Server pings on an open stream at this interval (default 15).
    pub stream_keepalive_seconds: Option<u64>,
    /// Open streams per tenant at most; one more is closed with 4429 (default 32).
    pub max_streams_per_tenant: Option<usize>,
    /// Longest stream in seconds of audio (default 4 hours); then 4413.
    pub stream_max_seconds: Option<u64>,
    /// Largest binary frame (default 1 MiB); larger is 4413.
    pub stream_max_frame_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileScaispeak {
    /// Backend B: base URL of an OpenAI-compatible `/v1/audio/speech` API.
    pub relay_url: Option<String>,
    pub relay_api_key: Option<Secret>,
    /// The upstream model (default `tts-1`) and voice (default `alloy`).
    pub relay_model: Option<String>,
    pub relay_voice: Option<String>,
    pub relay_timeout_seconds: Option<u64>,
    /// Longest text of one `/speak` request (default 100000 chars; long ones are jobs).
    pub max_text_chars: Option<usize>,
    /// Longer texts become synth jobs; also the longest stream text frame (default 2000).
    pub inline_text_chars: Option<usize>,
    /// `save_to` writes to a per-user folder of the object store (default true).
    pub drive: Option<bool>,
    /// Open speech streams (WebSocket and WebRTC) per tenant (default 16); then 4429.
    pub stream_max_per_tenant: Option<usize>,
    /// Characters one speech stream takes in all (default 100000); then 4413.
    pub stream_max_chars: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEngines {
    /// Load the local engines in this process (off for API-only processes).
    pub enabled: Option<bool>,
    pub models_dir: Option<PathBuf>,
    /// `cpu` (default) or `cuda` / `cuda:N`.
    pub device: Option<String>,
    pub intra_threads: Option<usize>,
    pub node_id: Option<String>,
    /// Also load Whisper base (multilingual, language detection; about 700 MB).
    pub multilingual: Option<bool>,
    /// Recordings waiting for the speech-to-text thread at most (default 16).
    pub stt_queue: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub jwt_secret: Option<Secret>,
    pub access_token_ttl_seconds: Option<u64>,
    pub refresh_token_ttl_seconds: Option<u64>,
    pub key_cache_ttl_seconds: Option<u64>,
    /// `/v1/auth/token` attempts per minute from one client address (default 30).
    pub login_attempts_per_minute_per_ip: Option<u64>,
    /// Failed `/v1/auth/token` attempts per minute for one email (default 10).
    pub login_failures_per_minute_per_email: Option<u64>,
    /// Password hashes checked at once (default: one per core); others wait.
    pub concurrent_password_checks: Option<usize>,
    #[serde(default)]
    pub external_issuers: Vec<ExternalIssuer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_json_body_bytes: Option<usize>,
    pub max_upload_bytes: Option<usize>,
    pub max_audio_seconds: Option<f64>,
    pub upload_memory_bytes: Option<usize>,
    pub concurrent_decodes: Option<usize>,
}

/// The HTTP listener's bounds on what one connection may hold (slow clients).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttp {
    /// Connections open at once (default 8192, lowered to fit the open-file limit);
    /// connections over it are closed as soon as they are accepted.
    pub max_connections: Option<usize>,
    /// A request's head must arrive within this (default 10); it also bounds how long an
    /// idle keep-alive connection waits for its next request.
    pub header_timeout_seconds: Option<u64>,
    /// A body must go on arriving: at most this long between two pieces (default 30).
    pub body_idle_timeout_seconds: Option<u64>,
    /// A whole body must have arrived within this of its head (default 600).
    pub body_timeout_seconds: Option<u64>,
    /// Largest request head, request line and headers together (default 65536).
    pub max_header_bytes: Option<usize>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the
    /// client; from anyone else the connection's address is the client (default none).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// An external JWT issuer whose tokens are verified against its JWKS. The token's
/// `email` claim names the local user it acts as.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuer {
    /// Exact `iss` value.
    pub issuer: String,
    /// Required `aud` value.
    pub audience: String,
    /// Where the issuer's JSON Web Key Set is served (`https://`).
    pub jwks_url: String,
    /// The slug of the one tenant this issuer's users are looked up in (required: an
    /// identity provider must not sign anyone into any tenant, the platform's included).
    pub tenant: Option<String>,
    /// Take a `http://` JWKS URL (keys fetched in the clear can be swapped on the way);
    /// default false.
    #[serde(default)]
    pub allow_http_jwks: bool,
    /// Map a token to a user only when it says `email_verified: true` (default true;
    /// turn off only for an issuer that verifies every address and omits the claim).
    #[serde(default = "yes")]
    pub require_email_verified: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    Sqlite { path: PathBuf },
    Postgres { url: Secret },
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt_secret: Option<Secret>,
    pub access_token_ttl_seconds: u64,
    pub refresh_token_ttl_seconds: u64,
    pub key_cache_ttl_seconds: u64,
    pub login_attempts_per_minute_per_ip: u64,
    pub login_failures_per_minute_per_email: u64,
    pub concurrent_password_checks: usize,
    pub external_issuers: Vec<ExternalIssuer>,
}

/// See [`FileHttp`].
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_connections: usize,
    pub header_timeout: std::time::Duration,
    pub body_idle_timeout: std::time::Duration,
    pub body_timeout: std::time::Duration,
    pub max_header_bytes: usize,
    pub trusted_proxies: Vec<crate::net::Cidr>,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Largest JSON body any route accepts.
    pub max_json_body_bytes: usize,
    /// Largest upload (audio) body any route accepts.
    pub max_upload_bytes: usize,
    /// Longest audio any upload or job decodes to; decoding stops there.
    pub max_audio_seconds: f64,
    /// Upload bodies held in memory at once, all requests together.
    pub upload_memory_bytes: usize,
    /// Whole-file decodes running at once.
    pub concurrent_decodes: usize,
}

/// Limits and timers of ScaiEcho's WebSocket streams.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub idle_timeout: std::time::Duration,
    pub keepalive: std::time::Duration,
    pub max_per_tenant: usize,
    pub max_seconds: u64,
    pub max_frame_bytes: usize,
}

/// ScaiSpeak settings.
#[derive(Debug, Clone)]
pub struct SpeakConfig {
    pub relay: RelayConfig,
    /// The upstream voice used for every relayed request.
    pub relay_voice: String,
    pub max_text_chars: usize,
    pub inline_text_chars: usize,
    pub drive: bool,
    pub stream_max_per_tenant: usize,
    pub stream_max_chars: usize,
}

/// ScaiEcho's backend B (both URL and key are needed for it to be usable).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub url: Option<String>,
    pub api_key: Option<Secret>,
    pub model: String,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct EnginesConfig {
    pub enabled: bool,
    pub models_dir: PathBuf,
    pub device: engines::Device,
    pub intra_threads: usize,
    pub node_id: String,
    pub multilingual: bool,
    /// Recordings waiting for the speech-to-text thread at most; one more is
    /// `SERVICE_UNAVAILABLE` with `Retry-After` (a job goes back to the queue).
    pub stt_queue: usize,
}

fn parse_device(text: &str) -> anyhow::Result<engines::Device> {
    match text {
        "cpu" => Ok(engines::Device::Cpu),
        "cuda" => Ok(engines::Device::Cuda { device_id: 0 }),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(device_id) => Ok(engines::Device::Cuda { device_id }),
            None => bail!("engines.device: `{other}` is not `cpu`, `cuda` or `cuda:N`"),
        },
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub object_store_dir: PathBuf,
    pub bootstrap_admin_key: Option<Secret>,
    pub log_format: LogFormat,
    pub default_modules: Vec<String>,
    pub shutdown_grace_seconds: u64,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub engines: EnginesConfig,
    pub relay: RelayConfig,
    pub stream: StreamConfig,
    pub speak: SpeakConfig,
    pub jobs: JobsConfig,
    /// Redis of the scaled deployment (`None`: the embedded default's in-process state).
    pub redis: Option<RedisConfig>,
    /// S3 object store (`None`: the local folder `object_store_dir`).
    pub s3: Option<S3Config>,
    pub gateway: GatewayConfig,
    pub accounting: AccountingConfig,
    pub webhooks: WebhooksConfig,
    pub webrtc: WebrtcConfig,
    pub secrets: SecretsConfig,
}

/// Prices of the speech modules, in cost units (chat prices are per model).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    pub audio_second: f64,
    pub character: f64,
}

/// See [`FileSecrets`].
#[derive(Clone)]
pub struct SecretsConfig {
    /// `None`: the key file in the data folder (created on first start).
    pub key: Option<[u8; crate::vault::KEY_LEN]>,
    pub previous_keys: Vec<[u8; crate::vault::KEY_LEN]>,
}

impl std::fmt::Debug for SecretsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsConfig")
            .field("key", &self.key.map(|_| "***"))
            .field("previous_keys", &self.previous_keys.len())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct WebrtcConfig {
    pub enabled: bool,
    /// `None`: loopback and the default route's interface, found at start.
    pub candidate_ips: Option<Vec<std::net::IpAddr>>,
    pub public_ip: Option<std::net::IpAddr>,
    pub ice_servers: Vec<IceServer>,
    pub max_sessions_per_tenant: usize,
    pub offer_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Job workers `serve` runs (and `scaigrid worker` runs at least one).
    pub workers: usize,
    pub lease: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
    pub key_prefix: String,
    pub tls: RedisTls,
}

/// PEM files of a `rediss://` connection (all `None`: the system's trust store).
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, both or neither.
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub create_bucket: bool,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub stream_timeout: std::time::Duration,
    pub breaker_failure_threshold: u32,
    pub breaker_open: std::time::Duration,
    pub health_interval: std::time::Duration,
    pub default_max_tokens: u64,
    pub max_in_flight: usize,
}

#[derive(Debug, Clone)]
pub struct AccountingConfig {
    pub flush_interval: std::time::Duration,
    pub prices: Prices,
}

#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    pub max_attempts: u32,
    pub retry_base: std::time::Duration,
    pub disable_after_failures: u32,
    pub timeout: std::time::Duration,
    pub allow_private_targets: bool,
}

/// The issuer of the tokens this server signs (external issuers may not take the name).
pub const LOCAL_ISSUER: &str = "scaigrid";

/// Module ids this build knows; `default_modules` may name only these.
pub const KNOWN_MODULES: &[&str] = &["scaiecho", "scaispeak"];

impl Config {
    /// Reads the optional file, applies the overrides, validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let file_config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Config::merge(file_config, overrides.clone())
    }

    /// File values overridden by environment/flag values, then validated.
    pub fn merge(file: FileConfig, overrides: Overrides) -> anyhow::Result<Config> {
        let bind_text = overrides
            .bind
            .or(file.bind)
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let bind: SocketAddr = bind_text.parse().with_context(|| {
            format!("bind: `{bind_text}` is not an address like 127.0.0.1:8080")
        })?;
        let data_dir = overrides
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database = match overrides.database_url.or(file.database_url) {
            None => DatabaseConfig::Sqlite {
                path: data_dir.join("scaigrid.db"),
            },
            Some(url) => parse_database_url(url)?,
        };
        let object_store_dir = overrides
            .object_store_dir
            .or(file.object_store_dir)
            .unwrap_or_else(|| data_dir.join("objects"));
        let bootstrap_admin_key = overrides.bootstrap_admin_key.or(file.bootstrap_admin_key);
        if let Some(key) = &bootstrap_admin_key {
            crate::records::validate_api_key_format(key.expose()).map_err(|reason| {
                anyhow::anyhow!("bootstrap_admin_key (SCAIGRID_BOOTSTRAP_ADMIN_KEY): {reason}")
            })?;
            if is_placeholder(key.expose()) {
                bail!(
                    "bootstrap_admin_key (SCAIGRID_BOOTSTRAP_ADMIN_KEY): this is a placeholder \
                     from an example; set a random key of your own (it is a platform admin's)"
                );
            }
        }
        let log_format = match overrides
            .log_format
            .or(file.log_format)
            .as_deref()
            .unwrap_or("text")
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("log_format: `{other}` is neither `text` nor `json`"),
        };
        let default_modules = file.default_modules.unwrap_or_default();
        for module in &default_modules {
            if !KNOWN_MODULES.contains(&module.as_str()) {
                bail!("default_modules: unknown module `{module}` (known: {KNOWN_MODULES:?})");
            }
        }
        let auth = AuthConfig {
            jwt_secret: overrides.jwt_secret.or(file.auth.jwt_secret),
            access_token_ttl_seconds: positive(
                "auth.access_token_ttl_seconds",
                file.auth.access_token_ttl_seconds.unwrap_or(900),
            )?,
            refresh_token_ttl_seconds: positive(
                "auth.refresh_token_ttl_seconds",
                file.auth
                    .refresh_token_ttl_seconds
                    .unwrap_or(30 * 24 * 3600),
            )?,
            key_cache_ttl_seconds: file.auth.key_cache_ttl_seconds.unwrap_or(30),
            login_attempts_per_minute_per_ip: positive(
                "auth.login_attempts_per_minute_per_ip",
                file.auth.login_attempts_per_minute_per_ip.unwrap_or(30),
            )?,
            login_failures_per_minute_per_email: positive(
                "auth.login_failures_per_minute_per_email",
                file.auth.login_failures_per_minute_per_email.unwrap_or(10),
            )?,
            concurrent_password_checks: positive(
                "auth.concurrent_password_checks",
                file.auth.concurrent_password_checks.map_or_else(
                    || std::thread::available_parallelism().map_or(2, |n| n.get() as u64),
                    |n| n as u64,
                ),
            )? as usize,
            external_issuers: file.auth.external_issuers,
        };
        if let Some(secret) = &auth.jwt_secret
            && secret.expose().len() < 32
        {
            bail!("auth.jwt_secret (SCAIGRID_JWT_SECRET): must be at least 32 characters");
        }
        if let Some(secret) = &auth.jwt_secret
            && is_placeholder(secret.expose())
        {
            bail!(
                "auth.jwt_secret (SCAIGRID_JWT_SECRET): this is a placeholder from an example; \
                 set a random secret of your own (anyone who read the example can mint tokens)"
            );
        }
        for issuer in &auth.external_issuers {
            let https = issuer.jwks_url.starts_with("https://");
            let http = issuer.jwks_url.starts_with("http://");
            if !(https || http && issuer.allow_http_jwks) {
                bail!(
                    "auth.external_issuers: jwks_url `{}` of issuer `{}` must be an https URL \
                     (set allow_http_jwks = true to take http)",
                    issuer.jwks_url,
                    issuer.issuer
                );
            }
            if issuer.tenant.as_deref().is_none_or(str::is_empty) {
                bail!(
                    "auth.external_issuers: issuer `{}` needs `tenant`, the slug of the tenant \
                     its users are looked up in",
                    issuer.issuer
                );
            }
            if issuer.issuer == LOCAL_ISSUER {
                bail!(
                    "auth.external_issuers: issuer `{}` is reserved",
                    issuer.issuer
                );
            }
        }
        let max_upload_bytes = file.limits.max_upload_bytes.unwrap_or(100 * 1024 * 1024);
        let limits = LimitsConfig {
            max_json_body_bytes: file.limits.max_json_body_bytes.unwrap_or(1024 * 1024),
            max_upload_bytes,
            max_audio_seconds: file.limits.max_audio_seconds.unwrap_or(7200.0),
            upload_memory_bytes: file
                .limits
                .upload_memory_bytes
                .unwrap_or(4 * max_upload_bytes),
            concurrent_decodes: file.limits.concurrent_decodes.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
            }),
        };
        if !(limits.max_audio_seconds > 0.0 && limits.max_audio_seconds <= 86_400.0) {
            bail!("limits.max_audio_seconds must be within (0, 86400]");
        }
        if limits.upload_memory_bytes < limits.max_upload_bytes {
            bail!("limits.upload_memory_bytes must be at least limits.max_upload_bytes");
        }
        if limits.concurrent_decodes == 0 {
            bail!("limits.concurrent_decodes must be at least 1");
        }
        let seconds = |key: &str, value: Option<u64>, default: u64| {
            positive(key, value.unwrap_or(default)).map(std::time::Duration::from_secs)
        };
        let http = HttpConfig {
            max_connections: positive(
                "http.max_connections",
                file.http.max_connections.unwrap_or(8192) as u64,
            )? as usize,
            header_timeout: seconds(
                "http.header_timeout_seconds",
                file.http.header_timeout_seconds,
                10,
            )?,
            body_idle_timeout: seconds(
                "http.body_idle_timeout_seconds",
                file.http.body_idle_timeout_seconds,
                30,
            )?,
            body_timeout: seconds(
                "http.body_timeout_seconds",
                file.http.body_timeout_seconds,
                600,
            )?,
            max_header_bytes: file.http.max_header_bytes.unwrap_or(64 * 1024),
            trusted_proxies: file
                .http
                .trusted_proxies
                .iter()
                .map(|text| {
                    text.parse().map_err(|e| {
                        anyhow::anyhow!(
                            "http.trusted_proxies: `{text}` is not an address or CIDR range: {e}"
                        )
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        if !(8192..=1024 * 1024).contains(&http.max_header_bytes) {
            bail!("http.max_header_bytes must be within 8192..=1048576");
        }
        let engines = EnginesConfig {
            enabled: file.engines.enabled.unwrap_or(true),
            models_dir: overrides
                .models_dir
                .or(file.engines.models_dir)
                .unwrap_or_else(|| PathBuf::from("./models/cache")),
            device: parse_device(file.engines.device.as_deref().unwrap_or("cpu"))?,
            intra_threads: file.engines.intra_threads.unwrap_or(1),
            multilingual: file.engines.multilingual.unwrap_or(false),
            stt_queue: file.engines.stt_queue.unwrap_or(16).max(1),
            node_id: file
                .engines
                .node_id
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "local".to_owned()),
        };
        let relay = RelayConfig {
            url: overrides.scaiecho_relay_url.or(file.scaiecho.relay_url),
            api_key: overrides
                .scaiecho_relay_api_key
                .or(file.scaiecho.relay_api_key),
            model: file
                .scaiecho
                .relay_model
                .unwrap_or_else(|| "whisper-1".to_owned()),
            timeout_seconds: positive(
                "scaiecho.relay_timeout_seconds",
                file.scaiecho.relay_timeout_seconds.unwrap_or(120),
            )?,
        };
        if let Some(url) = &relay.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!(
                "scaiecho.relay_url (SCAIGRID_SCAIECHO_RELAY_URL): `{url}` is not an http(s) URL"
            );
        }

        let seconds = |name: &str, value: Option<u64>, default: u64| {
            positive(name, value.unwrap_or(default)).map(std::time::Duration::from_secs)
        };
        let stream = StreamConfig {
            idle_timeout: seconds(
                "scaiecho.stream_idle_timeout_seconds",
                file.scaiecho.stream_idle_timeout_seconds,
                30,
            )?,
            keepalive: seconds(
                "scaiecho.stream_keepalive_seconds",
                file.scaiecho.stream_keepalive_seconds,
                15,
            )?,
            max_per_tenant: positive(
                "scaiecho.max_streams_per_tenant",
                file.scaiecho.max_streams_per_tenant.unwrap_or(32) as u64,
            )? as usize,
            max_seconds: positive(
                "scaiecho.stream_max_seconds",
                file.scaiecho.stream_max_seconds.unwrap_or(4 * 3600),
            )?,
            max_frame_bytes: positive(
                "scaiecho.stream_max_frame_bytes",
                file.scaiecho.stream_max_frame_bytes.unwrap_or(1 << 20) as u64,
            )? as usize,
        };
        let speak = SpeakConfig {
            relay: RelayConfig {
                url: overrides.scaispeak_relay_url.or(file.scaispeak.relay_url),
                api_key: overrides
                    .scaispeak_relay_api_key
                    .or(file.scaispeak.relay_api_key),
                model: file
                    .scaispeak
                    .relay_model
                    .unwrap_or_else(|| "tts-1".to_owned()),
                timeout_seconds: positive(
                    "scaispeak.relay_timeout_seconds",
                    file.scaispeak.relay_timeout_seconds.unwrap_or(120),
                )?,
            },
            relay_voice: file
                .scaispeak
                .relay_voice
                .unwrap_or_else(|| "alloy".to_owned()),
            max_text_chars: positive(
                "scaispeak.max_text_chars",
                file.scaispeak.max_text_chars.unwrap_or(100_000) as u64,
            )? as usize,
            drive: file.scaispeak.drive.unwrap_or(true),
            inline_text_chars: positive(
                "scaispeak.inline_text_chars",
                file.scaispeak.inline_text_chars.unwrap_or(2000) as u64,
            )? as usize,
            stream_max_per_tenant: positive(
                "scaispeak.stream_max_per_tenant",
                file.scaispeak.stream_max_per_tenant.unwrap_or(16) as u64,
            )? as usize,
            stream_max_chars: positive(
                "scaispeak.stream_max_chars",
                file.scaispeak.stream_max_chars.unwrap_or(100_000) as u64,
            )? as usize,
        };
        if let Some(url) = &speak.relay.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!(
                "scaispeak.relay_url (SCAIGRID_SCAISPEAK_RELAY_URL): `{url}` is not an http(s) URL"
            );
        }
        let secrets = secrets_config(
            file.secrets,
            overrides.secrets_key,
            overrides.secrets_previous_keys,
        )?;
        Ok(Config {
            secrets,
            bind,
            data_dir,
            database,
            object_store_dir,
            bootstrap_admin_key,
            log_format,
            default_modules,
            shutdown_grace_seconds: file.shutdown_grace_seconds.unwrap_or(30),
            auth,
            limits,
            http,
            engines,
            relay,
            stream,
            speak,
            jobs: JobsConfig {
                workers: file.jobs.workers.unwrap_or(1),
                lease: seconds("jobs.lease_seconds", file.jobs.lease_seconds, 60)?,
            },
            redis: match overrides.redis_url.or(file.redis.url) {
                None => None,
                Some(url) => {
                    if !(url.expose().starts_with("redis://")
                        || url.expose().starts_with("rediss://")
                        || url.expose().starts_with("unix://"))
                    {
                        bail!("redis.url (SCAIGRID_REDIS_URL): expected redis://host:port");
                    }
                    let tls = RedisTls {
                        ca_file: file.redis.tls_ca_file,
                        client: match (file.redis.tls_cert_file, file.redis.tls_key_file) {
                            (None, None) => None,
                            (Some(cert), Some(key)) => Some((cert, key)),
                            _ => bail!(
                                "redis.tls_cert_file and redis.tls_key_file: give both or neither"
                            ),
                        },
                    };
                    if (tls.ca_file.is_some() || tls.client.is_some())
                        && !url.expose().starts_with("rediss://")
                    {
                        bail!(
                            "redis.tls_*: TLS files are given but redis.url (SCAIGRID_REDIS_URL) \
                             is not a rediss:// URL"
                        );
                    }
                    Some(RedisConfig {
                        url,
                        key_prefix: file.redis.key_prefix.unwrap_or_else(|| "scaigrid".into()),
                        tls,
                    })
                }
            },
            s3: match overrides.s3_bucket.or(file.s3.bucket) {
                None => None,
                Some(bucket) => {
                    let endpoint = overrides.s3_endpoint.or(file.s3.endpoint);
                    if let Some(url) = &endpoint
                        && !(url.starts_with("http://") || url.starts_with("https://"))
                    {
                        bail!("s3.endpoint (SCAIGRID_S3_ENDPOINT): `{url}` is not an http(s) URL");
                    }
                    Some(S3Config {
                        path_style: file.s3.path_style.unwrap_or(endpoint.is_some()),
                        bucket,
                        endpoint,
                        region: file.s3.region,
                        prefix: file.s3.prefix.unwrap_or_default(),
                        access_key_id: file.s3.access_key_id,
                        secret_access_key: file.s3.secret_access_key,
                        create_bucket: file.s3.create_bucket.unwrap_or(false),
                    })
                }
            },
            webrtc: WebrtcConfig {
                enabled: file.webrtc.enabled.unwrap_or(true),
                candidate_ips: match file.webrtc.candidate_ips {
                    Some(ips) if ips.is_empty() => {
                        bail!("webrtc.candidate_ips: name at least one IP, or leave it out")
                    }
                    other => other,
                },
                public_ip: file.webrtc.public_ip,
                ice_servers: file.webrtc.ice_servers,
                max_sessions_per_tenant: positive(
                    "webrtc.max_sessions_per_tenant",
                    file.webrtc.max_sessions_per_tenant.unwrap_or(8) as u64,
                )? as usize,
                offer_timeout: seconds(
                    "webrtc.offer_timeout_seconds",
                    file.webrtc.offer_timeout_seconds,
                    60,
                )?,
            },
            gateway: GatewayConfig {
                stream_timeout: seconds(
                    "gateway.stream_timeout_seconds (DISPATCH_STREAM_TIMEOUT_S)",
                    std::env::var("DISPATCH_STREAM_TIMEOUT_S")
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .or(file.gateway.stream_timeout_seconds),
                    600,
                )?,
                breaker_failure_threshold: positive(
                    "gateway.breaker_failure_threshold",
                    file.gateway.breaker_failure_threshold.unwrap_or(5).into(),
                )? as u32,
                breaker_open: seconds(
                    "gateway.breaker_open_seconds",
                    file.gateway.breaker_open_seconds,
                    30,
                )?,
                health_interval: seconds(
                    "gateway.health_interval_seconds",
                    file.gateway.health_interval_seconds,
                    30,
                )?,
                default_max_tokens: positive(
                    "gateway.default_max_tokens",
                    file.gateway.default_max_tokens.unwrap_or(256),
                )?,
                max_in_flight: positive(
                    "gateway.max_in_flight",
                    file.gateway.max_in_flight.unwrap_or(1024),
                )? as usize,
            },
            accounting: AccountingConfig {
                flush_interval: std::time::Duration::from_millis(positive(
                    "accounting.flush_interval_ms",
                    file.accounting.flush_interval_ms.unwrap_or(1000),
                )?),
                prices: Prices {
                    audio_second: non_negative(
                        "accounting.audio_second_cost",
                        file.accounting.audio_second_cost,
                    )?,
                    character: non_negative(
                        "accounting.character_cost",
                        file.accounting.character_cost,
                    )?,
                },
            },
            webhooks: WebhooksConfig {
                max_attempts: positive(
                    "webhooks.max_attempts",
                    file.webhooks.max_attempts.unwrap_or(8).into(),
                )? as u32,
                retry_base: std::time::Duration::from_millis(positive(
                    "webhooks.retry_base_ms",
                    file.webhooks.retry_base_ms.unwrap_or(2000),
                )?),
                disable_after_failures: positive(
                    "webhooks.disable_after_failures",
                    file.webhooks.disable_after_failures.unwrap_or(20).into(),
                )? as u32,
                timeout: seconds(
                    "webhooks.timeout_seconds",
                    file.webhooks.timeout_seconds,
                    10,
                )?,
                allow_private_targets: file.webhooks.allow_private_targets.unwrap_or(false),
            },
        })
    }
}

fn non_negative(name: &str, value: Option<f64>) -> anyhow::Result<f64> {
    match value.unwrap_or(0.0) {
        v if v.is_finite() && v >= 0.0 => Ok(v),
        v => bail!("{name}: `{v}` must be a number zero or above"),
    }
}

/// Secrets and keys that appeared in example files (the compose file once defaulted to
/// these): refused, since anyone who read the example knows them.
const PLACEHOLDERS: &[&str] = &[
    "change-me-change-me-change-me-change-me",
    "sgk_compose_admin_key_change_me_0123456789",
];

/// A known example value, or one that says it should be changed.
fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    PLACEHOLDERS.contains(&value)
        || ["change-me", "change_me", "changeme"]
            .iter()
            .any(|marker| lower.contains(marker))
}

/// The sealing key and its predecessors (the requirement of a key on PostgreSQL is
/// checked where the vault is built: `migrate` and `admin` need none).
fn secrets_config(
    file: FileSecrets,
    key: Option<Secret>,
    previous_keys: Option<Vec<Secret>>,
) -> anyhow::Result<SecretsConfig> {
    fn parse(name: &str, key: &Secret) -> anyhow::Result<[u8; crate::vault::KEY_LEN]> {
        if is_placeholder(key.expose()) {
            bail!(
                "{name}: this is a placeholder from an example; set a random key of your own \
                 (`openssl rand -hex 32`)"
            );
        }
        crate::vault::parse_key(key.expose()).map_err(|reason| anyhow::anyhow!("{name}: {reason}"))
    }
    let key = key
        .or(file.key)
        .map(|key| parse("secrets.key (SCAIGRID_SECRETS_KEY)", &key))
        .transpose()?;
    let previous_keys = previous_keys
        .or(file.previous_keys)
        .unwrap_or_default()
        .iter()
        .map(|key| {
            parse(
                "secrets.previous_keys (SCAIGRID_SECRETS_PREVIOUS_KEYS)",
                key,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(SecretsConfig { key, previous_keys })
}

fn positive(name: &str, value: u64) -> anyhow::Result<u64> {
    if value == 0 {
        bail!("{name}: must be greater than zero");
    }
    Ok(value)
}

fn parse_database_url(url: Secret) -> anyhow::Result<DatabaseConfig> {
    let text = url.expose();
    if let Some(rest) = text
        .strip_prefix("sqlite://")
        .or_else(|| text.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() {
            bail!("database_url: sqlite URL names no file");
        }
        return Ok(DatabaseConfig::Sqlite {
            path: PathBuf::from(path),
        });
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(DatabaseConfig::Postgres { url });
    }
    bail!("database_url: expected sqlite://... or postgres://...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_is_the_embedded_default() {
        let config = Config::merge(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.object_store_dir, PathBuf::from("./data/objects"));
        match config.database {
            DatabaseConfig::Sqlite { path } => {
                assert_eq!(path, PathBuf::from("./data/scaigrid.db"))
            }
            other => panic!("expected sqlite, got {other:?}"),
        }
    }

    #[test]
    fn overrides_beat_the_file() {
        let file: FileConfig =
            toml::from_str("bind = \"127.0.0.1:9000\"\ndata_dir = \"/srv/a\"").unwrap();
        let overrides = Overrides {
            bind: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let config = Config::merge(file, overrides).unwrap();
        assert_eq!(config.bind.port(), 0);
        assert_eq!(config.data_dir, PathBuf::from("/srv/a"));
    }

    #[test]
    fn the_secrets_key_is_parsed() {
        let merge = |file: &str| Config::merge(toml::from_str(file).unwrap(), Overrides::default());
        let hex = "ab".repeat(32);
        let config = merge(&format!(
            "[secrets]\nkey = \"{hex}\"\nprevious_keys = [\"{}\"]",
            "01".repeat(32)
        ))
        .unwrap();
        assert_eq!(config.secrets.key, Some([0xab; 32]));
        assert_eq!(config.secrets.previous_keys, vec![[1; 32]]);
        assert!(!format!("{config:?}").contains(&hex));
        // Embedded default: none given, the data folder's key file is used.
        assert!(merge("").unwrap().secrets.key.is_none());
        // On PostgreSQL the key is required by the processes that open the vault
        // (`app::vault`), not by `migrate` or `admin`.
        assert!(merge("database_url = \"postgres://db/x\"").is_ok());
        assert!(
            merge(&format!(
                "database_url = \"postgres://db/x\"\n[secrets]\nkey = \"{hex}\""
            ))
            .is_ok()
        );
        let error = merge("[secrets]\nkey = \"tooshort\"")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("secrets.key"), "{error}");
        let error = merge("[secrets]\nprevious_keys = [\"x\"]")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("secrets.previous_keys"), "{error}");
        let error = merge(
            "[secrets]\nkey = \"change-me-change-me-change-me-change-me-change-me-change-me-0000\"",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("placeholder"), "{error}");
        let overrides = Overrides {
            secrets_key: Some(Secret::new("cd".repeat(32))),
            secrets_previous_keys: Some(vec![Secret::new("ef".repeat(32))]),
            ..Overrides::default()
        };
        let config = Config::merge(toml::from_str("").unwrap(), overrides).unwrap();
        assert_eq!(config.secrets.key, Some([0xcd; 32]));
        assert_eq!(config.secrets.previous_keys, vec![[0xef; 32]]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = |file: &str| {
            let file: FileConfig = toml::from_str(file).unwrap();
            Config::merge(file, Overrides::default())
                .unwrap_err()
                .to_string()
        };
        assert!(error("bind = \"nowhere\"").starts_with("bind:"));
        assert!(error("log_format = \"xml\"").starts_with("log_format:"));
        assert!(error("default_modules = [\"nope\"]").starts_with("default_modules:"));
        assert!(error("database_url = \"mysql://x\"").starts_with("database_url:"));
        assert!(error("bootstrap_admin_key = \"abc\"").starts_with("bootstrap_admin_key"));
        // The compose file's old defaults, and anything that says to change it.
        for placeholder in [
            "bootstrap_admin_key = \"sgk_compose_admin_key_change_me_0123456789\"",
            "bootstrap_admin_key = \"sgk_please_changeme_0123456789abcdef\"",
        ] {
            assert!(error(placeholder).contains("placeholder"), "{placeholder}");
        }
        for placeholder in [
            "[auth]\njwt_secret = \"change-me-change-me-change-me-change-me\"",
            "[auth]\njwt_secret = \"CHANGE_ME_to_something_long_and_random!\"",
        ] {
            assert!(error(placeholder).contains("placeholder"), "{placeholder}");
        }
        assert!(error("[auth]\naccess_token_ttl_seconds = 0").contains("access_token_ttl"));
        assert!(error("[engines]\ndevice = \"tpu\"").starts_with("engines.device"));
        assert!(error("[redis]\nurl = \"http://x\"").starts_with("redis.url"));
        assert!(error("[s3]\nbucket = \"b\"\nendpoint = \"s3.local\"").starts_with("s3.endpoint"));
        assert!(error("[jobs]\nlease_seconds = 0").starts_with("jobs.lease_seconds"));
        assert!(error("[http]\nmax_connections = 0").starts_with("http.max_connections"));
        assert!(error("[http]\nmax_header_bytes = 10").starts_with("http.max_header_bytes"));
        assert!(
            error("[http]\ntrusted_proxies = [\"10.0.0.0/40\"]")
                .starts_with("http.trusted_proxies")
        );
        assert!(
            error("[auth]\nlogin_attempts_per_minute_per_ip = 0")
                .starts_with("auth.login_attempts")
        );
        // External issuers: https keys unless allowed, and a tenant to look users up in.
        let issuer = |extra: &str, url: &str| {
            format!(
                "[[auth.external_issuers]]\nissuer = \"https://id\"\naudience = \"a\"\n\
                 jwks_url = \"{url}\"\n{extra}"
            )
        };
        let plain = issuer("tenant = \"t\"", "http://id/jwks");
        assert!(error(&plain).contains("must be an https URL"));
        assert!(error(&issuer("", "https://id/jwks")).contains("needs `tenant`"));
        let allowed = issuer("tenant = \"t\"\nallow_http_jwks = true", "http://id/jwks");
        let file: FileConfig = toml::from_str(&allowed).unwrap();
        let config = Config::merge(file, Overrides::default()).unwrap();
        assert!(config.auth.external_issuers[0].require_email_verified);
    }

    #[test]
    fn scaled_settings_select_redis_and_s3() {
        let file: FileConfig = toml::from_str(
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\n[s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9000\"",
        )
        .unwrap();
        let config = Config::merge(file, Overrides::default()).unwrap();
        assert_eq!(config.redis.unwrap().key_prefix, "scaigrid");
        let s3 = config.s3.unwrap();
        assert!(s3.path_style, "an endpoint implies path-style addressing");
        assert_eq!(s3.bucket, "b");
        let embedded = Config::merge(FileConfig::default(), Overrides::default()).unwrap();
        assert!(embedded.redis.is_none() && embedded.s3.is_none());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("bnid = \"x\"").is_err());
    }

    #[test]
    fn secrets_are_not_printed() {
        let secret = Secret::new("sgk_supersecret");
        assert!(!format!("{secret:?}").contains("supersecret"));
    }
}
