//! One validation step per configuration section: file values (environment or flag
//! values first where a section has them) to the typed, checked section, failing with
//! a message that names the offending key.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use super::*;

/// `[auth]`, with the JWT secret from the environment or flags first.
pub(super) fn auth(file: FileAuth, jwt_secret: Option<Secret>) -> anyhow::Result<AuthConfig> {
    let auth = AuthConfig {
        jwt_secret: jwt_secret.or(file.jwt_secret),
        access_token_ttl_seconds: positive(
            "auth.access_token_ttl_seconds",
            file.access_token_ttl_seconds.unwrap_or(900),
        )?,
        refresh_token_ttl_seconds: positive(
            "auth.refresh_token_ttl_seconds",
            file.refresh_token_ttl_seconds.unwrap_or(30 * 24 * 3600),
        )?,
        key_cache_ttl_seconds: file.key_cache_ttl_seconds.unwrap_or(30),
        login_attempts_per_minute_per_ip: positive(
            "auth.login_attempts_per_minute_per_ip",
            file.login_attempts_per_minute_per_ip.unwrap_or(30),
        )?,
        login_failures_per_minute_per_email: positive(
            "auth.login_failures_per_minute_per_email",
            file.login_failures_per_minute_per_email.unwrap_or(10),
        )?,
        concurrent_password_checks: positive(
            "auth.concurrent_password_checks",
            file.concurrent_password_checks.map_or_else(
                || std::thread::available_parallelism().map_or(2, |n| n.get() as u64),
                |n| n as u64,
            ),
        )? as usize,
        external_issuers: file.external_issuers,
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
    Ok(auth)
}

/// `[limits]`.
pub(super) fn limits(file: &FileLimits) -> anyhow::Result<LimitsConfig> {
    let max_upload_bytes = file.max_upload_bytes.unwrap_or(100 * 1024 * 1024);
    let limits = LimitsConfig {
        max_json_body_bytes: file.max_json_body_bytes.unwrap_or(1024 * 1024),
        max_upload_bytes,
        max_audio_seconds: file.max_audio_seconds.unwrap_or(7200.0),
        upload_memory_bytes: file.upload_memory_bytes.unwrap_or(4 * max_upload_bytes),
        concurrent_decodes: file.concurrent_decodes.unwrap_or_else(|| {
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
    Ok(limits)
}

/// `[http]`.
pub(super) fn http(file: &FileHttp) -> anyhow::Result<HttpConfig> {
    let http = HttpConfig {
        max_connections: positive(
            "http.max_connections",
            file.max_connections.unwrap_or(8192) as u64,
        )? as usize,
        header_timeout: seconds(
            "http.header_timeout_seconds",
            file.header_timeout_seconds,
            10,
        )?,
        body_idle_timeout: seconds(
            "http.body_idle_timeout_seconds",
            file.body_idle_timeout_seconds,
            30,
        )?,
        body_timeout: seconds("http.body_timeout_seconds", file.body_timeout_seconds, 600)?,
        max_header_bytes: file.max_header_bytes.unwrap_or(64 * 1024),
        trusted_proxies: file
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
        cors: crate::net::origins::Origins::parse(&file.cors_allowed_origins)
            .map_err(anyhow::Error::msg)?,
    };
    if !(8192..=1024 * 1024).contains(&http.max_header_bytes) {
        bail!("http.max_header_bytes must be within 8192..=1048576");
    }
    Ok(http)
}

/// `[engines]`, with the models folder from the environment or flags first.
pub(super) fn engines(
    file: FileEngines,
    (models_dir, node_token): (Option<PathBuf>, Option<Secret>),
) -> anyhow::Result<EnginesConfig> {
    let engines = EnginesConfig {
        enabled: file.enabled.unwrap_or(true),
        models_dir: models_dir
            .or(file.models_dir)
            .unwrap_or_else(|| PathBuf::from("./models/cache")),
        device: parse_device(file.device.as_deref().unwrap_or("cpu"))?,
        intra_threads: file.intra_threads.unwrap_or(1),
        multilingual: file.multilingual.unwrap_or(false),
        models: file.models,
        memory_limit_mb: file.memory_limit_mb.unwrap_or(0),
        labels: {
            let defaults = crate::config::NodeLabels::default();
            crate::config::NodeLabels {
                region: file.region.unwrap_or(defaults.region),
                capacity_tier: file.capacity_tier.unwrap_or(defaults.capacity_tier),
                price_per_hour: file.price_per_hour.unwrap_or(defaults.price_per_hour),
            }
        },
        stt_queue: file.stt_queue.unwrap_or(16).max(1),
        node_processes: file.node_processes.unwrap_or(1),
        node_token: node_token.or(file.node_token),
        node_id: file
            .node_id
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "local".to_owned()),
    };
    if let Some(models) = &engines.models {
        engines::node::with_needs(models).map_err(|e| anyhow::anyhow!("engines.models: {e}"))?;
    }
    engines.labels.check()?;
    if engines.node_processes > 16 {
        bail!("engines.node_processes must be within 0..=16");
    }
    if let Some(token) = &engines.node_token
        && token.expose().len() < NODE_TOKEN_MIN_LEN
    {
        bail!(
            "engines.node_token must be at least {NODE_TOKEN_MIN_LEN} characters \
             (`openssl rand -hex 32`)"
        );
    }
    Ok(engines)
}

/// `[scaiecho]`: its relay (URL and key from the environment or flags first) and its
/// streams.
pub(super) fn scaiecho(
    file: FileScaiecho,
    (url, api_key): (Option<String>, Option<Secret>),
) -> anyhow::Result<(RelayConfig, StreamConfig)> {
    let relay = RelayConfig {
        url: url.or(file.relay_url),
        api_key: api_key.or(file.relay_api_key),
        model: file.relay_model.unwrap_or_else(|| "whisper-1".to_owned()),
        timeout_seconds: positive(
            "scaiecho.relay_timeout_seconds",
            file.relay_timeout_seconds.unwrap_or(120),
        )?,
    };
    if let Some(url) = &relay.url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("scaiecho.relay_url (SCAIGRID_SCAIECHO_RELAY_URL): `{url}` is not an http(s) URL");
    }

    let stream = StreamConfig {
        idle_timeout: seconds(
            "scaiecho.stream_idle_timeout_seconds",
            file.stream_idle_timeout_seconds,
            30,
        )?,
        keepalive: seconds(
            "scaiecho.stream_keepalive_seconds",
            file.stream_keepalive_seconds,
            15,
        )?,
        max_per_tenant: positive(
            "scaiecho.max_streams_per_tenant",
            file.max_streams_per_tenant.unwrap_or(32) as u64,
        )? as usize,
        max_seconds: positive(
            "scaiecho.stream_max_seconds",
            file.stream_max_seconds.unwrap_or(4 * 3600),
        )?,
        max_frame_bytes: positive(
            "scaiecho.stream_max_frame_bytes",
            file.stream_max_frame_bytes.unwrap_or(1 << 20) as u64,
        )? as usize,
    };
    Ok((relay, stream))
}

/// `[scaispeak]`, with its relay's URL and key from the environment or flags first.
pub(super) fn scaispeak(
    file: FileScaispeak,
    (url, api_key): (Option<String>, Option<Secret>),
) -> anyhow::Result<SpeakConfig> {
    let speak = SpeakConfig {
        relay: RelayConfig {
            url: url.or(file.relay_url),
            api_key: api_key.or(file.relay_api_key),
            model: file.relay_model.unwrap_or_else(|| "tts-1".to_owned()),
            timeout_seconds: positive(
                "scaispeak.relay_timeout_seconds",
                file.relay_timeout_seconds.unwrap_or(120),
            )?,
        },
        relay_voice: file.relay_voice.unwrap_or_else(|| "alloy".to_owned()),
        max_text_chars: positive(
            "scaispeak.max_text_chars",
            file.max_text_chars.unwrap_or(100_000) as u64,
        )? as usize,
        drive: file.drive.unwrap_or(true),
        inline_text_chars: positive(
            "scaispeak.inline_text_chars",
            file.inline_text_chars.unwrap_or(2000) as u64,
        )? as usize,
        stream_max_per_tenant: positive(
            "scaispeak.stream_max_per_tenant",
            file.stream_max_per_tenant.unwrap_or(16) as u64,
        )? as usize,
        stream_max_chars: positive(
            "scaispeak.stream_max_chars",
            file.stream_max_chars.unwrap_or(100_000) as u64,
        )? as usize,
    };
    if let Some(url) = &speak.relay.url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("scaispeak.relay_url (SCAIGRID_SCAISPEAK_RELAY_URL): `{url}` is not an http(s) URL");
    }
    Ok(speak)
}

/// `[jobs]`.
pub(super) fn jobs(file: &FileJobs) -> anyhow::Result<JobsConfig> {
    Ok(JobsConfig {
        workers: file.workers.unwrap_or(1),
        lease: seconds("jobs.lease_seconds", file.lease_seconds, 60)?,
    })
}

/// `[redis]` (`None`: no Redis), with the URL from the environment or flags first.
pub(super) fn redis(file: FileRedis, url: Option<Secret>) -> anyhow::Result<Option<RedisConfig>> {
    Ok(match url.or(file.url) {
        None => None,
        Some(url) => {
            if !(url.expose().starts_with("redis://")
                || url.expose().starts_with("rediss://")
                || url.expose().starts_with("unix://"))
            {
                bail!("redis.url (SCAIGRID_REDIS_URL): expected redis://host:port");
            }
            let tls = RedisTls {
                ca_file: file.tls_ca_file,
                client: match (file.tls_cert_file, file.tls_key_file) {
                    (None, None) => None,
                    (Some(cert), Some(key)) => Some((cert, key)),
                    _ => bail!("redis.tls_cert_file and redis.tls_key_file: give both or neither"),
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
                key_prefix: file.key_prefix.unwrap_or_else(|| "scaigrid".into()),
                tls,
            })
        }
    })
}

/// `[s3]` (`None`: the local folder), bucket and endpoint from the environment or
/// flags first.
pub(super) fn s3(
    file: FileS3,
    (bucket, endpoint): (Option<String>, Option<String>),
) -> anyhow::Result<Option<S3Config>> {
    Ok(match bucket.or(file.bucket) {
        None => None,
        Some(bucket) => {
            let endpoint = endpoint.or(file.endpoint);
            if let Some(url) = &endpoint
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                bail!("s3.endpoint (SCAIGRID_S3_ENDPOINT): `{url}` is not an http(s) URL");
            }
            Some(S3Config {
                path_style: file.path_style.unwrap_or(endpoint.is_some()),
                bucket,
                endpoint,
                region: file.region,
                prefix: file.prefix.unwrap_or_default(),
                access_key_id: file.access_key_id,
                secret_access_key: file.secret_access_key,
                create_bucket: file.create_bucket.unwrap_or(false),
            })
        }
    })
}

