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

mod file;
mod sections;

pub use file::*;
pub use sections::parse_device;

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
    pub cors: crate::net::origins::Origins,
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
    /// The engines a node loads at start (`None`: the default set, see
    /// [`EnginesConfig::boot_models`]).
    pub models: Option<Vec<String>>,
    /// Memory a node may fill with models, in MB (0: the device's free memory); a
    /// model that does not fit is refused (`GPU_INCOMPATIBLE`).
    pub memory_limit_mb: u64,
    /// The node's labels, for instance placement (`crate::instances`).
    pub labels: NodeLabels,
    /// Recordings waiting for the speech-to-text thread at most; one more is
    /// `SERVICE_UNAVAILABLE` with `Retry-After` (a job goes back to the queue).
    pub stt_queue: usize,
    /// Inference node processes this server starts and supervises (0..=16; 0: an edge
    /// that calls the nodes of the registry only).
    pub node_processes: usize,
    /// The token edges present to nodes over TCP, and nodes require (see
    /// `crate::inference::token`).
    pub node_token: Option<Secret>,
}

/// What a node declares for instance placement: where it runs, its class of
/// capacity, and its price.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLabels {
    pub region: String,
    pub capacity_tier: String,
    /// Cost units per hour of an instance on this node.
    pub price_per_hour: f64,
}

impl Default for NodeLabels {
    fn default() -> Self {
        NodeLabels {
            region: "local".to_owned(),
            capacity_tier: "standard".to_owned(),
            price_per_hour: 0.0,
        }
    }
}

impl NodeLabels {
    /// Labels are short lowercase words; the price is finite and not negative.
    pub fn check(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("region", &self.region),
            ("capacity_tier", &self.capacity_tier),
        ] {
            let word = !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            if !word {
                bail!("engines.{name}: `{value}` must be 1 to 64 of a-z, 0-9, `-`, `_`, `.`");
            }
        }
        if !(self.price_per_hour.is_finite() && self.price_per_hour >= 0.0) {
            bail!("engines.price_per_hour must be a number of cost units, 0 or more");
        }
        Ok(())
    }
}

impl EnginesConfig {
    /// The engines a node loads at start: `models`, or the default set (with Whisper
    /// base when `multilingual`).
    pub fn boot_models(&self) -> Vec<String> {
        match &self.models {
            Some(models) => models.clone(),
            None => engines::node::default_models(self.multilingual),
        }
    }
}

/// The shortest node token taken.
pub const NODE_TOKEN_MIN_LEN: usize = 16;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// The URL other edges reach this process at (`None`: derived from the bound
    /// address, see [`Config::edge_url`]).
    pub advertise_url: Option<String>,
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
    pub instances: InstancesConfig,
}

/// `[instances]`.
#[derive(Debug, Clone)]
pub struct InstancesConfig {
    pub launch_timeout: std::time::Duration,
    pub node_grace: std::time::Duration,
    /// Cost units a balance needs to launch.
    pub launch_minimum: f64,
    pub billing_interval: std::time::Duration,
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
    /// Chat answers kept in this process's cache at most.
    pub cache_max_entries: usize,
    /// What a cache hit costs, as a fraction of the answer's price (0: free).
    pub cache_hit_cost_fraction: f64,
}

#[derive(Debug, Clone)]
pub struct AccountingConfig {
    pub flush_interval: std::time::Duration,
    pub prices: Prices,
    pub stream_checkpoint: std::time::Duration,
    pub max_buffered_records: usize,
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

/// This host's name (`HOSTNAME`, else the kernel's), or `localhost`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Config {
    /// The URL other edges reach this process at, once it listens on `bound`:
    /// `advertise_url`, else the bound address, else (bound to all interfaces) this
    /// host's name with the port.
    pub fn edge_url(&self, bound: SocketAddr) -> String {
        if let Some(url) = &self.advertise_url {
            return url.clone();
        }
        if !bound.ip().is_unspecified() {
            return format!("http://{bound}");
        }
        format!("http://{}:{}", host_name(), bound.port())
    }

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

