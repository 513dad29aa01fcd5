// The console's API client: the same public API every client calls. The credential is
// an HttpOnly cookie the scripts never see; each call carries the session's CSRF token.

const CSRF = 'scaigrid.console.csrf';

/** A refused call: the envelope's code, message and extra fields. */
export class Failure extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `HTTP_${status}`;
    this.requestId = error.request_id;
    this.fields = error;
  }
}

async function failure(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  return new Failure(response.status, (body && body.error) || { message: response.statusText });
}

let refreshing = null;

/** Renews a password session once its access token expired; false when it cannot. */
async function refresh() {
  refreshing ??= (async () => {
    const response = await fetch('/console/session/refresh', {
      method: 'POST',
      headers: { 'X-CSRF-Token': sessionStorage.getItem(CSRF) || '' },
      credentials: 'same-origin',
    });
    if (!response.ok) return false;
    const session = await response.json();
    sessionStorage.setItem(CSRF, session.csrf_token);
    return true;
  })();
  try { return await refreshing; } finally { refreshing = null; }
}

/** Calls the API; JSON in and out (FormData goes as multipart). `raw` returns the response. */
export async function call(method, path, body, { raw = false, retry = true } = {}) {
  const headers = { 'X-CSRF-Token': sessionStorage.getItem(CSRF) || '' };
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  if (!response.ok) {
    const refused = await failure(response);
    if (retry && refused.code === 'AUTH_TOKEN_EXPIRED' && await refresh()) {
      return call(method, path, body, { raw, retry: false });
    }
    throw refused;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

export const get = (path) => call('GET', path);

/** A page of a list: its rows and the cursor of the next page (`null` at the end). */
export async function page(path) {
  const response = await call('GET', path, undefined, { raw: true });
  const body = await response.json();
  if (Array.isArray(body)) return { data: body, next: response.headers.get('x-next-after') };
  return { data: body.data, next: body.next_after || null };
}
export const post = (path, body) => call('POST', path, body ?? {});
export const patch = (path, body) => call('PATCH', path, body);
export const put = (path, body) => call('PUT', path, body);
export const del = (path) => call('DELETE', path);

/** Query string of the defined entries. */
export function query(params) {
  const entries = Object.entries(params).filter(([, value]) => value !== undefined && value !== null && value !== '');
  return entries.length ? `?${new URLSearchParams(entries)}` : '';
}

/** Signs in with `{email, password}` or `{api_key}`. */
export async function signIn(credential) {
  const response = await fetch('/console/session', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(credential),
    credentials: 'same-origin',
  });
  if (!response.ok) throw await failure(response);
  const session = await response.json();
  sessionStorage.setItem(CSRF, session.csrf_token);
  return session;
}

/** Picks up this browser's session (another tab signed in); false when there is none. */
export async function restore() {
  const response = await fetch('/console/session', { credentials: 'same-origin' });
  if (!response.ok) return false;
  const session = await response.json();
  sessionStorage.setItem(CSRF, session.csrf_token);
  return true;
}

export async function signOut() {
  try { await call('DELETE', '/console/session', undefined, { retry: false }); } finally {
    sessionStorage.removeItem(CSRF);
  }
}

let codes = null;

/** The remediation line of an error code (from `GET /v1/errors`). */
export async function remediation(code) {
  codes ??= fetch('/v1/errors').then((response) => response.json()).then(
    (table) => new Map(table.map((entry) => [entry.code, entry.remediation])),
    () => new Map(),
  );
  return (await codes).get(code) || '';
}