/// `[webrtc]`.
pub(super) fn webrtc(file: FileWebrtc) -> anyhow::Result<WebrtcConfig> {
    Ok(WebrtcConfig {
        enabled: file.enabled.unwrap_or(true),
        candidate_ips: match file.candidate_ips {
            Some(ips) if ips.is_empty() => {
                bail!("webrtc.candidate_ips: name at least one IP, or leave it out")
            }
            other => other,
        },
        public_ip: file.public_ip,
        ice_servers: file.ice_servers,
        max_sessions_per_tenant: positive(
            "webrtc.max_sessions_per_tenant",
            file.max_sessions_per_tenant.unwrap_or(8) as u64,
        )? as usize,
        offer_timeout: seconds(
            "webrtc.offer_timeout_seconds",
            file.offer_timeout_seconds,
            60,
        )?,
    })
}

/// `[gateway]`; `DISPATCH_STREAM_TIMEOUT_S` wins over its stream timeout.
pub(super) fn gateway(file: &FileGateway) -> anyhow::Result<GatewayConfig> {
    Ok(GatewayConfig {
        stream_timeout: seconds(
            "gateway.stream_timeout_seconds (DISPATCH_STREAM_TIMEOUT_S)",
            std::env::var("DISPATCH_STREAM_TIMEOUT_S")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .or(file.stream_timeout_seconds),
            600,
        )?,
        breaker_failure_threshold: positive(
            "gateway.breaker_failure_threshold",
            file.breaker_failure_threshold.unwrap_or(5).into(),
        )? as u32,
        breaker_open: seconds(
            "gateway.breaker_open_seconds",
            file.breaker_open_seconds,
            30,
        )?,
        health_interval: seconds(
            "gateway.health_interval_seconds",
            file.health_interval_seconds,
            30,
        )?,
        default_max_tokens: positive(
            "gateway.default_max_tokens",
            file.default_max_tokens.unwrap_or(256),
        )?,
        max_in_flight: positive("gateway.max_in_flight", file.max_in_flight.unwrap_or(1024))?
            as usize,
        cache_max_entries: positive(
            "gateway.cache_max_entries",
            file.cache_max_entries.unwrap_or(10_000),
        )? as usize,
        cache_hit_cost_fraction: match file.cache_hit_cost_fraction.unwrap_or(0.0) {
            fraction if (0.0..=1.0).contains(&fraction) => fraction,
            _ => anyhow::bail!("gateway.cache_hit_cost_fraction must be within 0 to 1"),
        },
    })
}

