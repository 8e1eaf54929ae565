// Configuration management at a glance: how many devices are in each configuration status
// (each a link to the fleet filtered by it), the templates (one's configuration on demand,
// ?template=<id> in the address), the device groups and their templates, and the VPN
// servers. Read-only; within the chosen organization (shared templates and VPNs included).

import * as api from './api.js';
import { start, orgName } from './layout.js';
import { h, fill, byId, when, panelError } from './dom.js';

const C = '/api/v1/controller';
const DEVICES = `${C}/device/`;
const STATUSES = ['applied', 'modified', 'error', 'deactivating', 'deactivated'];
/** Counting devices costs one request per template or group: not for hundreds of them. */
const MAX_COUNTED = 200;

const ctx = await start('configuration');
const multiOrg = ctx.organizations.length > 1 && !ctx.organization;
let templates = [];
let groups = [];
let vpns = [];
const templateCounts = new Map(); // template id → devices using it (undefined: not counted)
const groupCounts = new Map();
const countCells = new Map(); // template id → its Devices cell
let selected = new URLSearchParams(window.location.search).get('template') || '';

for (const column of document.querySelectorAll('.org-column')) column.classList.toggle('hidden', !multiOrg);
byId('template-close').addEventListener('click', () => choose(''));
window.addEventListener('popstate', () => {
  selected = new URLSearchParams(window.location.search).get('template') || '';
  markSelected();
  drawDetail();
});

await Promise.all([loadStatuses(), loadTemplates(), loadGroups(), loadVpns()]);
drawTemplates();
drawDetail();
drawGroups();
drawVpns();
await Promise.all([countTemplates(), countGroups(), nameCertificates()]);

// ---- helpers ----

/** Devices of the chosen organization matching `query`: the list's count, one row asked. */
async function deviceCount(query) {
  const answer = await api.get(DEVICES, { ...query, page_size: 1, organization: ctx.organization });
  return answer.count;
}

function organizationText(org) {
  return org ? orgName(ctx.organizations, org) : 'shared';
}

/** Own objects of the chosen organization and shared ones (the API's filter drops shared ones). */
function inScope(item) {
  return !ctx.organization || !item.organization || item.organization === ctx.organization;
}

function byName(a, b) {
  return a.name.localeCompare(b.name);
}

function backendName(backend) {
  const names = {
    'netjsonconfig.OpenWrt': 'OpenWrt',
    'netjsonconfig.OpenWisp': 'OpenWISP firmware',
    'openwisp_controller.vpn_backends.OpenVpn': 'OpenVPN',
    'openwisp_controller.vpn_backends.Wireguard': 'WireGuard',
    'openwisp_controller.vpn_backends.VxlanWireguard': 'VXLAN over WireGuard',
  };
  return names[backend] || String(backend || '—').split('.').pop();
}

function flag(name) {
  return h('span', { class: 'flag', dataset: { flag: name } }, name);
}

// ---- configuration status ----

async function loadStatuses() {
  try {
    const [total, ...counts] = await Promise.all([deviceCount({}), ...STATUSES.map((status) => deviceCount({ config__status: status }))]);
    STATUSES.forEach((status, i) => {
      const link = byId(`status-${status}`);
      link.querySelector('.count').textContent = counts[i].toLocaleString();
      link.dataset.count = String(counts[i]);
      link.title = `${counts[i].toLocaleString()} devices ${status}: show them in the fleet`;
    });
    const configured = counts.reduce((sum, n) => sum + n, 0);
    byId('status-summary').textContent = `${total.toLocaleString()} devices`;
    byId('status-note').textContent =
      total > configured
        ? `${(total - configured).toLocaleString()} of ${total.toLocaleString()} devices have no configuration.`
        : '';
  } catch (error) {
    for (const status of STATUSES) byId(`status-${status}`).querySelector('.count').textContent = '—';
    panelError('status-panel', error);
  }
}

// ---- templates ----

async function loadTemplates() {
  try {
    templates = (await api.all(`${C}/template/`)).filter(inScope).sort(byName);
  } catch (error) {
    panelError('templates-panel', error);
  }
}

function choose(id) {
  selected = id;
  const query = new URLSearchParams(window.location.search);
  if (id) query.set('template', id);
  else query.delete('template');
  const text = query.toString();
  history.pushState(null, '', text ? `?${text}` : window.location.pathname);
  markSelected();
  drawDetail();
  if (id) byId('template-detail').scrollIntoView({ block: 'nearest' });
}

