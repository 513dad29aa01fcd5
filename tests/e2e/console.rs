//! The web console (`/console`): driven in headless Chromium like an operator would, and
//! its session attacked from outside (CSRF, other tenants, a viewer, markup in names).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::support::{ADMIN_KEY, Server, assert_error};
use crate::upstream::{self, Mode};

const PASSWORD: &str = "correct horse battery";

/// Helpers every page script starts with: wait for a condition, show a page, submit a
/// form, press a row's button. A refusal the page shows fails the step with its text.
const PRELUDE: &str = r#"
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const wait = async (test, what, ms = 30000) => {
  const end = performance.now() + ms;
  for (;;) {
    const value = test();
    if (value) return value;
    if (performance.now() > end) {
      throw new Error(`timed out waiting for ${what}; page: ${document.querySelector('main').innerText.slice(0, 1500)}`);
    }
    await sleep(50);
  }
};
const current = () => document.querySelector('section[data-page]');
const settled = (before, what) => wait(() => {
  const failure = document.querySelector('main .failure');
  if (failure) throw new Error(`${what} refused: ${failure.innerText}`);
  const now = document.querySelector('section[data-page][data-ready]');
  return now && now !== before ? now : null;
}, what);
const show = async (page) => {
  const before = current();
  if (location.hash === `#/${page}`) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = `#/${page}`;
  const section = await settled(before, `page ${page}`);
  if (section.dataset.page !== page) throw new Error(`${page} is not reachable: got ${section.dataset.page}`);
  return section;
};
const fill = (form, fields) => {
  for (const [name, value] of Object.entries(fields)) {
    const element = form.elements[name];
    if (!element) throw new Error(`no field ${name} in ${form.id}`);
    if (element.type === 'checkbox') element.checked = value; else element.value = value;
  }
};
const submit = async (id, fields) => {
  const form = document.getElementById(id);
  if (!form) throw new Error(`no form ${id}`);
  fill(form, fields);
  const before = current();
  form.requestSubmit();
  return settled(before, `form ${id}`);
};
const row = (text) => [...document.querySelectorAll('main tbody tr')].find((tr) => tr.innerText.includes(text));
const press = async (text, action) => {
  const found = row(text);
  if (!found) throw new Error(`no row with ${text}`);
  const button = found.querySelector(`button[data-action="${action}"]`);
  if (!button) throw new Error(`no ${action} button for ${text}`);
  const before = current();
  button.click();
  return settled(before, `${action} ${text}`);
};
const cell = (text, column) => {
  const found = row(text);
  if (!found) throw new Error(`no row with ${text}`);
  const titles = [...found.closest('table').querySelectorAll('th')].map((th) => th.innerText.trim());
  return found.children[titles.indexOf(column)].innerText.trim();
};
"#;

async fn run(browser: &Browser, body: &str, args: Value) -> Value {
    browser.run(&format!("{PRELUDE}\n{body}"), args).await
}

/// Where the screenshots go (a test artifact: `target/tmp/console-screenshots/`).
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn snap(browser: &Browser, name: &str) {
    browser
        .screenshot(&screenshots().join(format!("{name}.png")))
        .await;
}

/// A platform admin user (password [`PASSWORD`]) in the platform tenant.
async fn platform_admin(server: &Server, email: &str) {
    let (_, me) = server.get("/v1/me", Some(ADMIN_KEY)).await;
    let platform = me["tenant"]["id"].as_str().unwrap();
    server.user(platform, email, &["platform_admin"]).await;
}

async fn sign_in(browser: &Browser, server: &Server, credential: Value) {
    browser.open(&server.url("/console")).await;
    run(
        browser,
        "await wait(() => document.getElementById('login'), 'the sign-in form');
         if (args.api_key) {
           [...document.querySelectorAll('.tabs button')].find((b) => b.innerText.includes('API key')).click();
           await wait(() => document.querySelector('#login [name=api_key]'), 'the key field');
         }
         fill(document.getElementById('login'), args);
         document.getElementById('login').requestSubmit();
         await wait(() => !document.getElementById('nav').hidden || document.querySelector('.failure'), 'sign-in');
         const failure = document.querySelector('.failure');
         if (failure) throw new Error(failure.innerText);
         await wait(() => document.querySelector('section[data-page][data-ready]'), 'the first page');",
        credential,
    )
    .await;
}

