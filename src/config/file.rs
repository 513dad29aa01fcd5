//! The TOML file's shape and the values the environment or flags may give: every
//! field optional, unknown keys rejected.

use std::path::PathBuf;

use serde::Deserialize;

use super::Secret;

#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address to listen on, e.g. `127.0.0.1:0` for an ephemeral port.
    #[arg(long, env = "SCAIGRID_BIND", global = true)]
    pub bind: Option<String>,
    /// The URL other edges reach this process at (`http://edge1:8080`): a WebRTC
    /// session's requests that land on another edge are forwarded to the one that
    /// holds it. Default: the bound address, or this host's name when bound to all
    /// interfaces.
    #[arg(long, env = "SCAIGRID_ADVERTISE_URL", global = true)]
    pub advertise_url: Option<String>,
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
    /// Shared token of the edges and the inference nodes reached over TCP (at least 16
    /// characters); a node listening beyond loopback refuses to start without one.
    #[arg(
        long,
        env = "SCAIGRID_NODE_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub node_token: Option<Secret>,
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
    /// See `Overrides::advertise_url`.
    pub advertise_url: Option<String>,
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
    #[serde(default)]
    pub instances: FileInstances,
}

/// Model instances on nodes (`/v1/instances`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInstances {
    /// A node that has not loaded an instance's model after this long fails the launch
    /// with `PROVIDER_TIMEOUT` (default 120).
    pub launch_timeout_seconds: Option<u64>,
    /// A node of a running instance that does not answer for this long fails it with
    /// `NODE_LOST` (default 15).
    pub node_grace_seconds: Option<u64>,
    /// A tenant's balance must be at least this to launch (cost units, default 0);
    /// below it a launch is 402 `BILLING_BELOW_MINIMUM`.
    pub launch_minimum: Option<f64>,
    /// Running instances are billed every this many seconds (default 60).
    pub billing_interval_seconds: Option<u64>,
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
    /// Chat answers kept in the process's answer cache at most, the oldest dropped
    /// first (10000); models opt in with their `cache` policy.
    pub cache_max_entries: Option<u64>,
    /// What a cache hit is billed, as a fraction of the answer's price (0.0: free).
    pub cache_hit_cost_fraction: Option<f64>,
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
    /// A live stream records its usage every this many seconds (of audio, or of wall
    /// time when audio comes slower) and holds the next stretch's cost ahead (5).
    pub stream_checkpoint_seconds: Option<f64>,
    /// Usage records one process keeps in memory while SQL (or, scaled, Redis) is
    /// unreachable; older ones go to the spill file in the data folder (10000).
    pub max_buffered_records: Option<u64>,
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
    /// The engines a node loads at start (engine ids; default: all but Whisper base,
    /// which `multilingual` adds). What they need comes with them.
    pub models: Option<Vec<String>>,
    /// Memory a node may fill with models, in MB (default 0: the device's free memory).
    pub memory_limit_mb: Option<u64>,
    /// Where the node runs, for instance placement (default `local`).
    pub region: Option<String>,
    /// The node's class of capacity, for instance placement (default `standard`).
    pub capacity_tier: Option<String>,
    /// What an instance on this node costs per hour, in cost units (default 0).
    pub price_per_hour: Option<f64>,
    /// Recordings waiting for the speech-to-text thread at most (default 16).
    pub stt_queue: Option<usize>,
    /// Inference node processes this server starts and supervises (default 1; 0: an
    /// edge that only calls the registry's nodes, scaled deployment).
    pub node_processes: Option<usize>,
    /// See `Overrides::node_token`.
    pub node_token: Option<Secret>,
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
    /// Origins of browser apps allowed to call the API and open its WebSockets
    /// (`https://app.example.com[:port]`, or `*`; default none: only same-origin pages).
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
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