function drawTemplates() {
  countCells.clear();
  byId('templates-summary').textContent = templates.length ? String(templates.length) : '';
  fill(
    byId('templates').querySelector('tbody'),
    templates.length
      ? templates.map((t) => {
          const count = h('td', { class: 'numeric' }, countText(templateCounts.get(t.id), t));
          countCells.set(t.id, count);
          return h(
            'tr',
            {
              dataset: { templateId: t.id },
              onclick: (event) => {
                if (event.ctrlKey || event.metaKey || event.shiftKey || event.button > 0) return; // a new tab
                event.preventDefault();
                choose(t.id === selected ? '' : t.id);
              },
            },
            h('td', {}, h('a', { href: `?template=${t.id}`, class: 'template-link' }, t.name)),
            h('td', {}, t.type === 'vpn' ? 'VPN client' : t.type),
            h('td', { class: 'hide-narrow' }, backendName(t.backend)),
            h('td', { class: 'flags' }, t.default ? flag('default') : null, t.required ? flag('required') : null, !t.default && !t.required ? h('span', { class: 'muted' }, '—') : null),
            h('td', { class: multiOrg ? 'org-column' : 'org-column hidden' }, organizationText(t.organization)),
            count,
          );
        })
      : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No templates.')),
  );
  markSelected();
}

function countText(count, template) {
  if (count === undefined) return templates.indexOf(template) < MAX_COUNTED ? '…' : '—';
  return count === null ? '—' : count.toLocaleString();
}

function markSelected() {
  for (const row of byId('templates').querySelectorAll('tbody tr[data-template-id]')) {
    const on = row.dataset.templateId === selected;
    row.classList.toggle('selected', on);
    row.setAttribute('aria-selected', on ? 'true' : 'false');
  }
}

async function countTemplates() {
  await api.pool(templates.slice(0, MAX_COUNTED), 4, async (t) => {
    let count;
    try {
      count = await deviceCount({ config__templates: t.id });
    } catch {
      count = null;
    }
    templateCounts.set(t.id, count);
    const cell = countCells.get(t.id);
    if (cell) cell.textContent = countText(count, t);
    if (t.id === selected) drawDetail();
  });
}

