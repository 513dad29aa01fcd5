// The console's pages. Each is `{id, title, visible(ctx), render(view, ctx)}`; `visible`
// only tidies the navigation, the server decides what a caller may see and do.

import * as api from './api.js';
import { h, replace, table, pill, when, number, field, choice, values, list, bars, meter, stat, download } from './dom.js';

const ECHO_JOBS = '/v1/modules/scaiecho/jobs';

/** A form whose submit runs `action(values)`; refusals show above it, then `done`. */
function form(ctx, id, fields, label, action) {
  const element = h('form', { class: 'inline', id }, fields, h('button', { class: 'primary', type: 'submit' }, label));
  element.addEventListener('submit', async (event) => {
    event.preventDefault();
    element.parentElement?.querySelectorAll(':scope > .failure').forEach((box) => box.remove());
    const button = element.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await action(values(element), element);
    } catch (error) {
      element.before(ctx.failureBox(error));
    } finally {
      button.disabled = false;
    }
  });
  return h('div', { class: 'card' }, element);
}

/** A button that runs `action` and then redraws the page. */
function act(ctx, label, action, { danger = false, confirmText } = {}) {
  return h('button', {
    type: 'button',
    class: danger ? 'danger' : '',
    dataset: { action: label.toLowerCase().replace(/\s+/g, '-') },
    onclick: async (event) => {
      if (confirmText && !window.confirm(confirmText)) return;
      event.target.disabled = true;
      const done = await ctx.attempt(async () => {
        const said = await action();
        return typeof said === 'string' ? said : `${label}: done`;
      });
      if (done) { ctx.toast(done); await ctx.render(); } else { event.target.disabled = false; }
    },
  }, label);
}

/** A table of a paged list, with a button that brings the next page. */
async function pagedTable(ctx, path, params, columns, empty, tenantScoped = true) {
  const holder = h('div', { class: 'paged' });
  let after;
  const pages = [];
  const draw = async () => {
    const query = { ...params, after };
    const { data, next } = await api.page(tenantScoped ? scoped(ctx, path, query) : `${path}${api.query(query)}`);
    pages.push(...data);
    after = next;
    replace(holder, table(columns, pages, empty), next ? h('div', { class: 'pager' },
      h('button', { type: 'button', id: 'next-page', onclick: () => ctx.attempt(draw, holder) }, 'Next page')) : null);
  };
  await draw();
  return holder;
}

/** A paged table with a status filter above it. */
async function filtered(ctx, path, statuses, columns, empty, tenantScoped = true) {
  const box = h('div');
  const picker = choice('Show', 'status', [['', 'all'], ...statuses.map((s) => [s, s])], '');
  picker.querySelector('select').id = 'status-filter';
  const draw = async (status) => {
    box.replaceChildren(picker, await pagedTable(ctx, path, { status }, columns, empty, tenantScoped));
  };
  picker.addEventListener('change', (event) => ctx.attempt(() => draw(event.target.value), box));
  await draw('');
  return box;
}

function scoped(ctx, path, extra = {}) {
  return `${path}${api.query({ ...ctx.scope(), ...extra })}`;
}

/** A rate limit in a line (`—`: none of its own). */
function limits(spec) {
  if (!spec) return '—';
  const parts = [
    spec.requests_per_minute && `${number(spec.requests_per_minute, 0)} req/min`,
    spec.tokens_per_minute && `${number(spec.tokens_per_minute, 0)} tokens/min`,
    spec.audio_seconds_per_minute && `${number(spec.audio_seconds_per_minute, 0)} audio s/min`,
  ].filter(Boolean);
  return parts.join(', ') || '—';
}

/** The fix for a job's or delivery's failure reason, from the code table where one fits. */
const REASONS = {
  DECODE_FAILED: 'AUDIO_DECODE_FAILED',
  TOO_LARGE: 'CTX_TOO_LARGE',
  BACKEND_UNAVAILABLE: 'SCAIECHO_BACKEND_UNAVAILABLE',
  QUOTA_EXCEEDED: 'BUDGET_EXCEEDED',
  DRIVE_CONFLICT: 'SCAISPEAK_SCAIDRIVE_CONFLICT',
  FIREWALL_BLOCKED: 'FIREWALL_BLOCKED',
  JUDGE_UNREACHABLE: 'JUDGE_UNREACHABLE',
  WORKER_CRASHED: 'INTERNAL_ERROR',
  INTERNAL_ERROR: 'INTERNAL_ERROR',
};
const DELIVERY_FIXES = {
  RECEIVER_ERROR: 'The receiver answered with an error: check its logs; deliveries retry with backoff.',
  TIMEOUT: 'The receiver took too long: answer 2xx first and work after.',
  CONNECT_FAILED: 'Nothing answered at the URL: check the host, port and firewall.',
  REQUEST_FAILED: 'The request failed on the way (TLS, reset): check the receiver\'s TLS and proxy.',
  TARGET_REFUSED: 'The URL resolves to an address webhooks may not reach (private or loopback).',
  BAD_URL: 'Fix the webhook\'s URL.',
  SECRET_UNAVAILABLE: 'The signing secret cannot be unsealed: check `secrets.key`, then rotate the secret.',
};

function reasonFix(reason) {
  const line = h('div', { class: 'fix' });
  const code = REASONS[reason];
  if (code) api.remediation(code).then((text) => { line.textContent = text; });
  return line;
}

