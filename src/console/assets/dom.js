// DOM helpers. Every text goes into the page as a text node (never as markup), so a
// transcript or a model name that holds `<script>` shows as those characters.

const SVG = 'http://www.w3.org/2000/svg';

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An element: `props` are attributes, `on<event>` listeners, or DOM properties. */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      element.className = value;
    } else if (name === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (['value', 'checked', 'disabled', 'hidden', 'selected', 'multiple'].includes(name)) {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

/** Empties `element` and puts `children` in it. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A table: `columns` are `[title, row => node or text]`. */
export function table(columns, rows, empty = 'Nothing here yet.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('table', null,
    h('thead', null, h('tr', null, columns.map(([title]) => h('th', null, title)))),
    h('tbody', null, rows.map((row) =>
      h('tr', { dataset: { id: row.id ?? '' } }, columns.map(([, cell]) => h('td', null, cell(row)))))));
}

/** A status as a coloured pill. */
export function pill(text, tone) {
  const tones = {
    ok: ['active', 'enabled', 'healthy', 'closed', 'succeeded', 'ready', 'running', 'online'],
    warn: ['queued', 'processing', 'half_open', 'pending', 'unknown', 'available', 'starting', 'degraded'],
    bad: ['failed', 'error', 'open', 'unhealthy', 'disabled', 'revoked', 'deleted', 'stopped', 'offline'],
  };
  const found = tone || Object.keys(tones).find((key) => tones[key].includes(text)) || '';
  return h('span', { class: `pill ${found}` }, text ?? '—');
}

export function when(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function number(value, digits = 2) {
  if (value === null || value === undefined) return '—';
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** A labelled input. */
export function field(label, props) {
  return h('label', null, label, h(props.tag || 'input', { ...props, tag: undefined }));
}

/** A labelled select of `options` (`[value, text]` or plain values). */
export function choice(label, name, options, selected) {
  return h('label', null, label, h('select', { name },
    options.map((option) => {
      const [value, text] = Array.isArray(option) ? option : [option, option];
      return h('option', { value, selected: value === selected }, text);
    })));
}

/** The values of a form's named fields. */
export function values(form) {
  const out = {};
  for (const element of form.elements) {
    if (!element.name) continue;
    if (element.type === 'checkbox') out[element.name] = element.checked;
    else if (element.type === 'file') out[element.name] = element.files[0];
    else out[element.name] = element.value.trim();
  }
  return out;
}

/** A comma list as an array (empty entries dropped). */
export function list(text) {
  return (text || '').split(',').map((part) => part.trim()).filter(Boolean);
}

/** A horizontal bar chart of `[label, value]` pairs, drawn as SVG. */
export function bars(pairs, { unit = '', width = 960, tone } = {}) {
  const row = 22;
  const left = 260;
  const height = Math.max(pairs.length, 1) * row + 10;
  const max = Math.max(...pairs.map(([, value]) => value), 1e-9);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  pairs.forEach(([label, value], index) => {
    const y = 5 + index * row;
    const name = document.createElementNS(SVG, 'text');
    name.setAttribute('x', 6);
    name.setAttribute('y', y + 14);
    name.textContent = String(label).slice(0, 40);
    const bar = document.createElementNS(SVG, 'rect');
    bar.setAttribute('x', left);
    bar.setAttribute('y', y + 3);
    bar.setAttribute('height', row - 8);
    bar.setAttribute('width', Math.max(1, ((width - left - 90) * value) / max));
    bar.setAttribute('class', tone ? `bar ${tone}` : 'bar');
    const tip = document.createElementNS(SVG, 'title');
    tip.textContent = `${label}: ${number(value, 4)}${unit}`;
    bar.append(tip);
    const amount = document.createElementNS(SVG, 'text');
    amount.setAttribute('x', left + 6 + Math.max(1, ((width - left - 90) * value) / max));
    amount.setAttribute('y', y + 14);
    amount.textContent = `${number(value, 4)}${unit}`;
    svg.append(name, bar, amount);
  });
  return svg;
}

/** A used/limit meter. */
export function meter(used, limit) {
  const share = limit > 0 ? Math.min(used / limit, 1) : 1;
  const inner = h('div');
  inner.style.width = `${(share * 100).toFixed(1)}%`;
  return h('div', { class: used >= limit ? 'meter over' : 'meter', title: `${number(used, 4)} of ${number(limit, 4)}` }, inner);
}

/** A stat card. */
export function stat(label, value) {
  return h('div', { class: 'stat' }, h('div', { class: 'value' }, value), h('div', { class: 'label' }, label));
}

/** A file the browser downloads, made from text. */
export function download(name, text, type = 'text/csv') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h('a', { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