function drawDetail() {
  const panel = byId('template-detail');
  const t = templates.find((x) => x.id === selected);
  panel.classList.toggle('hidden', !t);
  byId('templates-panel').classList.toggle('with-detail', Boolean(t));
  if (!t) return;
  byId('template-title').textContent = t.name;
  const vpn = t.vpn ? vpns.find((v) => v.id === t.vpn) : null;
  const count = templateCounts.get(t.id);
  const facts = [
    ['Type', t.type === 'vpn' ? 'VPN client' : t.type],
    ['Backend', `${backendName(t.backend)} (${t.backend})`],
    ['Organization', organizationText(t.organization)],
    ['Default', t.default ? 'yes: added to every new configuration' : 'no'],
    ['Required', t.required ? 'yes: always part of every configuration' : 'no'],
    t.vpn ? ['VPN server', vpn ? vpn.name : t.vpn] : null,
    ['Tags', t.tags && t.tags.length ? t.tags.join(', ') : '—'],
    [
      'Devices',
      typeof count === 'number'
        ? h('span', {}, count.toLocaleString())
        : count === undefined
          ? '…'
          : '—',
    ],
    ['Notes', t.notes || '—'],
    ['Created', when(t.created)],
    ['Modified', when(t.modified)],
  ].filter(Boolean);
  fill(byId('template-facts'), facts.map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
  const config = t.config && Object.keys(t.config).length ? JSON.stringify(t.config, null, 2) : '{} (empty)';
  byId('template-config').textContent = config;
  const defaults = t.default_values && Object.keys(t.default_values).length;
  byId('template-defaults-block').classList.toggle('hidden', !defaults);
  byId('template-defaults').textContent = defaults ? JSON.stringify(t.default_values, null, 2) : '';
}

// ---- device groups ----

async function loadGroups() {
  try {
    groups = (await api.all(`${C}/group/`, { organization: ctx.organization })).sort(byName);
  } catch (error) {
    panelError('groups-panel', error);
  }
}

function templateChip(id) {
  const t = templates.find((x) => x.id === id);
  if (!t) return h('span', { class: 'chip muted', title: id }, `${id.slice(0, 8)}…`);
  return h(
    'a',
    {
      class: 'chip',
      href: `?template=${t.id}`,
      onclick: (event) => {
        if (event.ctrlKey || event.metaKey || event.shiftKey || event.button > 0) return;
        event.preventDefault();
        choose(t.id);
      },
    },
    t.name,
  );
}

function drawGroups() {
  byId('groups-summary').textContent = groups.length ? String(groups.length) : '';
  fill(
    byId('groups').querySelector('tbody'),
    groups.length
      ? groups.map((g) =>
          h(
            'tr',
            { dataset: { groupId: g.id } },
            h('td', {}, g.name),
            h('td', { class: 'hide-narrow muted wrap' }, g.description || '—'),
            h('td', { class: 'wrap chips' }, g.templates.length ? g.templates.map(templateChip) : h('span', { class: 'muted' }, 'none')),
            h('td', { class: multiOrg ? 'org-column' : 'org-column hidden' }, organizationText(g.organization)),
            h('td', { class: 'numeric group-count' }, groupCounts.has(g.id) ? groupCountCell(g) : '…'),
          ),
        )
      : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No device groups.')),
  );
}

function groupCountCell(g) {
  const count = groupCounts.get(g.id);
  if (count === null || count === undefined) return '—';
  return h('a', { href: `/?group=${g.id}`, title: 'Show them in the fleet' }, count.toLocaleString());
}

async function countGroups() {
  await api.pool(groups.slice(0, MAX_COUNTED), 4, async (g) => {
    let count;
    try {
      count = await deviceCount({ group: g.id });
    } catch {
      count = null;
    }
    groupCounts.set(g.id, count);
    const row = byId('groups').querySelector(`tr[data-group-id="${g.id}"] td.group-count`);
    if (row) fill(row, groupCountCell(g));
  });
  for (const cell of byId('groups').querySelectorAll('td.group-count')) {
    if (cell.textContent === '…') cell.textContent = '—';
  }
}

// ---- VPN servers ----

async function loadVpns() {
  try {
    vpns = (await api.all(`${C}/vpn/`)).filter(inScope).sort(byName);
  } catch (error) {
    panelError('vpns-panel', error);
  }
}

function drawVpns() {
  byId('vpns-summary').textContent = vpns.length ? String(vpns.length) : '';
  fill(
    byId('vpns').querySelector('tbody'),
    vpns.length
      ? vpns.map((v) => {
          const clients = templates.filter((t) => t.vpn === v.id);
          return h(
            'tr',
            { dataset: { vpnId: v.id } },
            h('td', {}, v.name),
            h('td', { title: v.backend }, backendName(v.backend)),
            h('td', { class: 'mono' }, v.host || '—'),
            h(
              'td',
              { class: 'hide-narrow wrap' },
              v.ca !== null && v.ca !== undefined ? h('span', { class: 'ca-name', dataset: { ca: String(v.ca) } }, `CA #${v.ca}`) : null,
              v.ca !== null && v.ca !== undefined && v.cert !== null && v.cert !== undefined ? ' · ' : null,
              v.cert !== null && v.cert !== undefined ? h('span', { class: 'cert-name', dataset: { cert: String(v.cert) } }, `certificate #${v.cert}`) : null,
              (v.ca === null || v.ca === undefined) && (v.cert === null || v.cert === undefined) ? h('span', { class: 'muted' }, v.public_key ? `key ${v.public_key.slice(0, 12)}…` : '—') : null,
            ),
            h('td', { class: 'hide-narrow mono' }, [v.subnet, v.ip].filter(Boolean).join(' · ') || '—'),
            h('td', { class: 'hide-narrow wrap chips' }, clients.length ? clients.map((t) => templateChip(t.id)) : h('span', { class: 'muted' }, 'none')),
            h('td', { class: multiOrg ? 'org-column' : 'org-column hidden' }, organizationText(v.organization)),
          );
        })
      : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No VPN servers.')),
  );
}

/** Replaces "CA #3" and "certificate #7" by their names (when the user may see them). */
async function nameCertificates() {
  const lookups = [];
  for (const id of new Set(vpns.map((v) => v.ca).filter((x) => x !== null && x !== undefined))) {
    lookups.push(['ca', id, `${C}/ca/${id}/`]);
  }
  for (const id of new Set(vpns.map((v) => v.cert).filter((x) => x !== null && x !== undefined))) {
    lookups.push(['cert', id, `${C}/cert/${id}/`]);
  }
  await api.pool(lookups, 4, async ([kind, id, path]) => {
    try {
      const answer = await api.get(path);
      const name = answer.name || (answer.x509 && answer.x509.name);
      if (!name) return;
      for (const span of byId('vpns').querySelectorAll(`span[data-${kind}="${id}"]`)) {
        span.textContent = kind === 'ca' ? `CA ${name}` : `certificate ${name}`;
        span.title = `${kind === 'ca' ? 'CA' : 'Certificate'} #${id}`;
      }
    } catch {
      // Not visible to this user: the id stays.
    }
  });
}