function rolesOf(row) {
  return [...row.roles, ...row.permissions].join(', ') || '—';
}

const overview = {
  id: 'overview',
  title: 'Overview',
  visible: () => true,
  async render(view, ctx) {
    const today = new Date();
    today.setUTCHours(0, 0, 0, 0);
    const cards = h('div', { class: 'cards' });
    view.append(cards);
    const tasks = [];
    if (ctx.can('accounting:read')) {
      tasks.push(api.get(scoped(ctx, '/v1/accounting/usage', { group_by: 'model', from: today.toISOString() })).then((usage) => {
        const total = usage.data.reduce((sum, row) => ({
          requests: sum.requests + row.requests,
          cost: sum.cost + row.cost,
          audio: sum.audio + row.audio_seconds,
        }), { requests: 0, cost: 0, audio: 0 });
        cards.append(stat('Requests today', number(total.requests, 0)), stat('Cost today', number(total.cost, 4)),
          stat('Audio seconds today', number(total.audio, 1)));
        view.append(h('h2', null, 'Cost today by model'),
          usage.data.length ? bars(usage.data.map((row) => [row.key || '(speech)', row.cost])) : h('p', { class: 'muted' }, 'No usage today.'));
      }));
    }
    if (ctx.me.tenant.modules.includes('scaiecho') && ctx.can('scaiecho:transcribe')) {
      // Counted by status (a page of up to 1000 each), not from the latest jobs alone.
      tasks.push(Promise.all(['queued', 'processing'].map((status) => api.get(`${ECHO_JOBS}?status=${status}&limit=1000`)))
        .then((pages) => {
          const backlog = pages.reduce((sum, page) => sum + page.data.length, 0);
          const more = pages.some((page) => page.has_more) ? '+' : '';
          cards.append(stat('Transcription backlog', `${number(backlog, 0)}${more}`));
        }));
    }
    if (ctx.platform) {
      tasks.push(api.get('/v1/backends').then((backends) => {
        const down = backends.filter((b) => b.health === 'unhealthy' || b.breaker !== 'closed').length;
        cards.append(stat('Backends down', `${down} of ${backends.length}`));
      }));
      tasks.push(api.get('/v1/admin/nodes').then((nodes) => {
        const ready = nodes.data.filter((node) => ['online', 'degraded'].includes(node.status)).length;
        cards.append(stat('Inference nodes', `${ready} ready of ${nodes.data.length}`));
      }));
    }
    if (ctx.can('accounting:read')) {
      tasks.push(api.get(scoped(ctx, '/v1/stats')).then((stats) => {
        cards.append(stat('Streams open (this process)', number(stats.streams_open.scaiecho + stats.streams_open.scaispeak, 0)));
        if (stats.requests_in_flight !== undefined) cards.append(stat('Requests in flight', number(stats.requests_in_flight, 0)));
        if (!stats.routes) return;
        const busy = stats.routes.filter((r) => r.requests > 0).slice(0, 12);
        const requests = busy.reduce((sum, r) => sum + r.requests, 0);
        const failed = busy.reduce((sum, r) => sum + r.server_errors, 0);
        cards.append(stat('Server error rate', requests ? `${number((100 * failed) / requests, 2)} %` : '—'));
        const label = (r) => (r.model ? `${r.model} → ${r.backend_id}` : `${r.route}${r.backend_id ? ` → ${r.backend_id}` : ''}`);
        view.append(h('h2', null, 'p99 latency by model, route and backend (ms, since start)'),
          busy.length ? bars(busy.map((r) => [label(r), r.p99_ms]), { unit: ' ms' }) : h('p', { class: 'muted' }, 'No requests yet.'),
          table([
            ['Route', (r) => h('code', null, r.route)],
            ['Model', (r) => r.model || '—'],
            ['Backend', (r) => r.backend_id || '—'],
            ['Requests', (r) => number(r.requests, 0)],
            ['Errors 5xx / 4xx', (r) => `${number(r.server_errors, 0)} / ${number(r.client_errors, 0)}`],
            ['p50 ms', (r) => number(r.p50_ms, 1)],
            ['p99 ms', (r) => number(r.p99_ms, 1)],
          ], busy));
      }));
    }
    const results = await Promise.allSettled(tasks);
    results.filter((r) => r.status === 'rejected').forEach((r) => view.append(ctx.failureBox(r.reason)));
  },
};

const tenants = {
  id: 'tenants',
  title: 'Tenants',
  visible: (ctx) => ctx.platform,
  async render(view, ctx) {
    const rows = await api.get('/v1/tenants');
    view.append(form(ctx, 'create-tenant', [
      field('Slug', { name: 'slug', required: true, placeholder: 'acme' }),
      field('Name', { name: 'name', required: true, placeholder: 'Acme Inc.' }),
    ], 'Create tenant', async (data) => {
      await api.post('/v1/tenants', data);
      ctx.toast('Tenant created');
      await ctx.render();
    }));
    view.append(form(ctx, 'tenant-limits', [
      choice('Tenant', 'tenant', rows.map((t) => [t.id, t.slug])),
      field('Requests / min', { name: 'requests_per_minute', type: 'number', min: 1 }),
      field('Tokens / min', { name: 'tokens_per_minute', type: 'number', min: 1 }),
      field('Audio s / min', { name: 'audio_seconds_per_minute', type: 'number', min: 1 }),
    ], 'Set rate limit', async (data) => {
      const spec = {};
      for (const name of ['requests_per_minute', 'tokens_per_minute', 'audio_seconds_per_minute']) {
        if (data[name]) spec[name] = Number(data[name]);
      }
      await api.patch(`/v1/tenants/${data.tenant}`, { rate_limit: Object.keys(spec).length ? spec : null });
      await ctx.render();
    }));
    view.append(table([
      ['Slug', (t) => h('code', null, t.slug)],
      ['Name', (t) => t.name],
      ['Status', (t) => pill(t.status)],
      ['Rate limit', (t) => limits(t.rate_limit)],
      ['Created', (t) => when(t.created_at)],
      ['', (t) => (t.id === ctx.me.tenant.id ? h('span', { class: 'muted' }, 'yours')
        : act(ctx, 'Delete', () => api.del(`/v1/tenants/${t.id}`), { danger: true, confirmText: `Delete tenant ${t.slug}?` }))],
    ], rows));
  },
};

