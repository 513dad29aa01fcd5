//! Test harness: starts the real `scaigrid` binary on an ephemeral port with its own
//! data folder, finds the port from the `listening on <addr>` log line, and stops it
//! on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const ADMIN_KEY: &str = "sgk_e2e_platform_admin_key_0123456789";
pub const JWT_SECRET: &str = "e2e-jwt-secret-e2e-jwt-secret-e2e-jwt-secret";
/// The sealing key of processes on PostgreSQL (64 hex digits).
pub const SECRETS_KEY: &str = "5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed0001";

pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
    /// Every stderr line so far (for tests that read what the server printed).
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// The PostgreSQL URL when not on the embedded SQLite.
    pub database_url: Option<String>,
}

pub struct Options {
    /// `serve` (default) or `worker` (which listens on nothing: the harness waits for
    /// its `worker process started` line).
    pub command: &'static str,
    /// Extra environment of the process.
    pub env: Vec<(String, String)>,
    pub bootstrap_key: bool,
    pub config_toml: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `None`: the embedded SQLite default.
    pub database_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            command: "serve",
            env: Vec::new(),
            bootstrap_key: true,
            config_toml: None,
            data_dir: None,
            database_url: None,
        }
    }
}

/// Which database a scenario runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The URL a `scripts/services/<name>` script prints after starting (once) its
/// loopback server, or `env_var` when set. `None` (after saying so loudly) only when
/// the server truly cannot start here.
pub fn service(name: &str, env_var: &str) -> Option<String> {
    service_with(name, &[], env_var)
}

/// [`service`] with arguments to its script (`redis tls`).
pub fn service_with(name: &str, args: &[&str], env_var: &str) -> Option<String> {
    if let Ok(url) = std::env::var(env_var) {
        return Some(url);
    }
    // Runtime path first (a binary built in another clone carries its path).
    let root = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let output = Command::new(format!("{root}/scripts/services/{name}"))
        .args(args)
        .output();
    match output {
        Ok(output) if output.status.success() => {
            Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        }
        other => {
            eprintln!(
                "\n!!!!!!!! SKIPPED: {name} could not start on this machine: {other:?} !!!!!!!!\n"
            );
            None
        }
    }
}

/// A fresh PostgreSQL database for one test, on the loopback server that
/// `scripts/services/postgres` starts (or `SCAIGRID_TEST_POSTGRES_URL` names).
pub async fn postgres_database() -> Option<String> {
    let base = service("postgres", "SCAIGRID_TEST_POSTGRES_URL")?;
    postgres_database_on(&base).await
}

