// Software (the OTAO API, which takes the console's session like every route): applications
// and their versions, what each device runs and its installations, and the endpoint filters.
//
// The API has no list of applications (only /applications/{appName}/...), so the applications
// shown are those the listed devices run (GET /endpoints/{id}/software, a few at a time) and
// those looked up by name, remembered in this browser. The chosen application, device, search
// and page are in the address.

import * as api from './api.js';
import { start, orgName } from './layout.js';
import { h, fill, byId, badge, ago, when, showError, panelError } from './dom.js';

const OTAO = '/api/v1';
const C = '/api/v1/controller';
const PAGE_SIZE = 50;
const REMEMBERED_KEY = 'fleetmq.software.apps';
const REMEMBERED_MAX = 20;

const ctx = await start('software');
const multiOrg = ctx.organizations.length > 1 && !ctx.organization;
const apps = new Map(); // "org/name" → { org, name, versions, settings, error, devices }
let state = readState();
let devices = { count: 0, results: [], next: null, previous: null };
const running = new Map(); // device id → [{appName, version}] | Error
let groups = [];
let filters = [];
let loading = 0;
let detailTicket = 0;

for (const column of document.querySelectorAll('.org-column')) column.classList.toggle('hidden', !multiOrg);
setupLookup();
byId('app-lookup').addEventListener('submit', lookUp);
byId('versions-close').addEventListener('click', () => chooseApp(null));
byId('endpoint-close').addEventListener('click', () => chooseDevice(''));
let typing;
byId('endpoint-filters').addEventListener('input', () => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    state.search = byId('endpoint-filters').elements.search.value.trim();
    state.page = 1;
    loadDevices();
  }, 250);
});
byId('endpoint-filters').addEventListener('submit', (event) => event.preventDefault());
byId('previous').addEventListener('click', () => {
  state.page = Math.max(1, state.page - 1);
  loadDevices();
});
byId('next').addEventListener('click', () => {
  state.page += 1;
  loadDevices();
});
window.addEventListener('popstate', async () => {
  state = readState();
  byId('endpoint-filters').elements.search.value = state.search;
  await loadDevices(false);
  drawVersions();
});

byId('endpoint-filters').elements.search.value = state.search;
for (const remembered of readRemembered()) addApp(remembered.org, remembered.name);
if (state.app && state.org) addApp(state.org, state.app);
await Promise.all([loadDevices(false), loadFilters()]);

// ---- the address ----

function readState() {
  const query = new URLSearchParams(window.location.search);
  return {
    app: query.get('app') || '',
    org: query.get('org') || '',
    device: query.get('device') || '',
    search: query.get('search') || '',
    page: Math.max(1, Number.parseInt(query.get('page') || '1', 10) || 1),
  };
}

function pushState() {
  const query = new URLSearchParams();
  if (state.app) {
    query.set('app', state.app);
    query.set('org', state.org);
  }
  if (state.device) query.set('device', state.device);
  if (state.search) query.set('search', state.search);
  if (state.page > 1) query.set('page', String(state.page));
  const text = query.toString();
  history.pushState(null, '', text ? `?${text}` : window.location.pathname);
}

// ---- helpers ----

/** OTAO errors are {"message": ...}: show that message. */
function otaoError(error) {
  if (error && error.body && typeof error.body.message === 'string') error.message = error.body.message;
  return error;
}

function inScope(org) {
  return ctx.organization ? org === ctx.organization : ctx.organizations.some((o) => o.id === org) || ctx.session.is_superuser;
}

function appKey(org, name) {
  return `${org}/${name}`;
}

function appPath(name) {
  return `${OTAO}/applications/${encodeURIComponent(name)}`;
}

function flag(name) {
  return h('span', { class: 'flag', dataset: { flag: name } }, name);
}

function readRemembered() {
  try {
    const list = JSON.parse(localStorage.getItem(REMEMBERED_KEY) || '[]');
    return Array.isArray(list) ? list.filter((a) => a && typeof a.org === 'string' && typeof a.name === 'string' && inScope(a.org)) : [];
  } catch {
    return [];
  }
}

function remember(org, name) {
  let list;
  try {
    list = JSON.parse(localStorage.getItem(REMEMBERED_KEY) || '[]');
    if (!Array.isArray(list)) list = [];
  } catch {
    list = [];
  }
  list = [{ org, name }, ...list.filter((a) => !(a.org === org && a.name === name))].slice(0, REMEMBERED_MAX);
  localStorage.setItem(REMEMBERED_KEY, JSON.stringify(list));
}