const users = {
  id: 'users',
  title: 'Users',
  visible: (ctx) => ctx.tenantAdmin,
  async render(view, ctx) {
    view.append(form(ctx, 'create-user', [
      field('Email', { name: 'email', type: 'email', required: true }),
      field('Password', { name: 'password', type: 'password', required: true, minlength: 8 }),
      choice('Role', 'role', ['member', 'viewer', 'tenant_admin'], 'member'),
    ], 'Create user', async (data) => {
      await api.post('/v1/users', { email: data.email, password: data.password, roles: [data.role], ...ctx.scope() });
      ctx.toast('User created');
      await ctx.render();
    }));
    const columns = [
      ['Email', (u) => u.email],
      ['Status', (u) => pill(u.status)],
      ['Roles and permissions', rolesOf],
      ['Created', (u) => when(u.created_at)],
      ['', (u) => h('div', { class: 'actions' },
        u.status === 'active'
          ? act(ctx, 'Disable', () => api.patch(`/v1/users/${u.id}`, { status: 'disabled' }))
          : act(ctx, 'Enable', () => api.patch(`/v1/users/${u.id}`, { status: 'active' })),
        act(ctx, 'Reset password', async () => {
          const password = window.prompt(`New password for ${u.email} (8 characters or more)`);
          if (password) await api.post(`/v1/users/${u.id}/password`, { password });
        }),
        act(ctx, 'Delete', () => api.del(`/v1/users/${u.id}`), { danger: true, confirmText: `Delete ${u.email}?` }))],
    ];
    view.append(await filtered(ctx, '/v1/users', ['active', 'disabled'], columns, 'No users.'));
  },
};

const keys = {
  id: 'keys',
  title: 'API keys',
  visible: (ctx) => ctx.tenantAdmin,
  async render(view, ctx) {
    const created = h('div');
    view.append(form(ctx, 'create-key', [
      field('Name', { name: 'name', required: true, placeholder: 'backend service' }),
      field('Roles (comma separated)', { name: 'roles', placeholder: 'member' }),
      field('Permissions (comma separated)', { name: 'permissions', placeholder: 'chat:create' }),
    ], 'Create key', async (data) => {
      const key = await api.post('/v1/api-keys', {
        name: data.name,
        roles: list(data.roles).length || list(data.permissions).length ? list(data.roles) : undefined,
        permissions: list(data.permissions).length ? list(data.permissions) : undefined,
        ...ctx.scope(),
      });
      replace(created, h('div', { class: 'secret', id: 'new-key' },
        h('strong', null, 'Copy the key now: it is not shown again. '), h('code', { class: 'key' }, key.key)));
      await ctx.render();
      // The page was drawn anew: the key goes under its new heading, once.
      document.querySelector('#main section h1').after(created);
    }));
    view.append(created, await filtered(ctx, '/v1/api-keys', ['active', 'revoked'], [
      ['Name', (k) => k.name],
      ['Prefix', (k) => h('code', null, k.key_prefix)],
      ['Roles and permissions', rolesOf],
      ['Rate limit', (k) => limits(k.rate_limit)],
      ['Created', (k) => when(k.created_at)],
      ['Last used', (k) => when(k.last_used_at)],
      ['Status', (k) => pill(k.revoked_at ? 'revoked' : 'active')],
      ['', (k) => (k.revoked_at ? '' : act(ctx, 'Revoke', () => api.del(`/v1/api-keys/${k.id}`), { danger: true, confirmText: `Revoke ${k.name}? It stops working at once.` }))],
    ], 'No keys.'));
  },
};

