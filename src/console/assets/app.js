// The console's shell: sign-in, navigation by the URL fragment, and the failure box that
// shows every refusal's code with its fix.

import * as api from './api.js';
import { h, replace, choice } from './dom.js';
import { PAGES } from './pages.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const signOutButton = document.getElementById('sign-out');
const toastBox = document.getElementById('toast');

/** Whether one granted permission covers a required one (as `rbac::covers`). */
function covers(granted, required) {
  if (granted === '*' || granted === required) return true;
  return granted.endsWith(':*') && required.startsWith(granted.slice(0, -1));
}

export function failureBox(error) {
  const fix = h('div', { class: 'fix' });
  const code = error instanceof api.Failure ? error.code : 'CONSOLE_ERROR';
  if (error instanceof api.Failure) {
    api.remediation(code).then((line) => { fix.textContent = line; });
  }
  return h('div', { class: 'failure', role: 'alert', dataset: { code } },
    h('span', { class: 'code' }, code), ' ', h('span', { class: 'message' }, error.message),
    error.requestId ? h('div', { class: 'muted mono' }, `request ${error.requestId}`) : null,
    fix);
}

function toast(message) {
  toastBox.textContent = message;
  toastBox.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => toastBox.classList.remove('show'), 2500);
}

const state = { me: null, tenant: null, tenants: [] };

function context() {
  const { me } = state;
  const can = (permission) => me.permissions.some((granted) => covers(granted, permission));
  return {
    me,
    can,
    platform: can('platform:admin'),
    tenantAdmin: can('tenant:admin'),
    /** The tenant the pages act on (platform admins pick one; others have their own). */
    tenant: state.tenant || me.tenant.id,
    /** `{tenant_id}` when acting on another tenant than one's own. */
    scope() {
      return state.tenant && state.tenant !== me.tenant.id ? { tenant_id: state.tenant } : {};
    },
    tenants: state.tenants,
    toast,
    failureBox,
    /** Runs an action; a refusal shows in `where` (or the page). */
    async attempt(action, where = main) {
      try { return await action(); } catch (error) {
        where.prepend(failureBox(error));
        return undefined;
      }
    },
    render,
  };
}

async function render() {
  if (!state.me) return;
  // Fresh each time: a module enabled or a role granted shows at once, and a session
  // that ended (revoked, disabled) goes back to the sign-in form.
  try {
    state.me = await api.get('/v1/me');
  } catch (error) {
    if (error instanceof api.Failure && error.status === 401) {
      signedOut();
      return;
    }
  }
  if (context().platform) await refreshPicker();
  const ctx = context();
  const pages = PAGES.filter((page) => page.visible(ctx));
  const wanted = location.hash.replace(/^#\//, '') || 'overview';
  const page = pages.find((candidate) => candidate.id === wanted) || pages[0];
  replace(nav, pages.map((candidate) => h('a', {
    href: `#/${candidate.id}`,
    class: candidate === page ? 'active' : '',
    dataset: { page: candidate.id },
  }, candidate.title)));
  const view = h('section', { dataset: { page: page.id } }, h('h1', null, page.title));
  replace(main, view);
  try {
    await page.render(view, ctx);
  } catch (error) {
    view.append(failureBox(error));
  }
  view.dataset.ready = 'true';
}

/** The platform admin's tenant picker, with the tenants as they are now. */
async function refreshPicker() {
  try { state.tenants = await api.get('/v1/tenants'); } catch { state.tenants = []; }
  if (!state.tenants.some((t) => t.id === state.tenant)) state.tenant = null;
  const picker = choice('Tenant', 'tenant', state.tenants.map((t) => [t.id, t.slug]), state.tenant || state.me.tenant.id);
  picker.querySelector('select').id = 'tenant-picker';
  picker.classList.add('picker');
  picker.addEventListener('change', (event) => { state.tenant = event.target.value; render(); });
  who.querySelector('.picker')?.remove();
  who.append(picker);
}

async function signedIn() {
  state.me = await api.get('/v1/me');
  const identity = state.me.identity;
  const name = identity.email || identity.name || identity.id;
  replace(who, `${name} · ${state.me.tenant.slug} · ${state.me.roles.join(', ') || 'no roles'} `);
  signOutButton.hidden = false;
  nav.hidden = false;
  await render();
}

function loginForm() {
  let mode = 'password';
  const box = h('div', { class: 'card login' });
  const draw = () => {
    const passwordTab = h('button', { type: 'button', class: mode === 'password' ? 'active' : '', onclick: () => { mode = 'password'; draw(); } }, 'Email and password');
    const keyTab = h('button', { type: 'button', class: mode === 'key' ? 'active' : '', onclick: () => { mode = 'key'; draw(); } }, 'API key');
    const fields = mode === 'password'
      ? [h('label', null, 'Email', h('input', { name: 'email', type: 'email', autocomplete: 'username', required: true })),
        h('label', null, 'Password', h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }))]
      : [h('label', null, 'API key', h('input', { name: 'api_key', type: 'password', autocomplete: 'off', placeholder: 'sgk_…', required: true }))];
    const form = h('form', { id: 'login' }, fields, h('button', { class: 'primary', type: 'submit' }, 'Sign in'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const data = Object.fromEntries(new FormData(form));
      form.querySelector('.failure')?.remove();
      try {
        await api.signIn(data);
        await signedIn();
      } catch (error) {
        form.prepend(failureBox(error));
      }
    });
    replace(box, h('h1', null, 'Sign in to ScaiGrid'), h('div', { class: 'tabs' }, passwordTab, keyTab), form);
  };
  draw();
  return box;
}

function signedOut() {
  state.me = null;
  nav.hidden = true;
  signOutButton.hidden = true;
  who.replaceChildren();
  replace(main, loginForm());
}

signOutButton.addEventListener('click', async () => {
  try { await api.signOut(); } catch { /* the cookies are gone either way */ }
  signedOut();
});
window.addEventListener('hashchange', render);

(async () => {
  try {
    if (await api.restore()) {
      await signedIn();
      return;
    }
  } catch { /* no session, or it ended */ }
  signedOut();
})();