function forget(org, name) {
  try {
    const list = JSON.parse(localStorage.getItem(REMEMBERED_KEY) || '[]');
    localStorage.setItem(REMEMBERED_KEY, JSON.stringify(list.filter((a) => !(a.org === org && a.name === name))));
  } catch {
    // nothing remembered
  }
}

// ---- applications ----

function addApp(org, name) {
  const key = appKey(org, name);
  if (!apps.has(key)) apps.set(key, { org, name, versions: null, settings: null, error: null, devices: 0, loading: null });
  return apps.get(key);
}

/** An application's versions and settings (once). */
function loadApp(app) {
  if (!app.loading) {
    app.loading = (async () => {
      try {
        const versions = await api.get(`${appPath(app.name)}/software`, { organization: app.org });
        const settings = await api.get(appPath(app.name), { organization: app.org }).catch(() => null);
        app.versions = Array.isArray(versions) ? versions : [];
        app.settings = settings;
        app.error = null;
      } catch (error) {
        app.error = otaoError(error);
        app.versions = [];
      }
    })();
  }
  return app.loading;
}

async function loadApps() {
  const list = [...apps.values()];
  drawApps();
  await api.pool(list, 4, async (app) => {
    await loadApp(app);
    drawApps();
  });
  drawVersions();
}

function sortedApps() {
  return [...apps.values()].sort((a, b) => a.name.localeCompare(b.name) || orgName(ctx.organizations, a.org).localeCompare(orgName(ctx.organizations, b.org)));
}

function drawApps() {
  const list = sortedApps();
  byId('applications-summary').textContent = list.length ? String(list.length) : '';
  const chosen = state.app ? appKey(state.org, state.app) : '';
  fill(
    byId('applications').querySelector('tbody'),
    list.length
      ? list.map((app) => {
          const key = appKey(app.org, app.name);
          const latest = app.versions && app.versions.length ? app.versions[app.versions.length - 1] : null;
          return h(
            'tr',
            {
              dataset: { appKey: key, appName: app.name },
              class: key === chosen ? 'selected' : undefined,
              'aria-selected': key === chosen ? 'true' : 'false',
              onclick: (event) => {
                if (event.ctrlKey || event.metaKey || event.shiftKey || event.button > 0) return; // a new tab
                event.preventDefault();
                chooseApp(key === chosen ? null : app);
              },
            },
            h('td', {}, h('a', { href: `?app=${encodeURIComponent(app.name)}&org=${app.org}` }, app.name)),
            h('td', { class: multiOrg ? 'org-column' : 'org-column hidden' }, orgName(ctx.organizations, app.org)),
            h('td', { class: 'numeric' }, app.versions === null ? '…' : app.error ? '—' : String(app.versions.length)),
            h(
              'td',
              { class: 'mono', title: app.error ? app.error.message : undefined },
              app.versions === null ? '…' : app.error ? h('span', { class: 'muted' }, app.error.status === 404 ? 'not in the catalogue' : 'unavailable') : latest ? [latest.version, ' ', flag(latest.rolloutStrategy)] : '—',
            ),
            h('td', { class: 'hide-narrow' }, app.settings ? (app.settings.consentRequired ? 'required' : 'not required') : '—'),
            h('td', { class: 'numeric hide-narrow' }, app.devices ? String(app.devices) : '—'),
          );
        })
      : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No application found on the devices listed: look one up by name.')),
  );
}

function chooseApp(app) {
  state.app = app ? app.name : '';
  state.org = app ? app.org : '';
  pushState();
  drawApps();
  drawVersions();
  if (app) byId('versions-panel').scrollIntoView({ block: 'nearest' });
}

