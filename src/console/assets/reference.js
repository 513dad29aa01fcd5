// The API reference: `/openapi.json` rendered as a browsable page, by tag, with each
// operation's parameters, request body and responses (schemas resolved from
// `components`). Text only, like the console (dom.js), and nothing from elsewhere.

import { h, replace } from './dom.js';

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

/** The schema a `$ref` names, or the schema itself. */
function resolve(spec, schema) {
  let seen = 0;
  while (schema && schema.$ref && seen++ < 16) {
    const name = schema.$ref.split('/').pop();
    schema = spec.components?.schemas?.[name];
  }
  return schema || {};
}

/** A schema as a short type line and its fields, a few levels deep. */
function schemaView(spec, schema, depth = 0) {
  const named = schema && schema.$ref ? schema.$ref.split('/').pop() : null;
  const s = resolve(spec, schema);
  const variants = s.oneOf || s.anyOf || s.allOf;
  if (variants) {
    return h('div', { class: 'schema' }, h('span', { class: 'muted' }, s.oneOf ? 'one of' : s.anyOf ? 'any of' : 'all of'),
      h('ul', null, variants.map((v) => h('li', null, schemaView(spec, v, depth + 1)))));
  }
  const type = Array.isArray(s.type) ? s.type.join(' | ') : (s.type || (s.properties ? 'object' : 'any'));
  const label = [named, type === 'array' ? `array of ${typeName(spec, s.items)}` : type, s.format].filter(Boolean).join(' · ');
  const head = h('span', { class: 'type' }, label, s.enum ? ` (${s.enum.join(', ')})` : '');
  if (!s.properties || depth > 2) return h('div', { class: 'schema' }, head, s.description ? h('div', { class: 'muted' }, s.description) : null);
  const required = new Set(s.required || []);
  return h('div', { class: 'schema' }, head, h('table', null, h('tbody', null,
    Object.entries(s.properties).map(([field, sub]) => {
      const r = resolve(spec, sub);
      return h('tr', null,
        h('td', null, h('code', null, field), required.has(field) ? h('span', { class: 'muted' }, ' required') : ''),
        h('td', null, r.properties && depth < 2 ? schemaView(spec, sub, depth + 1) : typeName(spec, sub)),
        h('td', { class: 'muted' }, r.description || sub.description || ''));
    }))));
}

function typeName(spec, schema) {
  if (!schema) return 'any';
  if (schema.$ref) return schema.$ref.split('/').pop();
  const s = resolve(spec, schema);
  if (s.type === 'array') return `array of ${typeName(spec, s.items)}`;
  return Array.isArray(s.type) ? s.type.join(' | ') : (s.type || 'object');
}

function operationView(spec, path, method, op) {
  const id = `${method}-${path}`.replace(/[^a-zA-Z0-9]+/g, '-');
  const params = op.parameters || [];
  const body = op.requestBody?.content;
  return h('details', { class: 'operation', id, dataset: { path, method } },
    h('summary', null, h('span', { class: `pill method ${method}` }, method.toUpperCase()), ' ', h('code', null, path),
      op.summary ? h('span', { class: 'muted' }, ' — ', op.summary) : ''),
    op.description ? h('p', null, op.description) : null,
    op.security?.length ? h('p', { class: 'muted' }, 'Authorization: Bearer token (API key or JWT).') : h('p', { class: 'muted' }, 'No authentication.'),
    params.length ? h('div', null, h('h4', null, 'Parameters'), h('table', null, h('tbody', null, params.map((p) =>
      h('tr', null, h('td', null, h('code', null, p.name), p.required ? h('span', { class: 'muted' }, ' required') : ''),
        h('td', null, p.in), h('td', null, typeName(spec, p.schema)), h('td', { class: 'muted' }, p.description || ''))))))
      : null,
    body ? h('div', null, h('h4', null, 'Request body'), Object.entries(body).map(([type, media]) =>
      h('div', null, h('div', { class: 'muted' }, type), schemaView(spec, media.schema)))) : null,
    h('h4', null, 'Responses'),
    h('table', null, h('tbody', null, Object.entries(op.responses || {}).map(([status, response]) => {
      const content = response.content ? Object.values(response.content)[0] : null;
      return h('tr', null, h('td', null, h('code', null, status)), h('td', null, response.description || ''),
        h('td', null, content?.schema ? schemaView(spec, content.schema) : ''));
    }))));
}

async function main() {
  const root = document.getElementById('main');
  let spec;
  try {
    const response = await fetch('/openapi.json');
    spec = await response.json();
  } catch (error) {
    replace(root, h('p', { class: 'failure' }, `openapi.json could not be read: ${error}`));
    return;
  }
  const operations = [];
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of METHODS) {
      if (item[method]) operations.push({ path, method, op: item[method], tag: (item[method].tags || ['other'])[0] });
    }
  }
  const tags = [...new Set(operations.map((o) => o.tag))].sort();
  const filter = h('input', { id: 'filter', type: 'search', placeholder: 'Filter by path, method or words…' });
  const list = h('div', { id: 'operations' });
  const draw = () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const matches = (o) => words.every((w) => `${o.method} ${o.path} ${o.op.summary || ''} ${o.op.description || ''}`.toLowerCase().includes(w));
    replace(list, tags.map((tag) => {
      const shown = operations.filter((o) => o.tag === tag && matches(o));
      return shown.length ? h('section', { dataset: { tag } }, h('h2', null, tag), shown.map((o) => operationView(spec, o.path, o.method, o.op))) : null;
    }));
  };
  filter.addEventListener('input', draw);
  replace(root, h('h1', null, `${spec.info?.title || 'API'} ${spec.info?.version || ''}`),
    h('p', { class: 'muted' }, `${operations.length} operations. WebSocket protocols and error codes: docs/ in the repository, and GET /v1/errors.`),
    filter, list);
  draw();
}

main();