/// A fresh database on the PostgreSQL server at `base`.
pub async fn postgres_database_on(base: &str) -> Option<String> {
    use sqlx::Connection;
    let name = format!("e2e_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .ok()?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    Some(format!("{base}/{name}"))
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_scaigrid")
}

/// Runs `serve --config config` where it must refuse to start (on the embedded default
/// unless `env` names a database): waits, at most 90 s, for it to exit unsuccessfully
/// and gives its stderr.
pub async fn refused_start(config: PathBuf, data_dir: PathBuf, env: Vec<(&str, String)>) -> String {
    let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("SCAIGRID_BIND", "127.0.0.1:0")
            .env("SCAIGRID_DATA_DIR", data_dir)
            .env_remove("SCAIGRID_DATABASE_URL")
            .env_remove("SCAIGRID_SECRETS_KEY")
            .env_remove("SCAIGRID_SECRETS_PREVIOUS_KEYS")
            .envs(env)
            .output()
            .unwrap()
    });
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("a process that cannot start exits")
        .unwrap();
    assert!(!output.status.success(), "it started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(Options::default()).await
    }

    /// A server on the given database backend; `None` only if PostgreSQL cannot start.
    pub async fn start_on(backend: Backend) -> Option<Server> {
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres_database().await?),
        };
        Some(
            Server::start_with(Options {
                database_url,
                ..Options::default()
            })
            .await,
        )
    }

    pub async fn start_with(options: Options) -> Server {
        let (temp, data_dir) = match options.data_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::tempdir().expect("temp dir");
                let dir = temp.path().join("data");
                (Some(temp), dir)
            }
        };
        let mut command = Command::new(binary());
        command
            .arg(options.command)
            .env("SCAIGRID_BIND", "127.0.0.1:0")
            .env("SCAIGRID_DATA_DIR", &data_dir)
            .env("SCAIGRID_JWT_SECRET", JWT_SECRET)
            .env("RUST_LOG", "info")
            .env_remove("SCAIGRID_BOOTSTRAP_ADMIN_KEY")
            .env_remove("SCAIGRID_DATABASE_URL")
            .env_remove("SCAIGRID_SECRETS_KEY")
            .env_remove("SCAIGRID_SECRETS_PREVIOUS_KEYS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = &options.database_url {
            // PostgreSQL's processes share one sealing key (config requires it there).
            command
                .env("SCAIGRID_DATABASE_URL", url)
                .env("SCAIGRID_SECRETS_KEY", SECRETS_KEY);
        }
        if options.bootstrap_key {
            command.env("SCAIGRID_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY);
        }
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        if let Some(toml) = options.config_toml {
            std::fs::create_dir_all(&data_dir).unwrap();
            let path = data_dir.join("test-config.toml");
            std::fs::write(&path, toml).unwrap();
            command.arg("--config").arg(path);
        }
        let options_database_url = options.database_url.clone();
        let mut child = command.spawn().expect("spawn scaigrid");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = address_tx.send(rest.trim().to_owned());
                }
                if line.contains("worker process started") {
                    let _ = address_tx.send("worker".to_owned());
                }
                if std::env::var_os("E2E_SERVER_LOGS").is_some() {
                    eprintln!("[server] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let address = match address_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child,
            base: format!("http://{address}"),
            data_dir,
            _temp: temp,
            http: reqwest::Client::new(),
            stderr: lines,
            database_url: options_database_url,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies with no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// The Prometheus exposition text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// The caller's tenant's usage row of `module` (`GET /v1/accounting/usage?group_by=
    /// module`), or `null` before any was recorded.
    pub async fn module_usage(&self, token: &str, module: &str) -> Value {
        let (status, usage) = self
            .get("/v1/accounting/usage?group_by=module", Some(token))
            .await;
        assert_eq!(status, 200, "{usage}");
        usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["key"] == module)
            .cloned()
            .unwrap_or_default()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.unwrap()).await
    }

    /// POSTs a multipart form: text `fields` and a WAV `file` part.
    pub async fn post_wav_form(
        &self,
        path: &str,
        token: &str,
        fields: &[(&str, &str)],
        wav: Vec<u8>,
    ) -> (u16, Value) {
        let part = reqwest::multipart::Part::bytes(wav)
            .file_name("reference.wav")
            .mime_str("audio/wav")
            .unwrap();
        let mut form = reqwest::multipart::Form::new().part("file", part);
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        let request = self.http.post(self.url(path)).bearer_auth(token);
        read(request.multipart(form).send().await.unwrap()).await
    }

    /// Creates a tenant, a tenant admin key and a member key in it.
    pub async fn tenant(&self, slug: &str) -> TestTenant {
        let (status, tenant) = self
            .post(
                "/v1/tenants",
                Some(ADMIN_KEY),
                serde_json::json!({"name": slug, "slug": slug}),
            )
            .await;
        assert_eq!(status, 201, "{tenant}");
        let id = tenant["id"].as_str().unwrap().to_owned();
        let admin_key = self.key(ADMIN_KEY, &id, &["tenant_admin"]).await;
        let member_key = self.key(ADMIN_KEY, &id, &["member"]).await;
        TestTenant {
            id,
            admin_key,
            member_key,
        }
    }

    /// Enables a module for the tenant of `admin_key` (204).
    pub async fn enable_module(&self, admin_key: &str, module: &str) {
        let enabled = self
            .http
            .post(self.url(&format!("/v1/modules/{module}/enable")))
            .bearer_auth(admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(enabled.status(), 204);
    }

    /// Creates a user (password `correct horse battery`) with roles in a tenant.
    pub async fn user(&self, tenant_id: &str, email: &str, roles: &[&str]) -> Value {
        let (status, user) = self
            .post(
                "/v1/users",
                Some(ADMIN_KEY),
                serde_json::json!({"email": email, "password": "correct horse battery",
                    "tenant_id": tenant_id, "roles": roles}),
            )
            .await;
        assert_eq!(status, 201, "{user}");
        user
    }

    /// Creates a key with roles in a tenant, returns the key string.
    pub async fn key(&self, creator: &str, tenant_id: &str, roles: &[&str]) -> String {
        let (status, body) = self
            .post(
                "/v1/api-keys",
                Some(creator),
                serde_json::json!({"name": "test", "tenant_id": tenant_id, "roles": roles}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["key"].as_str().unwrap().to_owned()
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("scaigrid.db")
    }

    async fn connect_db(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let url = match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.database_path().display()),
        };
        sqlx::AnyConnection::connect(&url).await.unwrap()
    }

    /// Runs a SQL statement on the server's database (to age a key or token).
    pub async fn sql(&self, statement: &str) {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut self.connect_db().await)
            .await
            .unwrap();
    }

    /// The first column of every row of a query, as text (NULL: `None`).
    pub async fn sql_texts(&self, query: &str) -> Vec<Option<String>> {
        use sqlx::Row;
        sqlx::query(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_all(&mut self.connect_db().await)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<Option<String>, _>(0).unwrap())
            .collect()
    }

    /// The first column of the first row of a query, as an integer (counts).
    pub async fn sql_count(&self, query: &str) -> i64 {
        use sqlx::Row;
        sqlx::query(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_one(&mut self.connect_db().await)
            .await
            .unwrap()
            .try_get::<i64, _>(0)
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct TestTenant {
    pub id: String,
    pub admin_key: String,
    pub member_key: String,
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Asserts the error envelope and its code.
#[track_caller]
pub fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "unexpected status, body: {body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["error"]["request_id"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The Python with the official OpenAI SDK (`scripts/test` installs it into a venv;
/// `SCAIGRID_TEST_PYTHON` overrides).
pub fn python_with_openai_sdk() -> String {
    let python = std::env::var("SCAIGRID_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/scaigrid/pyenv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        std::path::Path::new(&python).is_file(),
        "{python} is missing: run scripts/test (it installs the openai SDK into a venv)"
    );
    python
}