async function drawVersions() {
  const panel = byId('versions-panel');
  const app = state.app ? apps.get(appKey(state.org, state.app)) : null;
  panel.classList.toggle('hidden', !app);
  if (!app) return;
  panel.dataset.appName = app.name;
  byId('versions-title').textContent = multiOrg ? `${app.name} (${orgName(ctx.organizations, app.org)})` : app.name;
  if (app.versions === null) {
    byId('app-settings').textContent = 'Loading…';
    fill(byId('versions').querySelector('tbody'));
    await loadApp(app);
    drawApps();
    if (state.app !== app.name || state.org !== app.org) return;
  }
  panelError('versions-panel', app.error);
  byId('app-settings').textContent = app.error
    ? ''
    : `${app.versions.length} ${app.versions.length === 1 ? 'version' : 'versions'}, lowest first. Consent ${app.settings && app.settings.consentRequired ? 'required: devices must accept an offer before delivery' : 'not required'}.`;
  const filterName = (id) => {
    const f = filters.find((x) => x.filterId === id);
    return f ? f.name : `${id.slice(0, 8)}…`;
  };
  fill(
    byId('versions').querySelector('tbody'),
    app.versions.length
      ? app.versions.map((v) =>
          h(
            'tr',
            { dataset: { version: v.version } },
            h('td', { class: 'mono' }, v.version),
            h(
              'td',
              { class: 'wrap' },
              flag(v.rolloutStrategy),
              v.filters && v.filters.length
                ? h(
                    'div',
                    { class: 'chips' },
                    v.filters.map((f) => h('span', { class: 'chip', title: f.rolloutDate ? `from ${when(f.rolloutDate)}` : 'at once' }, filterName(f.filterId), f.rolloutDate ? ` · ${when(f.rolloutDate)}` : '')),
                  )
                : null,
            ),
            h('td', { class: 'hide-narrow mono wrap' }, v.upgradableFrom && v.upgradableFrom.length ? v.upgradableFrom.join(', ') : '—'),
            h('td', { class: 'hide-narrow wrap small-text' }, limits(v.rollout)),
            h(
              'td',
              { class: 'spec' },
              h('details', { class: 'spec' }, h('summary', {}, 'Specification'), h('pre', { class: 'json small' }, JSON.stringify(v.specification, null, 2))),
              v.metadata !== null && v.metadata !== undefined
                ? h('details', { class: 'spec' }, h('summary', {}, 'Metadata'), h('pre', { class: 'json small' }, JSON.stringify(v.metadata, null, 2)))
                : null,
            ),
          ),
        )
      : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, app.error ? '—' : 'No versions.')),
  );
}

function limits(rollout) {
  if (!rollout) return h('span', { class: 'muted' }, 'none');
  const parts = [];
  if (rollout.maxParallel) parts.push(`${rollout.maxParallel} at once`);
  if (rollout.ratePerMinute) parts.push(`${rollout.ratePerMinute}/min`);
  if (rollout.abortThreshold) parts.push(`stop above ${Math.round(rollout.abortThreshold.failureRate * 100)} % failed (after ${rollout.abortThreshold.minSample})`);
  return parts.join(' · ') || '—';
}

function setupLookup() {
  const select = byId('app-organization');
  if (ctx.organization || ctx.organizations.length === 1) {
    const only = ctx.organization || ctx.organizations[0].id;
    fill(select, h('option', { value: only }, orgName(ctx.organizations, only)));
    select.classList.add('hidden');
    return;
  }
  fill(select, h('option', { value: '' }, 'Organization…'), ctx.organizations.map((o) => h('option', { value: o.id }, o.name)));
}

async function lookUp(event) {
  event.preventDefault();
  const input = byId('app-name');
  const select = byId('app-organization');
  const name = input.value.trim();
  if (!name) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  if (!select.value) {
    select.setAttribute('aria-invalid', 'true');
    showError(new Error('Choose the organization of the application.'));
    select.focus();
    return;
  }
  input.removeAttribute('aria-invalid');
  select.removeAttribute('aria-invalid');
  const org = select.value;
  const key = appKey(org, name);
  const known = apps.get(key);
  // A fresh look at an application looked up before.
  if (known && known.error) apps.delete(key);
  const app = addApp(org, name);
  byId('app-lookup-submit').disabled = true;
  try {
    await loadApp(app);
    if (app.error) {
      if (!app.devices) {
        apps.delete(key);
        forget(org, name);
      }
      showError(app.error.status === 404 ? new Error(`No application "${name}" in ${orgName(ctx.organizations, org)}.`) : app.error);
      drawApps();
      return;
    }
    showError(null);
    remember(org, name);
    input.value = '';
    chooseApp(app);
  } finally {
    byId('app-lookup-submit').disabled = false;
  }
}

// ---- devices (endpoints) ----

async function loadDevices(push = true) {
  const ticket = ++loading;
  if (push) pushState();
  byId('endpoints').setAttribute('aria-busy', 'true');
  try {
    const answer = await api.get(`${C}/device/`, {
      page: state.page,
      page_size: PAGE_SIZE,
      organization: ctx.organization,
      search: state.search,
      ordering: 'name',
    });
    if (ticket !== loading) return;
    devices = answer;
    panelError('endpoints-panel', null);
    drawDevices();
    drawEndpoint();
    await loadRunning(ticket);
  } catch (error) {
    if (ticket !== loading) return;
    if (error.status === 404 && state.page > 1) {
      state.page = 1;
      loadDevices();
      return;
    }
    panelError('endpoints-panel', error);
  } finally {
    if (ticket === loading) byId('endpoints').removeAttribute('aria-busy');
  }
}