/// `[accounting]`.
pub(super) fn accounting(file: &FileAccounting) -> anyhow::Result<AccountingConfig> {
    Ok(AccountingConfig {
        flush_interval: Duration::from_millis(positive(
            "accounting.flush_interval_ms",
            file.flush_interval_ms.unwrap_or(1000),
        )?),
        prices: Prices {
            audio_second: non_negative("accounting.audio_second_cost", file.audio_second_cost)?,
            character: non_negative("accounting.character_cost", file.character_cost)?,
        },
        stream_checkpoint: {
            let seconds = file.stream_checkpoint_seconds.unwrap_or(5.0);
            if !(0.5..=300.0).contains(&seconds) {
                bail!("accounting.stream_checkpoint_seconds must be within 0.5..=300");
            }
            Duration::from_secs_f64(seconds)
        },
        max_buffered_records: positive(
            "accounting.max_buffered_records",
            file.max_buffered_records.unwrap_or(10_000),
        )? as usize,
    })
}

/// `[webhooks]`.
pub(super) fn webhooks(file: &FileWebhooks) -> anyhow::Result<WebhooksConfig> {
    Ok(WebhooksConfig {
        max_attempts: positive(
            "webhooks.max_attempts",
            file.max_attempts.unwrap_or(8).into(),
        )? as u32,
        retry_base: Duration::from_millis(positive(
            "webhooks.retry_base_ms",
            file.retry_base_ms.unwrap_or(2000),
        )?),
        disable_after_failures: positive(
            "webhooks.disable_after_failures",
            file.disable_after_failures.unwrap_or(20).into(),
        )? as u32,
        timeout: seconds("webhooks.timeout_seconds", file.timeout_seconds, 10)?,
        allow_private_targets: file.allow_private_targets.unwrap_or(false),
    })
}

