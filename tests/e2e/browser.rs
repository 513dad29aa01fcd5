//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromedriver`,
//! installed by `scripts/setup`): a fake microphone fed from a WAV file, scripts run in
//! the page. Nothing is downloaded; a missing browser fails the test with the fix.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn find(names: &[&str]) -> String {
    for name in names {
        for dir in ["/usr/bin", "/usr/lib/chromium", "/usr/local/bin"] {
            let path = Path::new(dir).join(name);
            if path.exists() {
                return path.display().to_string();
            }
        }
    }
    panic!(
        "{names:?} not found: run scripts/setup (it installs Debian's chromium and chromium-driver)"
    );
}

impl Browser {
    /// A browser whose microphone plays `microphone` once (then silence).
    pub async fn start(microphone: &Path) -> Browser {
        Browser::start_with(Some(microphone)).await
    }

    /// A browser with the fake devices' own microphone (a beep).
    pub async fn start_plain() -> Browser {
        Browser::start_with(None).await
    }

    async fn start_with(microphone: Option<&Path>) -> Browser {
        let chromium = find(&["chromium", "chromium-browser"]);
        let chromedriver = find(&["chromedriver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(response) = http.get(format!("{base}/status")).send().await
                && response.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--use-fake-device-for-media-stream".into(),
            "--use-fake-ui-for-media-stream".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1360,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if let Some(microphone) = microphone {
            args.push(format!(
                "--use-file-for-fake-audio-capture={}%noloop",
                microphone.display()
            ));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
            },
        }}});
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromium did not start: {response}"))
            .to_owned();
        let browser = Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        };
        browser
            .command("timeouts", json!({"script": 300_000, "pageLoad": 60_000}))
            .await;
        browser
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let response: Value = self
            .http
            .post(format!("{}/session/{}/{path}", self.base, self.session))
            .json(&body)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        response["value"].clone()
    }

    /// Writes a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let response: Value = self
            .http
            .get(format!("{}/session/{}/screenshot", self.base, self.session))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(response["value"].as_str().expect("a screenshot"))
            .expect("base64");
        std::fs::write(path, png).unwrap();
    }

    pub async fn open(&self, url: &str) {
        self.command("url", json!({ "url": url })).await;
    }

    /// Runs `body` as the inside of an async function with `args` and returns what it
    /// returns; a thrown error fails the test with its message.
    pub async fn run(&self, body: &str, args: Value) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const args = arguments[0];
             (async () => {{ {body} }})().then(done, (e) => done({{ __error: String(e && e.stack || e) }}));"
        );
        let value = self
            .command("execute/async", json!({ "script": script, "args": [args] }))
            .await;
        if let Some(error) = value.get("__error") {
            panic!("page script failed: {error}");
        }
        if value.get("error").is_some() && value.get("message").is_some() {
            panic!("webdriver: {value}");
        }
        value
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends chromium with its WebDriver session (a plain blocking request: drop
        // cannot await), then the driver.
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://");
        if let Ok(mut stream) = std::net::TcpStream::connect(address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