/** What each listed device runs; the applications found join the list above. */
async function loadRunning(ticket) {
  let refused = null;
  await api.pool(devices.results.filter((d) => !running.has(d.id)), 6, async (device) => {
    if (ticket !== loading) return;
    try {
      running.set(device.id, await api.get(`${OTAO}/endpoints/${device.id}/software`));
    } catch (error) {
      running.set(device.id, otaoError(error));
      if (error.status === 403) refused = error;
    }
    drawRunning(device);
  });
  if (ticket !== loading) return;
  if (refused) panelError('endpoints-panel', refused);
  for (const app of apps.values()) app.devices = 0;
  for (const device of devices.results) {
    const list = running.get(device.id);
    if (!Array.isArray(list)) continue;
    for (const s of list) addApp(device.organization, s.appName).devices += 1;
  }
  await loadApps();
}

function drawDevices() {
  const list = devices.results || [];
  fill(
    byId('endpoints').querySelector('tbody'),
    list.length
      ? list.map((d) => {
          const presence = d.presence && d.presence.online ? 'online' : 'offline';
          return h(
            'tr',
            {
              dataset: { deviceId: d.id },
              class: d.id === state.device ? 'selected' : undefined,
              'aria-selected': d.id === state.device ? 'true' : 'false',
              onclick: (event) => {
                if (event.ctrlKey || event.metaKey || event.shiftKey || event.button > 0) return; // a new tab
                if (event.target.closest('a.chip')) return;
                event.preventDefault();
                chooseDevice(d.id === state.device ? '' : d.id);
              },
            },
            h('td', {}, h('a', { href: `?device=${d.id}` }, d.name)),
            h('td', { class: multiOrg ? 'org-column' : 'org-column hidden' }, orgName(ctx.organizations, d.organization)),
            h('td', { class: 'hide-narrow' }, d.presence ? badge(presence) : '—'),
            h('td', { class: 'wrap chips runs' }, '…'),
          );
        })
      : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, state.search ? 'No devices match.' : 'No devices.')),
  );
  for (const d of list) if (running.has(d.id)) drawRunning(d);
  const pages = Math.max(1, Math.ceil(devices.count / PAGE_SIZE));
  byId('page-info').textContent = `Page ${state.page} of ${pages} · ${devices.count.toLocaleString()} devices`;
  byId('endpoints-summary').textContent = devices.count.toLocaleString();
  byId('previous').disabled = !devices.previous;
  byId('next').disabled = !devices.next;
}

function drawRunning(device) {
  const cell = byId('endpoints').querySelector(`tr[data-device-id="${device.id}"] td.runs`);
  if (!cell) return;
  const list = running.get(device.id);
  if (!Array.isArray(list)) {
    fill(cell, h('span', { class: 'muted', title: list ? list.message : '' }, '—'));
    return;
  }
  fill(
    cell,
    list.length
      ? list.map((s) =>
          h(
            'a',
            {
              class: 'chip',
              href: `?app=${encodeURIComponent(s.appName)}&org=${device.organization}`,
              onclick: (event) => {
                if (event.ctrlKey || event.metaKey || event.shiftKey || event.button > 0) return;
                event.preventDefault();
                chooseApp(addApp(device.organization, s.appName));
              },
            },
            `${s.appName} ${s.version}`,
          ),
        )
      : h('span', { class: 'muted' }, 'nothing reported'),
  );
}

function chooseDevice(id) {
  state.device = id;
  pushState();
  for (const row of byId('endpoints').querySelectorAll('tbody tr[data-device-id]')) {
    const on = row.dataset.deviceId === id;
    row.classList.toggle('selected', on);
    row.setAttribute('aria-selected', on ? 'true' : 'false');
  }
  drawEndpoint();
  if (id) byId('endpoint-detail').scrollIntoView({ block: 'nearest' });
}