/// A positive number of seconds (`default` when not given), as a duration.
fn seconds(name: &str, value: Option<u64>, default: u64) -> anyhow::Result<Duration> {
    positive(name, value.unwrap_or(default)).map(Duration::from_secs)
}

pub fn parse_device(text: &str) -> anyhow::Result<engines::Device> {
    match text {
        "cpu" => Ok(engines::Device::Cpu),
        "cuda" => Ok(engines::Device::Cuda { device_id: 0 }),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(device_id) => Ok(engines::Device::Cuda { device_id }),
            None => bail!("engines.device: `{other}` is not `cpu`, `cuda` or `cuda:N`"),
        },
    }
}

pub(super) fn non_negative(name: &str, value: Option<f64>) -> anyhow::Result<f64> {
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
pub(super) fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    PLACEHOLDERS.contains(&value)
        || ["change-me", "change_me", "changeme"]
            .iter()
            .any(|marker| lower.contains(marker))
}

/// The sealing key and its predecessors (the requirement of a key on PostgreSQL is
/// checked where the vault is built: `migrate` and `admin` need none).
pub(super) fn secrets_config(
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

pub(super) fn positive(name: &str, value: u64) -> anyhow::Result<u64> {
    if value == 0 {
        bail!("{name}: must be greater than zero");
    }
    Ok(value)
}

pub(super) fn parse_database_url(url: Secret) -> anyhow::Result<DatabaseConfig> {
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
