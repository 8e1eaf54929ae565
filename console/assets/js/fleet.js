// The fleet: a page of 100 devices from GET /api/v1/controller/device/ with the search,
// filters and order in the address (so a reload or a shared link shows the same), presence
// kept live by the event stream rather than by asking for each device.

import * as api from './api.js';
import * as live from './live.js';
import { start, orgName } from './layout.js';
import { h, fill, byId, badge, ago, showError } from './dom.js';

const PAGE_SIZE = 100;
const FILTERS = ['search', 'is_online', 'model', 'firmware_version', 'group', 'config__status'];

const ctx = await start('fleet');
const form = byId('filters');
const body = byId('devices').querySelector('tbody');
const rows = new Map(); // device id → its row, for live updates
let state = readState();
let loading = 0;

for (const column of document.querySelectorAll('.org-column')) {
  column.classList.toggle('hidden', ctx.organizations.length < 2 || Boolean(ctx.organization));
}
await fillGroups();
writeForm();

let typing;
form.addEventListener('input', (event) => {
  clearTimeout(typing);
  // Typing in the search box waits for a pause; a select changes at once.
  typing = setTimeout(changed, event.target.type === 'search' || event.target.tagName === 'INPUT' ? 250 : 0);
});
form.addEventListener('submit', (event) => {
  event.preventDefault();
  changed();
});
for (const button of document.querySelectorAll('button.sort')) {
  button.addEventListener('click', () => {
    const field = button.dataset.field;
    state.ordering = state.ordering === field ? `-${field}` : field;
    state.page = 1;
    load();
  });
}
byId('previous').addEventListener('click', () => {
  state.page = Math.max(1, state.page - 1);
  load();
});
byId('next').addEventListener('click', () => {
  state.page += 1;
  load();
});

live.on('presence', (event) => {
  const row = rows.get(event.device);
  if (row) setPresence(row, { online: event.online, since: event.at });
});
live.onResync(load);
window.addEventListener('popstate', () => {
  state = readState();
  writeForm();
  load(false);
});

await load(false);

function changed() {
  const data = new FormData(form);
  for (const name of FILTERS) state[name] = (data.get(name) || '').trim();
  state.page = 1;
  load();
}

function readState() {
  const query = new URLSearchParams(window.location.search);
  const s = { page: Math.max(1, Number.parseInt(query.get('page') || '1', 10) || 1), ordering: query.get('ordering') || '' };
  for (const name of FILTERS) s[name] = query.get(name) || '';
  return s;
}

function writeForm() {
  for (const name of FILTERS) {
    if (form.elements[name]) form.elements[name].value = state[name];
  }
}

async function fillGroups() {
  try {
    const groups = await api.all('/api/v1/controller/group/', { organization: ctx.organization });
    form.elements.group.append(...groups.map((g) => h('option', { value: g.id }, g.name)));
  } catch (error) {
    showError(error);
  }
}

async function load(push = true) {
  const ticket = ++loading;
  const query = { page: state.page, page_size: PAGE_SIZE, ordering: state.ordering, organization: ctx.organization };
  for (const name of FILTERS) query[name] = state[name];
  if (push) {
    const address = new URLSearchParams();
    for (const [key, value] of Object.entries({ ...query, page_size: '', organization: '' })) {
      if (value && !(key === 'page' && value === 1)) address.set(key, value);
    }
    const text = address.toString();
    history.pushState(null, '', text ? `?${text}` : window.location.pathname);
  }
  for (const button of document.querySelectorAll('button.sort')) {
    const field = button.dataset.field;
    button.dataset.dir = state.ordering === field ? 'asc' : state.ordering === `-${field}` ? 'desc' : '';
  }
  byId('devices').setAttribute('aria-busy', 'true');
  try {
    const answer = await api.get('/api/v1/controller/device/', query);
    if (ticket !== loading) return;
    showError(null);
    draw(answer);
  } catch (error) {
    if (ticket !== loading) return;
    if (error.status === 404 && state.page > 1) {
      state.page = 1;
      load();
      return;
    }
    showError(error);
  } finally {
    if (ticket === loading) byId('devices').removeAttribute('aria-busy');
  }
}

function draw(answer) {
  rows.clear();
  const devices = answer.results || [];
  const showOrg = ctx.organizations.length > 1 && !ctx.organization;
  fill(
    body,
    devices.length
      ? devices.map((device) => {
          const row = h(
            'tr',
            { dataset: { deviceId: device.id } },
            h('td', {}, h('a', { href: `/devices/${device.id}/` }, device.name)),
            h('td', { class: 'presence' }),
            showOrg ? h('td', {}, orgName(ctx.organizations, device.organization)) : null,
            h('td', { class: 'mono' }, device.mac_address),
            h('td', {}, device.model || '—'),
            h('td', { class: 'hide-narrow' }, device.config ? badge(device.config.status) : '—'),
            h('td', { class: 'hide-narrow mono' }, device.last_ip || '—'),
            h('td', { class: 'hide-narrow', title: device.created }, ago(device.created)),
          );
          setPresence(row, device.presence || { online: false, since: null });
          rows.set(device.id, row);
          return row;
        })
      : h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No devices match.')),
  );
  const pages = Math.max(1, Math.ceil(answer.count / PAGE_SIZE));
  byId('page-info').textContent = `Page ${state.page} of ${pages} · ${answer.count.toLocaleString()} devices`;
  byId('summary').textContent = `${answer.count.toLocaleString()} devices`;
  byId('previous').disabled = !answer.previous;
  byId('next').disabled = !answer.next;
}

function setPresence(row, presence) {
  const cell = row.querySelector('td.presence');
  const status = presence.online ? 'online' : 'offline';
  const title = presence.since ? `${status} since ${new Date(presence.since).toLocaleString()}` : 'never connected';
  fill(cell, badge(status));
  cell.title = title;
  row.dataset.presence = status;
}