async function drawEndpoint() {
  const ticket = ++detailTicket;
  const panel = byId('endpoint-detail');
  panel.classList.toggle('hidden', !state.device);
  if (!state.device) return;
  const id = state.device;
  panel.dataset.deviceId = id;
  let device = devices.results.find((d) => d.id === id);
  byId('endpoint-link').href = `/devices/${id}/`;
  byId('endpoint-title').textContent = device ? device.name : 'Device';
  const softwareBody = byId('endpoint-software').querySelector('tbody');
  const installationsBody = byId('installations').querySelector('tbody');
  fill(softwareBody, h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'Loading…')));
  fill(installationsBody, h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'Loading…')));
  byId('installations-summary').textContent = '';
  try {
    if (!device) {
      device = await api.get(`${C}/device/${id}/`);
      if (ticket !== detailTicket) return;
      byId('endpoint-title').textContent = device.name;
    }
    const [software, installations] = await Promise.all([
      api.get(`${OTAO}/endpoints/${id}/software`),
      api.get(`${OTAO}/endpoints/${id}/software/installations`),
    ]);
    if (ticket !== detailTicket) return;
    panelError('endpoint-detail', null);
    const catalogue = await Promise.all(
      software.map(async (s) => {
        const app = addApp(device.organization, s.appName);
        await loadApp(app);
        return app.error ? null : app.versions.some((v) => v.version === s.version);
      }),
    );
    if (ticket !== detailTicket) return;
    drawApps();
    fill(
      softwareBody,
      software.length
        ? software.map((s, i) =>
            h(
              'tr',
              { dataset: { appName: s.appName } },
              h('td', {}, s.appName),
              h('td', { class: 'mono' }, s.version),
              h('td', {}, catalogue[i] === null ? h('span', { class: 'muted' }, 'no such application') : catalogue[i] ? 'yes' : h('span', { class: 'muted' }, 'not published')),
            ),
          )
        : h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'The device reports no software.')),
    );
    byId('installations-summary').textContent = installations.length ? String(installations.length) : '';
    fill(
      installationsBody,
      installations.length
        ? installations.map((i) =>
            h(
              'tr',
              { dataset: { installationId: i.id, status: i.status } },
              h('td', {}, i.appName),
              h(
                'td',
                { class: 'mono wrap' },
                `${i.from || '—'} → ${i.version}`,
                i.log ? h('details', { class: 'installation-log' }, h('summary', {}, 'Log'), h('pre', { class: 'log' }, i.log)) : null,
              ),
              h('td', {}, badge(i.status)),
              h('td', { class: 'hide-narrow' }, badge(i.step)),
              h('td', { class: 'hide-narrow', title: `created ${when(i.created)}, changed ${when(i.modified)}` }, ago(i.modified)),
            ),
          )
        : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No installations.')),
    );
  } catch (error) {
    if (ticket !== detailTicket) return;
    fill(softwareBody);
    fill(installationsBody);
    panelError('endpoint-detail', otaoError(error));
  }
}

// ---- filters ----

async function loadFilters() {
  try {
    const [list, groupList] = await Promise.all([
      api.all(`${OTAO}/filters`, { organization: ctx.organization }),
      api.all(`${C}/group/`, { organization: ctx.organization }).catch(() => []),
    ]);
    filters = list.sort((a, b) => a.name.localeCompare(b.name));
    groups = groupList;
    drawFilters();
    drawVersions();
    await api.pool(filters, 4, async (f) => {
      let count = null;
      try {
        count = (await api.get(`${OTAO}/filters/${f.filterId}/endpoints`, { page_size: 1 })).count;
      } catch {
        count = null;
      }
      const cell = byId('filters').querySelector(`tr[data-filter-id="${f.filterId}"] td.matching`);
      if (cell) cell.textContent = count === null ? '—' : count.toLocaleString();
    });
  } catch (error) {
    panelError('filters-panel', otaoError(error));
  }
}

function criteria(f) {
  const parts = [];
  if (f.group) {
    const g = groups.find((x) => x.id === f.group);
    parts.push(['group', g ? g.name : f.group]);
  }
  if (f.location) parts.push(['location', f.location.slice(0, 8)]);
  if (f.model) parts.push(['model', f.model]);
  if (f.os) parts.push(['OS', f.os]);
  if (f.hardwareId) parts.push(['hardware id', f.hardwareId]);
  for (const [key, value] of Object.entries(f.metadata || {})) parts.push([`variable ${key}`, value]);
  if (f.devices && f.devices.length) parts.push(['devices', `${f.devices.length} chosen`]);
  return parts.length ? parts.map(([k, v]) => h('span', { class: 'chip' }, `${k}: ${v}`)) : h('span', { class: 'muted' }, 'every device');
}

function drawFilters() {
  byId('filters-summary').textContent = filters.length ? String(filters.length) : '';
  fill(
    byId('filters').querySelector('tbody'),
    filters.length
      ? filters.map((f) =>
          h(
            'tr',
            { dataset: { filterId: f.filterId } },
            h('td', {}, f.name),
            h('td', { class: 'wrap chips' }, criteria(f)),
            h('td', { class: multiOrg ? 'org-column' : 'org-column hidden' }, orgName(ctx.organizations, f.organization)),
            h('td', { class: 'numeric matching' }, '…'),
          ),
        )
      : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No endpoint filters.')),
  );
}