const roles = {
  id: 'roles',
  title: 'Roles and grants',
  visible: (ctx) => ctx.tenantAdmin,
  async render(view, ctx) {
    const rows = await api.get(scoped(ctx, '/v1/roles'));
    view.append(form(ctx, 'create-role', [
      field('Name', { name: 'name', required: true, placeholder: 'transcriber' }),
      field('Description', { name: 'description' }),
      field('Permissions (comma separated)', { name: 'permissions', required: true, placeholder: 'scaiecho:transcribe' }),
    ], 'Create role', async (data) => {
      await api.post('/v1/roles', { name: data.name, description: data.description, permissions: list(data.permissions), ...ctx.scope() });
      await ctx.render();
    }));
    view.append(table([
      ['Name', (r) => h('code', null, r.name)],
      ['Description', (r) => r.description],
      ['Permissions', (r) => r.permissions.join(', ')],
      ['', (r) => (r.builtin ? h('span', { class: 'muted' }, 'built in') : h('div', { class: 'actions' },
        act(ctx, 'Edit permissions', async () => {
          const next = window.prompt(`Permissions of ${r.name}`, r.permissions.join(', '));
          if (next !== null) await api.patch(scoped(ctx, `/v1/roles/${r.id}`), { permissions: list(next) });
        }),
        act(ctx, 'Delete', () => api.del(scoped(ctx, `/v1/roles/${r.id}`)), { danger: true, confirmText: `Delete role ${r.name}?` })))],
    ], rows));
    view.append(h('h2', null, 'Grant or revoke'));
    const grantFields = () => [
      choice('To a', 'subject_kind', [['user', 'user'], ['api_key', 'API key']], 'user'),
      field('User or key id', { name: 'subject_id', required: true, placeholder: 'usr_… or key_…' }),
      field('Roles', { name: 'roles', placeholder: 'viewer' }),
      field('Permissions', { name: 'permissions', placeholder: 'chat:create' }),
    ];
    const grant = (path) => async (data) => {
      await api.post(path, { subject_kind: data.subject_kind, subject_id: data.subject_id, roles: list(data.roles), permissions: list(data.permissions) });
      ctx.toast('Done');
    };
    view.append(form(ctx, 'grant', grantFields(), 'Grant', grant('/v1/grants')),
      form(ctx, 'revoke-grant', grantFields(), 'Revoke', grant('/v1/grants/revoke')));
  },
};

const modules = {
  id: 'modules',
  title: 'Modules',
  visible: () => true,
  async render(view, ctx) {
    const rows = await api.get(scoped(ctx, '/v1/modules'));
    const body = ctx.tenant !== ctx.me.tenant.id ? { tenant_id: ctx.tenant } : {};
    const problems = h('div');
    for (const module of rows.filter((m) => m.status === 'error')) {
      problems.append(h('div', { class: 'problem' }, h('span', { class: 'code' }, `${module.id}: error`), ' ',
        module.last_error || '', h('div', { class: 'fix' }, 'Fix what the error names (models, configuration), then restart the server or re-enable the module.')));
    }
    view.append(problems, table([
      ['Module', (m) => h('code', null, m.id)],
      ['What it does', (m) => m.description],
      ['Status', (m) => pill(m.status)],
      ['Needs', (m) => m.depends_on.join(', ') || '—'],
      ['', (m) => (!ctx.tenantAdmin ? '' : m.enabled
        ? act(ctx, 'Disable', () => api.post(`/v1/modules/${m.id}/disable`, body))
        : act(ctx, 'Enable', () => api.post(`/v1/modules/${m.id}/enable`, body)))],
    ], rows));
  },
};

const models = {
  id: 'models',
  title: 'Models and backends',
  visible: (ctx) => ctx.can('models:read'),
  async render(view, ctx) {
    if (ctx.platform) {
      const backends = await api.get('/v1/backends');
      view.append(h('h2', null, 'Backends'));
      view.append(form(ctx, 'create-backend', [
        field('Name', { name: 'name', required: true, placeholder: 'openai-main' }),
        field('Base URL', { name: 'base_url', required: true, placeholder: 'https://api.example.com/v1' }),
        field('API key', { name: 'api_key', type: 'password', autocomplete: 'off' }),
      ], 'Add backend', async (data) => {
        await api.post('/v1/backends', { name: data.name, kind: 'openai', base_url: data.base_url, api_key: data.api_key || undefined });
        await ctx.render();
      }));
      view.append(table([
        ['Name', (b) => b.name],
        ['URL', (b) => h('code', null, b.base_url)],
        ['Health', (b) => pill(b.health)],
        ['Breaker', (b) => pill(b.breaker)],
        ['Last probe', (b) => (b.last_probe ? h('div', null, `${number(b.last_probe.latency_ms, 1)} ms, ${when(b.last_probe.checked_at)}`,
          b.last_probe.error ? h('div', { class: 'problem' }, h('span', { class: 'code' }, 'MODEL_UNAVAILABLE'), ' ', b.last_probe.error,
            h('div', { class: 'fix' }, 'Check the URL, the credential and the upstream itself, then probe now.')) : null) : h('span', { class: 'muted' }, 'not probed yet'))],
        ['', (b) => h('div', { class: 'actions' },
          act(ctx, 'Probe now', async () => {
            const report = await api.get(`/v1/backends/${b.id}/health`);
            return `${b.name}: ${report.status}${report.error ? ` (${report.error})` : ''}`;
          }),
          act(ctx, 'Delete', () => api.del(`/v1/backends/${b.id}`), { danger: true, confirmText: `Delete backend ${b.name}?` }))],
      ], backends));
      view.append(h('h2', null, 'Add a model'), form(ctx, 'create-model', [
        field('Slug', { name: 'slug', required: true, placeholder: 'vendor/name' }),
        choice('Backend', 'backend_id', backends.map((b) => [b.id, b.name])),
        field('Upstream model', { name: 'upstream_model', placeholder: '(the part after /)' }),
        field('Input per 1k', { name: 'input_per_1k', type: 'number', step: 'any', value: '0' }),
        field('Output per 1k', { name: 'output_per_1k', type: 'number', step: 'any', value: '0' }),
      ], 'Add model', async (data) => {
        await api.post('/v1/models', {
          slug: data.slug,
          capabilities: ['chat'],
          routing: { backends: [{ backend_id: data.backend_id, upstream_model: data.upstream_model || undefined }] },
          pricing: { input_per_1k: Number(data.input_per_1k) || 0, output_per_1k: Number(data.output_per_1k) || 0 },
        });
        await ctx.render();
      }));
      view.dataset.backends = JSON.stringify(backends.map((b) => [b.name, b.health, b.breaker]));
    }
    const listed = await api.get('/v1/models');
    const health = new Map();
    if (ctx.platform) (await api.get('/v1/backends')).forEach((b) => health.set(b.id, b));
    view.append(h('h2', null, 'Models'), table([
      ['Model', (m) => h('code', null, m.id)],
      ['Scope', (m) => m.scope],
      ['Capabilities', (m) => m.capabilities.join(', ')],
      ['Price in / out per 1k', (m) => `${number(m.pricing.input_per_1k, 6)} / ${number(m.pricing.output_per_1k, 6)}`],
      ['Backends', (m) => (m.routing ? m.routing.backends.map((route) => {
        const backend = health.get(route.backend_id);
        return h('div', null, backend ? backend.name : route.backend_id, ' ', backend ? pill(backend.health) : '', ' ', backend ? pill(backend.breaker) : '');
      }) : '—')],
    ], listed.data, 'No models registered.'));
  },
};