    /// File values overridden by environment/flag values, then validated section by
    /// section (`sections`).
    pub fn merge(file: FileConfig, overrides: Overrides) -> anyhow::Result<Config> {
        let bind_text = overrides
            .bind
            .or(file.bind)
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let bind: SocketAddr = bind_text.parse().with_context(|| {
            format!("bind: `{bind_text}` is not an address like 127.0.0.1:8080")
        })?;
        let advertise_url = overrides.advertise_url.or(file.advertise_url);
        if let Some(url) = &advertise_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("advertise_url (SCAIGRID_ADVERTISE_URL): `{url}` is not an http(s) URL");
        }
        let data_dir = overrides
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database = match overrides.database_url.or(file.database_url) {
            None => DatabaseConfig::Sqlite {
                path: data_dir.join("scaigrid.db"),
            },
            Some(url) => sections::parse_database_url(url)?,
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
            if sections::is_placeholder(key.expose()) {
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
        let (relay, stream) = sections::scaiecho(
            file.scaiecho,
            (
                overrides.scaiecho_relay_url,
                overrides.scaiecho_relay_api_key,
            ),
        )?;
        let speak = sections::scaispeak(
            file.scaispeak,
            (
                overrides.scaispeak_relay_url,
                overrides.scaispeak_relay_api_key,
            ),
        )?;
        Ok(Config {
            secrets: sections::secrets_config(
                file.secrets,
                overrides.secrets_key,
                overrides.secrets_previous_keys,
            )?,
            bind,
            advertise_url: advertise_url.map(|url| url.trim_end_matches('/').to_owned()),
            data_dir,
            database,
            object_store_dir,
            bootstrap_admin_key,
            log_format,
            default_modules,
            shutdown_grace_seconds: file.shutdown_grace_seconds.unwrap_or(30),
            auth: sections::auth(file.auth, overrides.jwt_secret)?,
            limits: sections::limits(&file.limits)?,
            http: sections::http(&file.http)?,
            engines: sections::engines(file.engines, (overrides.models_dir, overrides.node_token))?,
            relay,
            stream,
            speak,
            jobs: sections::jobs(&file.jobs)?,
            redis: sections::redis(file.redis, overrides.redis_url)?,
            s3: sections::s3(file.s3, (overrides.s3_bucket, overrides.s3_endpoint))?,
            gateway: sections::gateway(&file.gateway)?,
            accounting: sections::accounting(&file.accounting)?,
            webhooks: sections::webhooks(&file.webhooks)?,
            webrtc: sections::webrtc(file.webrtc)?,
            instances: InstancesConfig {
                launch_timeout: std::time::Duration::from_secs(sections::positive(
                    "instances.launch_timeout_seconds",
                    file.instances.launch_timeout_seconds.unwrap_or(120),
                )?),
                node_grace: std::time::Duration::from_secs(sections::positive(
                    "instances.node_grace_seconds",
                    file.instances.node_grace_seconds.unwrap_or(15),
                )?),
                launch_minimum: match file.instances.launch_minimum.unwrap_or(0.0) {
                    minimum if minimum.is_finite() && minimum >= 0.0 => minimum,
                    _ => bail!("instances.launch_minimum must be 0 or more cost units"),
                },
                billing_interval: std::time::Duration::from_secs(sections::positive(
                    "instances.billing_interval_seconds",
                    file.instances.billing_interval_seconds.unwrap_or(60),
                )?),
            },
        })
    }
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
    fn the_edge_url_is_the_advertised_one_or_the_bound_address() {
        let config =
            |text: &str| Config::merge(toml::from_str(text).unwrap(), Overrides::default());
        let bound: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let plain = config("").unwrap();
        assert_eq!(plain.edge_url(bound), "http://10.0.0.5:8080");
        let everywhere: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let url = plain.edge_url(everywhere);
        assert!(url.starts_with("http://") && url.ends_with(":8081") && !url.contains("0.0.0.0"));
        let advertised = config("advertise_url = \"http://edge1:8080/\"").unwrap();
        assert_eq!(advertised.edge_url(bound), "http://edge1:8080");
        assert!(config("advertise_url = \"edge1:8080\"").is_err());
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