#[tokio::test]
async fn an_operator_runs_a_tenant_from_the_console() {
    let server = Server::start().await;
    let upstream = upstream::start("alpha", "up-key").await;
    platform_admin(&server, "root@example.com").await;
    let dir = tempfile::tempdir().unwrap();
    let (microphone, speech_end_ms) = crate::webrtc::microphone_file(dir.path());
    let browser = Browser::start(&microphone).await;
    sign_in(
        &browser,
        &server,
        json!({"email": "root@example.com", "password": PASSWORD}),
    )
    .await;
    snap(&browser, "overview").await;

    // A tenant, picked; a user and a key in it; scaiecho enabled for our own tenant.
    let key = run(
        &browser,
        "await show('tenants');
         await submit('create-tenant', { slug: 'acme', name: 'Acme Inc.' });
         if (!row('acme')) throw new Error('the tenant is not listed');
         const choice = [...document.querySelector('#tenant-limits select').options].find((o) => o.text === 'acme');
         await submit('tenant-limits', { tenant: choice.value, requests_per_minute: '600' });
         if (!cell('acme', 'Rate limit').includes('600 req/min')) throw new Error(`limit ${cell('acme', 'Rate limit')}`);
         const picker = document.getElementById('tenant-picker');
         const acme = [...picker.options].find((o) => o.text === 'acme');
         picker.value = acme.value;
         const before = current();
         picker.dispatchEvent(new Event('change', { bubbles: true }));
         await settled(before, 'the tenant picker');
         await show('users');
         await submit('create-user', { email: 'ada@acme.test', password: 'a long password', role: 'member' });
         if (!row('ada@acme.test')) throw new Error('the user is not listed');
         await show('keys');
         await submit('create-key', { name: 'service', roles: 'member' });
         const key = await wait(() => document.querySelector('#new-key .key'), 'the new key');
         return { key: key.innerText, tenant: acme.value };",
        json!({}),
    )
    .await;
    snap(&browser, "keys").await;
    let acme_key = key["key"].as_str().unwrap().to_owned();
    let acme = key["tenant"].as_str().unwrap().to_owned();
    let (status, me) = server.get("/v1/me", Some(&acme_key)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["tenant"]["id"], acme.as_str());
    let (_, users) = server
        .get(&format!("/v1/users?tenant_id={acme}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(users[0]["email"], "ada@acme.test", "{users}");

    // ScaiEcho enabled for the new tenant; then back on our own.
    run(
        &browser,
        "await show('modules');
         if (cell('scaiecho', 'Status') !== 'available') throw new Error(`scaiecho is ${cell('scaiecho', 'Status')}`);
         await press('scaiecho', 'enable');
         if (cell('scaiecho', 'Status') !== 'enabled') throw new Error(`scaiecho is ${cell('scaiecho', 'Status')}`);",
        json!({}),
    )
    .await;
    snap(&browser, "modules").await;
    let (_, me) = server.get("/v1/me", Some(&acme_key)).await;
    assert!(
        me["tenant"]["modules"].to_string().contains("scaiecho"),
        "{me}"
    );
    run(
        &browser,
        "const picker = document.getElementById('tenant-picker');
         picker.value = [...picker.options].find((o) => o.text !== 'acme').value;
         const before = current();
         picker.dispatchEvent(new Event('change', { bubbles: true }));
         await settled(before, 'the tenant picker');",
        json!({}),
    )
    .await;

    // A backend and a model; its health follows the upstream through "probe now".
    let health = |expected: &'static str| {
        format!(
            "await show('models');
             await press('alpha', 'probe-now');
             const health = cell('alpha', 'Health');
             if (health !== '{expected}') throw new Error(`health ${{health}}, wanted {expected}`);
             return cell('alpha', 'Breaker');"
        )
    };
    run(
        &browser,
        "await show('models');
         await submit('create-backend', { name: 'alpha', base_url: args.base, api_key: 'up-key' });
         await submit('create-model', { slug: 'acme/chat', upstream_model: 'up-model', input_per_1k: '1', output_per_1k: '1' });
         if (!row('acme/chat')) throw new Error('the model is not listed');",
        json!({"base": upstream.base}),
    )
    .await;
    run(&browser, &health("healthy"), json!({})).await;
    upstream.set_mode(Mode::Fail(503));
    run(&browser, &health("unhealthy"), json!({})).await;
    snap(&browser, "models-unhealthy").await;
    upstream.set_mode(Mode::Ok);
    let breaker = run(&browser, &health("healthy"), json!({})).await;
    assert_eq!(breaker, "closed");
    snap(&browser, "models").await;

    // A budget, and usage that moves after chat calls.
    run(
        &browser,
        "await show('budgets');
         await submit('create-budget', { scope: 'tenant', period: 'month', limit: '1000' });
         if (cell('tenant', 'Used') !== '0') throw new Error(`used ${cell('tenant', 'Used')}`);",
        json!({}),
    )
    .await;
    for _ in 0..3 {
        let (status, body) = server
            .post(
                "/v1/chat/completions",
                Some(ADMIN_KEY),
                json!({"model": "acme/chat", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let used = run(
        &browser,
        "for (;;) {
           await show('budgets');
           const used = Number(cell('tenant', 'Used').replace(/,/g, ''));
           if (used > 0) return used;
           await sleep(500);
         }",
        json!({}),
    )
    .await;
    assert!(used.as_f64().unwrap() > 0.0, "{used}");
    snap(&browser, "budgets").await;

    // The playground transcribes an uploaded recording.
    let wav = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    use base64::Engine;
    let text = run(
        &browser,
        "await show('playground');
         const bytes = Uint8Array.from(atob(args.wav), (c) => c.charCodeAt(0));
         const files = new DataTransfer();
         files.items.add(new File([bytes], 'beckett.wav', { type: 'audio/wav' }));
         const form = document.getElementById('transcribe');
         form.elements.file.files = files.files;
         form.requestSubmit();
         const done = await wait(() => document.querySelector('#transcript .transcript, main .failure'), 'the transcript', 120000);
         if (done.classList.contains('failure')) throw new Error(done.innerText);
         return done.innerText;",
        json!({"wav": base64::engine::general_purpose::STANDARD.encode(&wav)}),
    )
    .await;
    let text = text.as_str().unwrap().to_lowercase();
    assert!(text.split_whitespace().count() >= 5, "{text}");

    // ... and what the microphone hears, over WebRTC with the session's cookie.
    let spoken = run(
        &browser,
        "const started = performance.now();
         document.getElementById('mic-start').click();
         await wait(() => document.getElementById('mic-status').innerText === 'listening'
           || document.querySelector('main .failure'), 'the microphone', 60000);
         const failure = document.querySelector('main .failure');
         if (failure) throw new Error(failure.innerText);
         await sleep(Math.max(0, started + args.until_ms - performance.now()));
         document.getElementById('mic-stop').click();
         await wait(() => document.getElementById('mic-status').innerText === 'done', 'the last words', 60000);
         return document.getElementById('mic-transcript').innerText;",
        json!({"until_ms": speech_end_ms + 2500}),
    )
    .await;
    let spoken = spoken.as_str().unwrap().to_lowercase();
    // A typed text comes back as audio the page can play.
    let seconds = run(
        &browser,
        "const form = document.getElementById('speak');
         form.elements.input.value = 'Hello from the console.';
         form.requestSubmit();
         const audio = await wait(() => document.querySelector('#speech') || document.querySelector('main .failure'), 'the speech', 60000);
         if (audio.classList.contains('failure')) throw new Error(audio.innerText);
         await wait(() => audio.readyState >= 1, 'the audio to load');
         return audio.duration;",
        json!({}),
    )
    .await;
    assert!(seconds.as_f64().unwrap() > 0.5, "{seconds}");
    let words = |t: &str| {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 3)
            .map(str::to_owned)
            .collect::<std::collections::HashSet<_>>()
    };
    let shared = words(&spoken).intersection(&words(&text)).count();
    assert!(shared >= 3, "microphone: {spoken:?}; upload: {text:?}");
    snap(&browser, "playground").await;

    // A queued job shows on the transcription dashboard.
    let part = reqwest::multipart::Part::bytes(wav)
        .file_name("a.wav")
        .mime_str("audio/wav")
        .unwrap();
    let response = reqwest::Client::new()
        .post(server.url("/v1/modules/scaiecho/transcribe?async=true"))
        .bearer_auth(ADMIN_KEY)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let (status, job) = crate::support::read(response).await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap();
    run(
        &browser,
        "await show('jobs');
         if (!row(args.id)) throw new Error('the job is not listed');
         const workers = document.getElementById('workers').innerText;
         if (!/\\d+ of 1\\s*Workers busy/.test(workers)) throw new Error('workers: ' + workers);",
        json!({"id": job_id}),
    )
    .await;
    snap(&browser, "jobs").await;

    // Revoking the key from the console refuses it at once.
    run(
        &browser,
        "const picker = document.getElementById('tenant-picker');
         picker.value = args.acme;
         const before = current();
         picker.dispatchEvent(new Event('change', { bubbles: true }));
         await settled(before, 'the tenant picker');
         await show('keys');
         window.confirm = () => true;
         await press('service', 'revoke');
         if (cell('service', 'Status') !== 'revoked') throw new Error('not revoked');",
        json!({"acme": acme}),
    )
    .await;
    let (status, body) = server.get("/v1/me", Some(&acme_key)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_REVOKED");

    for page in [
        "tenants", "users", "roles", "voices", "webhooks", "nodes", "overview",
    ] {
        run(&browser, "await show(args.page);", json!({"page": page})).await;
        snap(&browser, page).await;
    }
}

/// A session signed in over HTTP: the cookies it was given and its CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn http_sign_in(server: &Server, credential: Value) -> (u16, Value, Option<Session>) {
    let response = reqwest::Client::new()
        .post(server.url("/console/session"))
        .json(&credential)
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let (status, body) = crate::support::read(response).await;
    if status != 200 {
        return (status, body, None);
    }
    for cookie in &cookies {
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
    }
    let cookie = cookies
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect::<Vec<_>>()
        .join("; ");
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    (status, body, Some(Session { cookie, csrf }))
}

async fn with_session(
    server: &Server,
    session: &Session,
    method: reqwest::Method,
    path: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, server.url(path))
        .header("cookie", &session.cookie);
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    crate::support::read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn the_console_session_refuses_forgery_other_tenants_and_viewers() {
    let server = Server::start().await;
    let acme = server.tenant("acme").await;
    let other = server.tenant("other").await;
    server
        .user(&acme.id, "admin@acme.test", &["tenant_admin"])
        .await;
    server.user(&acme.id, "viewer@acme.test", &["viewer"]).await;
    let stranger = server.user(&other.id, "bob@other.test", &["member"]).await;
    let stranger_id = stranger["id"].as_str().unwrap();

    // Wrong credentials and malformed bodies: the documented codes, no cookie.
    let (status, body, _) = http_sign_in(
        &server,
        json!({"email": "admin@acme.test", "password": "wrong password"}),
    )
    .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");
    for bad in [
        json!({"api_key": "sgk_nope"}),
        json!({"api_key": "not a key"}),
    ] {
        let (status, body, _) = http_sign_in(&server, bad).await;
        assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");
    }
    for bad in [
        json!({}),
        json!({"email": "a@b.c"}),
        json!({"email": "a@b.c", "password": "x", "api_key": "sgk_x"}),
        json!({"api_key": 7}),
        json!({"token": "x"}),
    ] {
        let (status, body, _) = http_sign_in(&server, bad).await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
    }
    let form = reqwest::Client::new()
        .post(server.url("/console/session"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("api_key={}", acme.admin_key))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::support::read(form).await;
    assert_error(status, &body, 415, "UNSUPPORTED_MEDIA_TYPE");

    let (status, body, admin) = http_sign_in(
        &server,
        json!({"email": "admin@acme.test", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "password");
    let admin = admin.unwrap();
    use reqwest::Method;

    // CSRF: the cookie alone, or with another session's token, is refused.
    let (status, body) = with_session(&server, &admin, Method::GET, "/v1/users", None, None).await;
    assert_error(status, &body, 403, "AUTH_CSRF_FAILED");
    let forged = json!({"email": "mallory@acme.test", "password": "a long password"});
    let (status, body) = with_session(
        &server,
        &admin,
        Method::POST,
        "/v1/users",
        Some("00ff"),
        Some(forged.clone()),
    )
    .await;
    assert_error(status, &body, 403, "AUTH_CSRF_FAILED");
    let (_, _, key_session) =
        http_sign_in(&server, json!({"api_key": acme.admin_key.clone()})).await;
    let key_session = key_session.unwrap();
    let (status, body) = with_session(
        &server,
        &admin,
        Method::POST,
        "/v1/users",
        Some(&key_session.csrf),
        Some(forged.clone()),
    )
    .await;
    assert_error(status, &body, 403, "AUTH_CSRF_FAILED");
    let (status, users) = with_session(
        &server,
        &admin,
        Method::GET,
        "/v1/users",
        Some(&admin.csrf),
        None,
    )
    .await;
    assert_eq!(status, 200, "{users}");
    assert!(!users.to_string().contains("mallory"), "{users}");

    // Another tenant's ids are 404, whatever the action.
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"status": "disabled"}))),
        (Method::DELETE, None),
    ] {
        let path = format!("/v1/users/{stranger_id}");
        let (status, body) =
            with_session(&server, &admin, method, &path, Some(&admin.csrf), body).await;
        assert_error(status, &body, 404, "NOT_FOUND");
    }
    let (status, body) = with_session(
        &server,
        &admin,
        Method::POST,
        &format!("/v1/users/{stranger_id}/password"),
        Some(&admin.csrf),
        Some(json!({"password": "a long password"})),
    )
    .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = server.get("/v1/me", Some(&other.member_key)).await;
    assert_eq!(status, 200, "{body}");

    // A viewer signs in but every admin action and page's data is refused server-side.
    let (_, _, viewer) = http_sign_in(
        &server,
        json!({"email": "viewer@acme.test", "password": PASSWORD}),
    )
    .await;
    let viewer = viewer.unwrap();
    for (method, path, body) in [
        (Method::GET, "/v1/users", None),
        (Method::GET, "/v1/api-keys", None),
        (Method::GET, "/v1/backends", None),
        (Method::POST, "/v1/users", Some(forged.clone())),
        (Method::POST, "/v1/modules/scaiecho/enable", Some(json!({}))),
        (
            Method::POST,
            "/v1/accounting/budgets",
            Some(json!({"scope": "tenant", "scope_id": acme.id, "period": "day", "limit": 1})),
        ),
    ] {
        let (status, body) =
            with_session(&server, &viewer, method, path, Some(&viewer.csrf), body).await;
        assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    }
    let (status, me) = with_session(
        &server,
        &viewer,
        Method::GET,
        "/v1/me",
        Some(&viewer.csrf),
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    // The tenant list shows a viewer their own tenant and no other.
    let (status, tenants) = with_session(
        &server,
        &viewer,
        Method::GET,
        "/v1/tenants",
        Some(&viewer.csrf),
        None,
    )
    .await;
    assert_eq!(status, 200, "{tenants}");
    assert_eq!(tenants.as_array().unwrap().len(), 1, "{tenants}");
    assert_eq!(tenants[0]["id"], acme.id.as_str(), "{tenants}");

    // A new tab asks for the token of its cookie; a renewal rotates both.
    let (status, current) =
        with_session(&server, &admin, Method::GET, "/console/session", None, None).await;
    assert_eq!(
        (status, current["csrf_token"].as_str()),
        (200, Some(admin.csrf.as_str()))
    );
    let renewed = reqwest::Client::new()
        .post(server.url("/console/session/refresh"))
        .header("cookie", &admin.cookie)
        .header("x-csrf-token", &admin.csrf)
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> = renewed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let (status, body) = crate::support::read(renewed).await;
    assert_eq!(status, 200, "{body}");
    let fresh = Session {
        cookie: cookies.join("; "),
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
    };
    assert_ne!(fresh.csrf, admin.csrf);
    let (status, me) = with_session(
        &server,
        &fresh,
        Method::GET,
        "/v1/me",
        Some(&fresh.csrf),
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    let (status, body) = with_session(
        &server,
        &fresh,
        Method::GET,
        "/v1/me",
        Some(&admin.csrf),
        None,
    )
    .await;
    assert_error(status, &body, 403, "AUTH_CSRF_FAILED");
    let admin = fresh;

    // Sign-out ends the login: the refresh cookie no longer renews it.
    let (status, body) = with_session(
        &server,
        &admin,
        Method::DELETE,
        "/console/session",
        None,
        None,
    )
    .await;
    assert_error(status, &body, 403, "AUTH_CSRF_FAILED");
    let (status, _) = with_session(
        &server,
        &admin,
        Method::DELETE,
        "/console/session",
        Some(&admin.csrf),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = with_session(
        &server,
        &admin,
        Method::POST,
        "/console/session/refresh",
        Some(&admin.csrf),
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // The page itself: a strict policy, no inline code.
    let page = reqwest::get(server.url("/console")).await.unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let (status, body) = server.get("/console/assets/..%2Fmod.rs", None).await;
    assert_error(status, &body, 404, "NOT_FOUND");
}

#[tokio::test]
async fn markup_in_names_renders_as_text_and_a_viewer_sees_no_admin_pages() {
    let server = Server::start().await;
    let hostile = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>";
    let (status, tenant) = server
        .post(
            "/v1/tenants",
            Some(ADMIN_KEY),
            json!({"slug": "hostile", "name": hostile}),
        )
        .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = tenant["id"].as_str().unwrap();
    let (status, body) = server
        .post(
            "/v1/api-keys",
            Some(ADMIN_KEY),
            json!({"name": hostile, "roles": ["viewer"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    platform_admin(&server, "root@example.com").await;
    server
        .user(tenant_id, "viewer@hostile.test", &["viewer"])
        .await;

    let browser = Browser::start_plain().await;
    sign_in(
        &browser,
        &server,
        json!({"email": "root@example.com", "password": PASSWORD}),
    )
    .await;
    let shown = run(
        &browser,
        "await show('tenants');
         const tenants = row('hostile').innerText;
         await show('keys');
         const keys = row('onerror').innerText;
         await sleep(300);
         return { tenants, keys, pwned: window.pwned || 0, scripts: document.scripts.length,
                  images: document.querySelectorAll('main img').length };",
        json!({}),
    )
    .await;
    assert_eq!(shown["pwned"], 0, "{shown}");
    assert_eq!(shown["scripts"], 1, "{shown}");
    assert_eq!(shown["images"], 0, "{shown}");
    assert!(
        shown["tenants"].as_str().unwrap().contains("<script>"),
        "{shown}"
    );
    assert!(
        shown["keys"].as_str().unwrap().contains("<img src=x"),
        "{shown}"
    );

    // A viewer's console: no admin pages in the navigation, and asking for one by its
    // address lands elsewhere (the data behind it is refused server-side, see above).
    run(
        &browser,
        "document.getElementById('sign-out').click();
         await wait(() => document.getElementById('login'), 'the sign-in form');",
        json!({}),
    )
    .await;
    sign_in(
        &browser,
        &server,
        json!({"email": "viewer@hostile.test", "password": PASSWORD}),
    )
    .await;
    let pages = run(
        &browser,
        "const pages = [...document.querySelectorAll('#nav a')].map((a) => a.dataset.page);
         location.hash = '#/users';
         await sleep(500);
         await wait(() => document.querySelector('section[data-page][data-ready]'), 'a page');
         return { pages, landed: current().dataset.page };",
        json!({}),
    )
    .await;
    let nav = pages["pages"].to_string();
    for admin_page in ["tenants", "users", "keys", "roles", "nodes"] {
        assert!(!nav.contains(admin_page), "{pages}");
    }
    assert_ne!(pages["landed"], "users", "{pages}");
    snap(&browser, "viewer").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn the_admin_api_the_console_uses_pages_filters_and_changes_everything() {
    let server = Server::start_with(crate::support::Options {
        config_toml: Some("[webhooks]\nallow_private_targets = true\n".into()),
        ..crate::support::Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    let admin = acme.admin_key.as_str();
    let client = reqwest::Client::new();

    // Users: a page at a time, by status, with the next page's cursor.
    let mut ids = Vec::new();
    for n in 0..5 {
        let email = format!("u{n}@acme.test");
        let user = server.user(&acme.id, &email, &["member"]).await;
        ids.push(user["id"].as_str().unwrap().to_owned());
    }
    let page = |path: String| {
        let client = client.clone();
        let url = server.url(&path);
        async move {
            let response = client.get(url).bearer_auth(admin).send().await.unwrap();
            let next = response
                .headers()
                .get("x-next-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let link = response
                .headers()
                .get("link")
                .map(|v| v.to_str().unwrap().to_owned());
            let (status, body) = crate::support::read(response).await;
            (status, body, next, link)
        }
    };
    let (status, first, next, link) = page("/v1/users?limit=2".into()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first.as_array().unwrap().len(), 2);
    assert_eq!(next.as_deref(), Some(ids[1].as_str()));
    assert!(link.unwrap().contains(&format!("after={}", ids[1])));
    let (_, second, next, _) = page(format!("/v1/users?limit=2&after={}", ids[1])).await;
    assert_eq!(second[0]["id"], ids[2].as_str(), "{second}");
    let (_, last, next_after_last, _) =
        page(format!("/v1/users?limit=2&after={}", next.unwrap())).await;
    assert_eq!(last.as_array().unwrap().len(), 1, "{last}");
    assert_eq!(next_after_last, None);
    for bad in [
        "limit=0",
        "limit=1001",
        "status=gone",
        "limit=x",
        "colour=red",
    ] {
        let (status, body, _, _) = page(format!("/v1/users?{bad}")).await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
    }

    // Disable: the user's logins end at once; enable again; reset; delete.
    let target = &ids[0];
    let (status, login) = server
        .post(
            "/v1/auth/token",
            None,
            json!({"email": "u0@acme.test", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let access = login["access_token"].as_str().unwrap();
    let patch = |path: String, body: Value| {
        let request = client
            .patch(server.url(&path))
            .bearer_auth(admin)
            .json(&body);
        async move { crate::support::read(request.send().await.unwrap()).await }
    };
    let (status, user) = patch(format!("/v1/users/{target}"), json!({"status": "disabled"})).await;
    assert_eq!(
        (status, user["status"].as_str()),
        (200, Some("disabled")),
        "{user}"
    );
    let (status, body) = server.get("/v1/me", Some(access)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_REVOKED");
    let (status, body) = server
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": login["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let (_, disabled, _, _) = page("/v1/users?status=disabled".into()).await;
    assert_eq!(disabled.as_array().unwrap().len(), 1, "{disabled}");
    let (status, body) = patch(format!("/v1/users/{target}"), json!({"status": "asleep"})).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, _) = patch(format!("/v1/users/{target}"), json!({"status": "active"})).await;
    assert_eq!(status, 200);
    let (status, body) = server
        .post(
            &format!("/v1/users/{target}/password"),
            Some(admin),
            json!({"password": "short"}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(
            &format!("/v1/users/{target}/password"),
            Some(admin),
            json!({"password": "a brand new password"}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = server
        .post(
            "/v1/auth/token",
            None,
            json!({"email": "u0@acme.test", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, login) = server
        .post(
            "/v1/auth/token",
            None,
            json!({"email": "u0@acme.test", "password": "a brand new password"}),
        )
        .await;
    assert_eq!(status, 200, "{login}");

    // A user changes their own password with the current one; a key cannot.
    let access = login["access_token"].as_str().unwrap();
    let change = |token: &str, body: Value| {
        let request = client
            .post(server.url("/v1/me/password"))
            .bearer_auth(token)
            .json(&body);
        async move { crate::support::read(request.send().await.unwrap()).await }
    };
    let (status, body) = change(
        access,
        json!({"current_password": "wrong one!", "password": "yet another password"}),
    )
    .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");
    let (status, body) = change(
        access,
        json!({"current_password": "a brand new password", "password": "yet another password"}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = change(
        admin,
        json!({"current_password": "x", "password": "yet another password"}),
    )
    .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");

    let delete = |path: String| {
        let request = client.delete(server.url(&path)).bearer_auth(admin);
        async move { crate::support::read(request.send().await.unwrap()).await }
    };
    let (status, _) = delete(format!("/v1/users/{target}")).await;
    assert_eq!(status, 204);
    let (status, body) = server
        .get(&format!("/v1/users/{target}"), Some(admin))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = delete(format!("/v1/users/{target}")).await;
    assert_error(status, &body, 404, "NOT_FOUND");

    // Roles change; built-in ones do not. Grants are revoked as they were granted.
    let (status, role) = server
        .post(
            "/v1/roles",
            Some(admin),
            json!({"name": "listener", "permissions": ["scaiecho:transcribe"]}),
        )
        .await;
    assert_eq!(status, 201, "{role}");
    let role_id = role["id"].as_str().unwrap();
    let (status, role) = patch(
        format!("/v1/roles/{role_id}"),
        json!({"permissions": ["scaiecho:transcribe", "scaiecho:diarize"], "description": "hears"}),
    )
    .await;
    assert_eq!(status, 200, "{role}");
    assert_eq!(role["permissions"].as_array().unwrap().len(), 2, "{role}");
    assert_eq!(role["description"], "hears");
    let (status, body) = patch(
        format!("/v1/roles/{role_id}"),
        json!({"permissions": ["platform:admin"]}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = patch("/v1/roles/role_member".into(), json!({"description": "x"})).await;
    assert_error(status, &body, 409, "CONFLICT");
    let member = ids[1].as_str();
    let grant = json!({"subject_kind": "user", "subject_id": member, "roles": ["listener"], "permissions": ["webhooks:read"]});
    let (status, body) = server.post("/v1/grants", Some(admin), grant.clone()).await;
    assert_eq!(status, 204, "{body}");
    let (_, user) = server
        .get(&format!("/v1/users/{member}"), Some(admin))
        .await;
    assert!(user["roles"].to_string().contains("listener"), "{user}");
    let (status, body) = server.post("/v1/grants/revoke", Some(admin), grant).await;
    assert_eq!(status, 204, "{body}");
    let (_, user) = server
        .get(&format!("/v1/users/{member}"), Some(admin))
        .await;
    assert_eq!(user["roles"], json!(["member"]), "{user}");
    assert_eq!(user["permissions"], json!([]), "{user}");
    let (status, body) = server
        .post(
            "/v1/grants/revoke",
            Some(admin),
            json!({"subject_kind": "user", "subject_id": member, "roles": ["nonexistent"]}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(
            "/v1/grants/revoke",
            Some(&acme.member_key),
            json!({"subject_kind": "user", "subject_id": member, "roles": ["member"]}),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");

    // Keys: last use recorded, filtered by status, paged.
    let (status, _) = server.get("/v1/me", Some(&acme.member_key)).await;
    assert_eq!(status, 200);
    let mut used = Value::Null;
    for _ in 0..50 {
        let (_, keys, _, _) = page("/v1/api-keys?status=active".into()).await;
        used = keys.clone();
        if keys
            .as_array()
            .unwrap()
            .iter()
            .all(|k| !k["last_used_at"].is_null())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for key in used.as_array().unwrap() {
        assert!(!key["last_used_at"].is_null(), "{used}");
    }
    let (_, revoked, _, _) = page("/v1/api-keys?status=revoked".into()).await;
    assert_eq!(revoked, json!([]));

    // Jobs: a page, with the list shape's cursor fields.
    server.enable_module(admin, "scaiecho").await;
    let (status, jobs) = server
        .get(
            "/v1/modules/scaiecho/jobs?limit=1&status=queued",
            Some(admin),
        )
        .await;
    assert_eq!(status, 200, "{jobs}");
    assert_eq!(jobs["has_more"], false, "{jobs}");
    let (status, body) = server
        .get("/v1/modules/scaiecho/jobs?status=lost", Some(admin))
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");

    // A platform admin reads another tenant's modules; to a tenant admin it is not there.
    let (status, modules) = server
        .get(
            &format!("/v1/modules?tenant_id={}", acme.id),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(status, 200, "{modules}");
    let echo = modules
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "scaiecho")
        .unwrap();
    assert_eq!(echo["status"], "enabled", "{modules}");
    let (_, me) = server.get("/v1/me", Some(ADMIN_KEY)).await;
    let platform = me["tenant"]["id"].as_str().unwrap();
    let (status, body) = server
        .get(&format!("/v1/modules?tenant_id={platform}"), Some(admin))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");

    // Stats: tenant-scoped for a tenant, per route for the platform.
    let (status, stats) = server.get("/v1/stats", Some(admin)).await;
    assert_eq!(status, 200, "{stats}");
    assert!(stats.get("routes").is_none(), "{stats}");
    assert_eq!(stats["streams_open"]["scaiecho"], 0);
    let (status, stats) = server.get("/v1/stats", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{stats}");
    let me_route = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/v1/me")
        .cloned()
        .unwrap_or_default();
    assert!(me_route["requests"].as_u64().unwrap_or(0) >= 3, "{stats}");
    assert!(
        me_route["client_errors"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    assert!(me_route["p99_ms"].as_f64().unwrap() > 0.0, "{stats}");

    // Usage: filtered and paged by group key.
    let up = upstream::start("alpha", "up-key").await;
    let backend = crate::gateway::backend(&server, &up, "up-key").await;
    crate::gateway::model(
        &server,
        "acme/chat",
        json!([{"backend_id": backend, "upstream_model": "up-model"}]),
        json!({}),
    )
    .await;
    for key in [&acme.admin_key, &acme.member_key] {
        let (status, body) = server
            .post(
                "/v1/chat/completions",
                Some(key),
                crate::gateway::chat_body("acme/chat"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, first) = server
        .get("/v1/accounting/usage?group_by=api_key&limit=1", Some(admin))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["has_more"], true, "{first}");
    let after = first["next_after"].as_str().unwrap();
    let (_, second) = server
        .get(
            &format!("/v1/accounting/usage?group_by=api_key&limit=1&after={after}"),
            Some(admin),
        )
        .await;
    assert_eq!(second["has_more"], false, "{second}");
    assert_ne!(
        second["data"][0]["key"], first["data"][0]["key"],
        "{second}"
    );
    let one_key = first["data"][0]["key"].as_str().unwrap();
    let (_, filtered) = server
        .get(
            &format!("/v1/accounting/usage?group_by=model&api_key_id={one_key}"),
            Some(admin),
        )
        .await;
    assert_eq!(filtered["data"][0]["requests"], 1, "{filtered}");
    let (_, none) = server
        .get("/v1/accounting/usage?module=scaispeak", Some(admin))
        .await;
    assert_eq!(none["data"], json!([]), "{none}");

    // Chat latency is broken down by model too.
    let (_, stats) = server.get("/v1/stats", Some(ADMIN_KEY)).await;
    let chat = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/v1/chat/completions" && r["model"] == "acme/chat")
        .cloned()
        .unwrap_or_default();
    assert_eq!(chat["requests"], 2, "{stats}");
    assert_eq!(chat["backend_id"], backend.as_str(), "{stats}");

    // Voices, speakers and deliveries: pages and filters too.
    server.enable_module(admin, "scaispeak").await;
    let (status, voices) = server
        .get("/v1/modules/scaispeak/voices?limit=1", Some(admin))
        .await;
    assert_eq!(status, 200, "{voices}");
    assert_eq!(voices["data"].as_array().unwrap().len(), 1, "{voices}");
    if voices["has_more"] == true {
        let after = voices["next_after"].as_str().unwrap();
        let (_, next) = server
            .get(
                &format!("/v1/modules/scaispeak/voices?limit=1&after={after}"),
                Some(admin),
            )
            .await;
        assert_ne!(next["data"][0]["id"], voices["data"][0]["id"], "{next}");
    }
    let (status, speakers) = server
        .get(
            "/v1/modules/scaiecho/speakers?enrollment_status=ready",
            Some(admin),
        )
        .await;
    assert_eq!(
        (status, speakers["has_more"].clone()),
        (200, json!(false)),
        "{speakers}"
    );
    let (status, hook) = server
        .post(
            "/v1/webhooks",
            Some(admin),
            json!({"url": "http://10.255.255.1/in", "events": ["transcription.job.completed"]}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let deliveries = format!("/v1/webhooks/{}/deliveries", hook["id"].as_str().unwrap());
    let (status, list) = server
        .get(&format!("{deliveries}?status=failed&limit=5"), Some(admin))
        .await;
    assert_eq!(
        (status, list["has_more"].clone()),
        (200, json!(false)),
        "{list}"
    );
    for bad in [
        "/v1/modules/scaispeak/voices?limit=0",
        "/v1/modules/scaiecho/speakers?enrollment_status=asleep",
        "/v1/accounting/usage?limit=5000",
    ] {
        let (status, body) = server.get(bad, Some(admin)).await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
    }
    let (status, body) = server
        .get(&format!("{deliveries}?status=lost"), Some(admin))
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");

    // The code table with its fixes, for the console and anyone else.
    let (status, codes) = server.get("/v1/errors", None).await;
    assert_eq!(status, 200);
    let csrf = codes
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "AUTH_CSRF_FAILED")
        .unwrap();
    assert_eq!(csrf["status"], 403);
    for code in codes.as_array().unwrap() {
        assert!(code["remediation"].as_str().unwrap().len() > 10, "{code}");
    }
}

/// The API reference renders `/openapi.json` in a real browser, without signing in:
/// every operation listed by tag, a filter that narrows them, an operation's body schema
/// resolved from the components.
#[tokio::test]
async fn the_api_reference_page_lists_every_operation() {
    let server = Server::start_with(crate::support::Options {
        config_toml: Some("[engines]\nenabled = false\n".into()),
        ..crate::support::Options::default()
    })
    .await;
    let (status, spec) = server.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    let operations: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .count()
        })
        .sum();
    let browser = Browser::start_plain().await;
    browser.open(&server.url("/reference")).await;
    let shown = run(
        &browser,
        "await wait(() => document.querySelectorAll('details.operation').length > 0, 'the operations');
         const all = document.querySelectorAll('details.operation').length;
         const filter = document.getElementById('filter');
         filter.value = 'post firewall policies';
         filter.dispatchEvent(new Event('input'));
         const narrowed = [...document.querySelectorAll('details.operation')].map((d) => d.dataset.method + ' ' + d.dataset.path);
         const op = document.querySelector('details.operation');
         op.open = true;
         return { all, narrowed, body: op.innerText, scripts: document.scripts.length };",
        json!({}),
    )
    .await;
    assert_eq!(shown["all"], operations, "{shown}");
    assert_eq!(
        shown["narrowed"],
        json!(["post /v1/firewall/policies"]),
        "{shown}"
    );
    let body = shown["body"].as_str().unwrap();
    assert!(
        body.contains("Request body") && body.contains("rules") && body.contains("mode"),
        "{body}"
    );
    assert_eq!(shown["scripts"], 1, "{shown}");
    snap(&browser, "reference").await;
}