const budgets = {
  id: 'budgets',
  title: 'Budgets and usage',
  visible: (ctx) => ctx.can('accounting:read'),
  async render(view, ctx) {
    const rows = (await api.get(scoped(ctx, '/v1/accounting/budgets'))).data;
    if (ctx.tenantAdmin) {
      view.append(form(ctx, 'create-budget', [
        choice('Scope', 'scope', [['tenant', 'tenant'], ['api_key', 'API key']], 'tenant'),
        field('API key id (for a key budget)', { name: 'scope_id', placeholder: 'key_…' }),
        choice('Period', 'period', ['day', 'month'], 'month'),
        field('Limit', { name: 'limit', type: 'number', step: 'any', required: true, min: 0 }),
      ], 'Set budget', async (data) => {
        await api.post('/v1/accounting/budgets', {
          scope: data.scope,
          scope_id: data.scope === 'tenant' ? ctx.tenant : data.scope_id,
          period: data.period,
          limit: Number(data.limit),
        });
        await ctx.render();
      }));
    }
    view.append(table([
      ['Scope', (b) => `${b.scope} ${b.scope === 'tenant' ? '' : b.scope_id}`],
      ['Period', (b) => b.period],
      ['Used', (b) => h('span', { class: 'used' }, number(b.used, 6))],
      ['Limit', (b) => number(b.limit, 6)],
      ['', (b) => meter(b.used + b.reserved, b.limit)],
      ['Set by', (b) => b.set_by],
      ['', (b) => (ctx.tenantAdmin ? act(ctx, 'Delete', () => api.del(`/v1/accounting/budgets/${b.id}`), { danger: true }) : '')],
    ], rows, 'No budgets: usage is unlimited.'));
    await usageExplorer(view, ctx);
  },
};

async function usageExplorer(view, ctx) {
  const month = new Date();
  month.setUTCDate(1);
  month.setUTCHours(0, 0, 0, 0);
  const out = h('div');
  const controls = h('form', { class: 'inline', id: 'usage' },
    choice('Group by', 'group_by', ['model', 'api_key', 'module', 'day'], 'day'),
    field('From', { name: 'from', type: 'date', value: month.toISOString().slice(0, 10) }),
    field('To (exclusive)', { name: 'to', type: 'date' }),
    field('Model', { name: 'model', placeholder: 'any' }),
    choice('Module', 'module', [['', 'any'], 'gateway', 'scaiecho', 'scaispeak'], ''),
    field('API key id', { name: 'api_key_id', placeholder: 'any' }),
    h('button', { class: 'primary', type: 'submit' }, 'Show'));
  view.append(h('h2', null, 'Usage'), h('div', { class: 'card' }, controls), out);
  const show = async () => {
    const data = values(controls);
    const params = {
      group_by: data.group_by,
      from: data.from ? `${data.from}T00:00:00Z` : undefined,
      to: data.to ? `${data.to}T00:00:00Z` : undefined,
      model: data.model, module: data.module, api_key_id: data.api_key_id, limit: 1000,
    };
    try {
      // Every group (a page holds up to 1000): the chart and the CSV show them all.
      const usage = { data: [] };
      let after;
      do {
        const page = await api.get(scoped(ctx, '/v1/accounting/usage', { ...params, after }));
        usage.data.push(...page.data);
        after = page.next_after;
      } while (after);
      const columns = ['key', 'requests', 'input_tokens', 'output_tokens', 'audio_seconds', 'characters', 'cost'];
      const csv = [columns.join(','), ...usage.data.map((row) => columns.map((c) => JSON.stringify(row[c] ?? '')).join(','))].join('\n');
      replace(out,
        usage.data.length ? bars(usage.data.map((row) => [row.key || '—', row.cost])) : null,
        table([
          [data.group_by, (r) => r.key || '—'], ['Requests', (r) => number(r.requests, 0)],
          ['Tokens in / out', (r) => `${number(r.input_tokens, 0)} / ${number(r.output_tokens, 0)}`],
          ['Audio s', (r) => number(r.audio_seconds, 1)], ['Characters', (r) => number(r.characters, 0)],
          ['Cost', (r) => number(r.cost, 6)],
        ], usage.data, 'No usage in this period.'),
        h('p', null, h('button', { type: 'button', id: 'usage-csv', onclick: () => download(`usage-${data.group_by}.csv`, csv) }, 'Download CSV')));
    } catch (error) {
      replace(out, ctx.failureBox(error));
    }
  };
  controls.addEventListener('submit', (event) => { event.preventDefault(); show(); });
  await show();
}

const jobs = {
  id: 'jobs',
  title: 'Transcription jobs',
  visible: (ctx) => ctx.me.tenant.modules.includes('scaiecho') && ctx.can('scaiecho:transcribe'),
  async render(view, ctx) {
    const [rows, workers] = await Promise.all([
      api.get(`${ECHO_JOBS}?limit=1000`).then((list) => list.data),
      api.get('/v1/infra/workers'),
    ]);
    const counts = new Map();
    rows.forEach((job) => counts.set(job.status, (counts.get(job.status) || 0) + 1));
    const finished = rows.filter((job) => job.finished_at && job.audio_seconds);
    const audio = finished.reduce((sum, job) => sum + job.audio_seconds, 0);
    const hourAgo = Date.now() - 3600 * 1000;
    const lastHour = rows.filter((job) => job.finished_at && new Date(job.finished_at).getTime() >= hourAgo);
    view.append(h('div', { class: 'cards' },
      ['queued', 'processing', 'succeeded', 'failed'].map((status) => stat(status, number(counts.get(status) || 0, 0))),
      stat('Audio transcribed (s)', number(audio, 1))));
    view.append(bars(['queued', 'processing', 'succeeded', 'failed'].map((status) => [status, counts.get(status) || 0])));
    view.append(h('h2', null, 'Workers and throughput'), h('div', { class: 'cards', id: 'workers' },
      stat('Workers busy', `${number(workers.busy, 0)} of ${number(workers.capacity, 0)}`),
      stat('Workers idle', number(workers.idle, 0)),
      stat('Jobs finished, last hour', number(lastHour.length, 0)),
      stat('Audio, last hour (s)', number(lastHour.reduce((sum, job) => sum + (job.audio_seconds || 0), 0), 1))));
    view.append(table([
      ['Process', (w) => h('code', null, w.id)],
      ['Host', (w) => `${w.host} (pid ${w.pid})`],
      ['Node', (w) => w.node_id],
      ['Status', (w) => pill(w.status, w.status === 'alive' ? 'ok' : 'bad')],
      ['Busy', (w) => `${w.busy} of ${w.capacity}`],
      ['Jobs handled', (w) => number(w.jobs_handled, 0)],
      ['Last heard', (w) => when(w.seen_at)],
    ], workers.data, 'No worker process: queued jobs wait until one starts ([jobs] workers, or `scaigrid worker`).'));
    const failed = rows.filter((job) => job.status === 'failed');
    if (failed.length) {
      view.append(h('h2', null, 'Failures'), table([
        ['Job', (j) => h('code', null, j.id)],
        ['Reason', (j) => h('span', null, pill(j.failure_reason || 'failed', 'bad'), ' ', j.status_reason || '', reasonFix(j.failure_reason))],
        ['Detail', (j) => j.failure_detail || '—'],
        ['When', (j) => when(j.finished_at || j.updated_at)],
      ], failed));
    }
    view.append(h('h2', null, 'Latest jobs'), await filtered(ctx, ECHO_JOBS, ['queued', 'processing', 'succeeded', 'failed'], [
      ['Job', (j) => h('code', null, j.id)],
      ['Status', (j) => pill(j.status)],
      ['Audio s', (j) => number(j.audio_seconds, 1)],
      ['Attempts', (j) => j.attempts],
      ['Created', (j) => when(j.created_at)],
      ['', (j) => act(ctx, 'Delete', () => api.del(`${ECHO_JOBS}/${j.id}`), { danger: true })],
    ], 'No jobs yet.', false));
  },
};

/** A preflight block (`passed`, `fail_reasons`, `metrics`) in a line. */
function preflight(block) {
  if (!block || typeof block !== 'object' || block.passed === undefined) return '—';
  const m = block.metrics || {};
  const measured = `${number(m.duration_seconds, 1)} s, SNR ${number(m.snr_db, 1)} dB, speech ${number(100 * (m.voice_activity_ratio || 0), 0)} %`;
  return block.passed
    ? h('span', null, pill('passed', 'ok'), ' ', h('span', { class: 'muted' }, measured))
    : h('span', null, pill('failed', 'bad'), ' ', (block.fail_reasons || []).join(', '), h('div', { class: 'muted' }, measured));
}

const voices = {
  id: 'voices',
  title: 'Voices and speakers',
  visible: (ctx) => (ctx.me.tenant.modules.includes('scaispeak') && ctx.can('scaispeak:voice.read'))
    || (ctx.me.tenant.modules.includes('scaiecho') && ctx.can('scaiecho:speaker.read')),
  async render(view, ctx) {
    const modules = ctx.me.tenant.modules;
    if (modules.includes('scaispeak') && ctx.can('scaispeak:voice.read')) {
      const base = '/v1/modules/scaispeak/voices';
      const rows = (await api.get(base)).data;
      const write = ctx.can('scaispeak:voice.write');
      view.append(h('h2', null, 'Voices'), table([
        ['Voice', (v) => h('div', null, v.name, ' ', h('code', { class: 'muted' }, v.id))],
        ['Scope', (v) => v.scope],
        ['Status', (v) => h('span', null, pill(v.embedding_status), ' ', v.embedding_status_reason || '')],
        ['Preflight', (v) => (v.preflight ? preflight(v.preflight) : '—')],
        ['Warm on', (v) => (v.warm_node_ids || []).join(', ') || '—'],
        ['', (v) => (!write || v.scope !== 'tenant' ? '' : h('div', { class: 'actions' },
          act(ctx, 'Repromote', () => api.post(`${base}/${v.id}/repromote`)),
          act(ctx, 'Warm', () => api.post(`${base}/${v.id}/warm`)),
          act(ctx, 'Evict', () => api.post(`${base}/${v.id}/evict`)),
          act(ctx, 'Delete', () => api.del(`${base}/${v.id}`), { danger: true, confirmText: `Delete voice ${v.name}?` })))],
      ], rows, 'No voices.'));
    }
    if (modules.includes('scaiecho') && ctx.can('scaiecho:speaker.read')) {
      const base = '/v1/modules/scaiecho/speakers';
      const rows = (await api.get(base)).data;
      const write = ctx.can('scaiecho:speaker.write');
      view.append(h('h2', null, 'Speakers'), table([
        ['Speaker', (s) => h('div', null, s.label, ' ', h('code', { class: 'muted' }, s.id))],
        ['Enrollment', (s) => h('span', null, pill(s.enrollment_status), ' ', s.status_reason || s.note || '')],
        ['Preflight', (s) => preflight(s.preflight)],
        ['Warm on', (s) => s.warm_node_ids.join(', ') || '—'],
        ['', (s) => (!write ? '' : h('div', { class: 'actions' },
          act(ctx, 'Warm', () => api.post(`${base}/${s.id}/warm`)),
          act(ctx, 'Delete', () => api.del(`${base}/${s.id}`), { danger: true, confirmText: `Delete speaker ${s.label}?` })))],
      ], rows, 'No enrolled speakers.'));
    }
  },
};

const webhooks = {
  id: 'webhooks',
  title: 'Webhooks',
  visible: (ctx) => ctx.can('webhooks:read'),
  async render(view, ctx) {
    const rows = await api.get(scoped(ctx, '/v1/webhooks'));
    const created = h('div');
    if (ctx.can('webhooks:write')) {
      view.append(form(ctx, 'create-webhook', [
        field('URL', { name: 'url', required: true, placeholder: 'https://example.com/hooks/scaigrid' }),
        field('Events (comma separated)', { name: 'events', required: true, placeholder: 'transcription.job.completed' }),
      ], 'Add webhook', async (data) => {
        const hook = await api.post('/v1/webhooks', { url: data.url, events: list(data.events), ...ctx.scope() });
        await ctx.render();
        replace(created, h('div', { class: 'secret', id: 'new-secret' }, h('strong', null, 'Signing secret (shown once): '), h('code', null, hook.secret)));
        document.querySelector('#main section h1').after(created);
      }));
    }
    view.append(table([
      ['URL', (w) => h('code', null, w.url)],
      ['Events', (w) => w.events.join(', ')],
      ['Status', (w) => h('span', null, pill(w.status), ' ', w.disabled_reason || '')],
      ['Failures in a row', (w) => w.consecutive_failures],
      ['', (w) => (!ctx.can('webhooks:write') ? '' : h('div', { class: 'actions' },
        w.status === 'active'
          ? act(ctx, 'Pause', () => api.patch(`/v1/webhooks/${w.id}`, { status: 'disabled' }))
          : act(ctx, 'Re-enable', () => api.patch(`/v1/webhooks/${w.id}`, { status: 'active' })),
        act(ctx, 'Delete', () => api.del(`/v1/webhooks/${w.id}`), { danger: true, confirmText: `Delete the webhook to ${w.url}?` })))],
    ], rows, 'No webhooks.'));
    for (const hook of rows) {
      const deliveries = (await api.get(`/v1/webhooks/${hook.id}/deliveries`)).data;
      view.append(h('h2', null, 'Deliveries to ', h('code', null, hook.url)), table([
        ['Event', (d) => h('code', null, d.event)],
        ['Status', (d) => pill(d.status === 'succeeded' ? 'succeeded' : d.status === 'failed' ? 'failed' : 'pending')],
        ['Attempts', (d) => d.attempt],
        ['HTTP', (d) => d.status_code ?? '—'],
        ['Failure', (d) => (d.failure_reason ? h('span', null, h('code', null, d.failure_reason), ' ', d.failure_detail || d.error || '',
          h('div', { class: 'fix' }, DELIVERY_FIXES[d.failure_reason] || '')) : '—')],
        ['When', (d) => when(d.updated_at)],
      ], deliveries, 'No deliveries yet.'));
    }
  },
};

const nodes = {
  id: 'nodes',
  title: 'Nodes',
  visible: (ctx) => ctx.platform,
  async render(view) {
    const rows = (await api.get('/v1/admin/nodes')).data;
    view.append(table([
      ['Node', (n) => h('code', null, n.node_id)],
      ['Status', (n) => pill(n.status)],
      ['Device', (n) => n.device || '—'],
      ['Models', (n) => (n.models_loaded || []).map((m) => h('div', null, h('code', null, typeof m === 'string' ? m : m.id || JSON.stringify(m))))],
      ['Load', (n) => (n.load === undefined ? '—' : JSON.stringify(n.load))],
      ['Restarts', (n) => n.restarts ?? '—'],
    ], rows, 'No inference nodes.'));
  },
};

const playground = {
  id: 'playground',
  title: 'Playground',
  visible: (ctx) => ctx.can('scaiecho:transcribe') || ctx.can('scaispeak:speak'),
  async render(view, ctx) {
    if (ctx.can('scaiecho:transcribe')) {
      const result = h('div', { id: 'transcript' });
      view.append(h('h2', null, 'Transcribe a recording'), form(ctx, 'transcribe', [
        field('Audio file', { name: 'file', type: 'file', accept: 'audio/*', required: true }),
        h('label', null, 'Speakers', h('input', { name: 'diarize', type: 'checkbox' })),
      ], 'Transcribe', async (data) => {
        const body = new FormData();
        body.append('file', data.file);
        if (data.diarize) body.append('diarize', 'true');
        replace(result, h('p', { class: 'muted' }, 'Transcribing…'));
        const answer = await api.post('/v1/modules/scaiecho/transcribe', body).catch((error) => { result.replaceChildren(); throw error; });
        if (answer.object === 'transcription.job' || answer.status === 'queued') {
          replace(result, h('p', null, 'Long recording: queued as job ', h('code', null, answer.id), '. See Transcription jobs.'));
          return;
        }
        const segments = answer.segments || [];
        replace(result, h('div', { class: 'transcript' }, segments.length && segments.some((s) => s.speaker_label || s.speaker)
          ? segments.map((s) => h('div', null, h('span', { class: 'speaker' }, s.speaker_label || s.speaker || ''), s.text))
          : answer.text));
      }), result);
    }
    if (ctx.can('scaispeak:speak')) {
      const player = h('div');
      view.append(h('h2', null, 'Hear a text'), form(ctx, 'speak', [
        field('Text', { name: 'input', tag: 'textarea', required: true }),
        field('Voice', { name: 'voice', placeholder: '(default)' }),
      ], 'Speak', async (data) => {
        const response = await api.call('POST', '/v1/audio/speech', { input: data.input, voice: data.voice || undefined, response_format: 'wav' }, { raw: true });
        const url = URL.createObjectURL(await response.blob());
        replace(player, h('audio', { controls: true, src: url, id: 'speech' }));
      }), player);
    }
    if (ctx.can('scaiecho:transcribe')) view.append(h('h2', null, 'Speak into the microphone'), microphone(ctx));
  },
};

/**
 * The microphone to ScaiEcho over WebRTC: the same session API as any client, with the
 * session's frames on the data channel (no token in a URL: the calls carry the cookie).
 */
function microphone(ctx) {
  const transcript = h('div', { class: 'transcript', id: 'mic-transcript' });
  const status = h('span', { class: 'muted', id: 'mic-status' }, 'idle');
  const start = h('button', { type: 'button', class: 'primary', id: 'mic-start' }, 'Start');
  const stop = h('button', { type: 'button', id: 'mic-stop', disabled: true }, 'Stop');
  const box = h('div', { class: 'card' }, h('div', { class: 'actions' }, start, stop, status), transcript);
  let live = null;
  const show = (frames) => {
    const finals = frames.filter((f) => f.type === 'delta' && f.is_final).map((f) => f.text.trim());
    // A partial shows only until its final arrives.
    const last = [...frames].reverse().find((f) => f.type === 'delta');
    const partial = last && !last.is_final ? last : null;
    replace(transcript, finals.join(' '), partial ? h('span', { class: 'muted' }, ` ${partial.text}`) : null);
  };
  start.addEventListener('click', () => ctx.attempt(async () => {
    start.disabled = true;
    status.textContent = 'connecting…';
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const session = await api.post('/v1/modules/scaiecho/sessions', {});
    const pc = new RTCPeerConnection({ iceServers: session.ice_servers });
    stream.getTracks().forEach((track) => pc.addTrack(track, stream));
    const channel = pc.createDataChannel('scaigrid');
    const frames = [];
    const done = new Promise((resolve) => {
      channel.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        frames.push(frame);
        if (frame.type === 'delta') show(frames);
        if (frame.type === 'error') box.prepend(ctx.failureBox(new api.Failure(400, frame)));
        if (frame.type === 'done' || frame.type === 'error') resolve(frame);
      };
    });
    const opened = new Promise((resolve) => { channel.onopen = resolve; });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') resolve(); });
      setTimeout(resolve, 2000);
    });
    const answer = await api.post(session.offer_url, { type: 'offer', sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription(answer);
    await opened;
    live = { stream, pc, channel, done };
    status.textContent = 'listening';
    stop.disabled = false;
  }, box).finally(() => { if (!live) start.disabled = false; }));
  stop.addEventListener('click', async () => {
    if (!live) return;
    stop.disabled = true;
    status.textContent = 'finishing…';
    live.channel.send(JSON.stringify({ type: 'close' }));
    await Promise.race([live.done, new Promise((resolve) => setTimeout(resolve, 15000))]);
    live.stream.getTracks().forEach((track) => track.stop());
    live.pc.close();
    live = null;
    status.textContent = 'done';
    start.disabled = false;
  });
  return box;
}

export const PAGES = [overview, tenants, users, keys, roles, modules, models, budgets, jobs, voices, webhooks, nodes, playground];
