// One device: /devices/{id}/. Identity and key, presence (live), coordinates on a small map,
// telemetry (latest and a chart of the history), commands (send, and their results live),
// firmware and upgrade operations, configuration status and download. Every panel loads on
// its own, so one that the user may not see (403) or that has nothing (404) leaves the rest.

import * as api from './api.js';
import * as live from './live.js';
import { start, orgName } from './layout.js';
import { h, fill, byId, badge, when, ago, showError, showInfo, pathId, escapeHtml, pointOf } from './dom.js';
import uPlot from '/console/vendor/uplot/uPlot.esm.js';

const id = pathId();
const DEVICE = `/api/v1/controller/device/${encodeURIComponent(id)}`;
const FIRMWARE = `/api/v1/firmware-upgrader/device/${encodeURIComponent(id)}`;
const MQTT_STRATEGY = 'fleetmq.connection.update_strategies.mqtt';
const COMMANDS_SHOWN = 20;
const UPGRADES_SHOWN = 10;
const TELEMETRY_PAGES = 20; // at most 20 pages of 100 samples for the chart
const CHARTS_MAX = 12; // numeric fields charted
const BUILDS_SCANNED = 15; // builds searched to name an image (the API has no image-by-id route)
const POLL_MS = 30_000;
const COLORS = ['#1f6feb', '#1a7f37', '#cf222e', '#9a6700', '#8250df', '#0a7ea4', '#bf3989', '#57606a'];

const ctx = await start('fleet');
let device = null;
let presence = null; // {online, since} or null when never connected
let connection = null; // the MQTT connection's health, when the user may see connections
let history = []; // presence changes, newest first: {online, at, reason}
let historyCount = 0; // how many the server keeps
const HISTORY_ROWS = 20;
const commandRows = new Map(); // command id → row
const imageNames = new Map(); // image id → {category, version, type}, or null when not found

function failPage(error) {
  byId('device').classList.add('hidden');
  let title = 'Device';
  let message = error.message;
  if (error.status === 404) {
    title = 'Device not found';
    message = `There is no device with id “${id}”, or it belongs to an organization you do not manage.`;
  } else if (error.status === 403) {
    title = 'Access denied';
    message = `You may not see this device: ${error.message}`;
  }
  byId('device-name').textContent = title;
  byId('crumb-name').textContent = title;
  document.title = `${title} · fleetmq`;
  showError(new Error(message));
}

/** `fn` run one call at a time: a call while one runs shares its promise. */
function once(fn) {
  let running = null;
  return (...args) => {
    running ||= fn(...args).finally(() => {
      running = null;
    });
    return running;
  };
}

/* identity */

function drawIdentity() {
  byId('device-name').textContent = device.name;
  byId('crumb-name').textContent = device.name;
  document.title = `${device.name} · fleetmq`;
  if (device.is_deactivated) fill(byId('deactivated-badge'), badge('deactivated'));
  facts(byId('identity'), [
    ['Name', device.name, 'name'],
    ['MAC address', h('span', { class: 'mono' }, device.mac_address), 'mac'],
    ['ID', h('span', { class: 'mono' }, device.id), 'id'],
    ['Organization', orgName(ctx.organizations, device.organization), 'organization'],
    ['Model', device.model || '—', 'model'],
    ['OS', device.os || '—', 'os'],
    ['System', device.system || '—', 'system'],
    ['Hardware id', device.hardware_id || null, 'hardware-id'],
    ['Last IP', h('span', { class: 'mono' }, device.last_ip || '—'), 'last-ip'],
    ['Management IP', h('span', { class: 'mono' }, device.management_ip || '—'), 'management-ip'],
    ['Created', h('span', { title: ago(device.created) }, when(device.created)), 'created'],
    ['Config status', device.config ? badge(device.config.status) : 'no configuration', 'config-status'],
  ]);
}

/** Fills a <dl> from [label, value, key] rows; rows whose value is null are left out. */
function facts(dl, rows) {
  fill(
    dl,
    rows
      .filter(([, value]) => value !== null && value !== undefined)
      .map(([label, value, key]) => [
        h('dt', {}, label),
        h('dd', { dataset: key ? { field: key } : undefined }, value),
      ]),
  );
}

function setupKey() {
  const button = byId('reveal-key');
  const key = byId('device-key');
  button.disabled = false;
  button.addEventListener('click', () => {
    const reveal = key.dataset.revealed !== 'true';
    key.textContent = reveal ? device.key : '•'.repeat(16);
    key.dataset.revealed = String(reveal);
    button.textContent = reveal ? 'Hide key' : 'Reveal key';
    button.setAttribute('aria-pressed', String(reveal));
  });
}

/* presence */

async function loadPresence(refetch = false) {
  // The device's `presence` ({online, since}) says whether it is connected; the MQTT
  // connection's health says the same and adds the last failure.
  let connections = [];
  try {
    connections = await api.all(`${DEVICE}/connection/`);
  } catch (error) {
    if (error.status !== 403 && error.status !== 404) showError(error);
  }
  connection =
    connections.find((c) => c.update_strategy === MQTT_STRATEGY) ||
    connections.find((c) => c.is_working !== null) ||
    null;
  if (refetch) {
    try {
      const fresh = await api.get(`${DEVICE}/`);
      device.presence = fresh.presence;
    } catch {
      // the page keeps what it has
    }
  }
  try {
    const page = await api.get(`${DEVICE}/presence/`, { page_size: HISTORY_ROWS });
    history = page.results || [];
    historyCount = page.count || 0;
  } catch (error) {
    if (error.status !== 403 && error.status !== 404) showError(error);
  }
  let current = device.presence || null;
  if (!current && connection && connection.is_working !== null) {
    current = { online: connection.is_working === true, since: connection.last_attempt };
  }
  setPresence(current, false);
}

function setPresence(next, fromEvent) {
  if (next) {
    const last = history[0];
    if (fromEvent && (!last || last.online !== next.online)) {
      history.unshift({ online: next.online, at: next.since, reason: '' });
      history.length = Math.min(history.length, HISTORY_ROWS);
      historyCount += 1;
    }
    presence = next;
  }
  if (fromEvent && connection) {
    connection.is_working = next.online;
    connection.last_attempt = next.since;
    if (next.online) connection.failure_reason = '';
  }
  drawPresence();
  if (deviceMarker) {
    deviceMarker.setStyle(markerStyle());
    tagMarker();
  }
}

function drawPresence() {
  // No presence at all: never connected when the connection was never tried, else unknown.
  const status = presence ? (presence.online ? 'online' : 'offline') : 'unknown';
  const never = presence ? !presence.online && !presence.since : Boolean(connection && connection.is_working === null);
  const label = never ? 'never connected' : status;
  fill(byId('presence-badge'), badge(status, label));
  byId('presence-badge').dataset.presence = status;
  const since = presence && presence.since;
  facts(byId('presence'), [
    ['Now', badge(status, label), 'state'],
    ['Since', since ? h('span', { title: when(since) }, `${when(since)} (${ago(since)})`) : '—', 'since'],
    connection ? ['Connection', connection.enabled ? 'MQTT, enabled' : 'MQTT, disabled', 'connection'] : [null, null],
    connection && connection.last_attempt ? ['Last session change', when(connection.last_attempt), 'last-attempt'] : [null, null],
    connection && connection.failure_reason ? ['Last failure', connection.failure_reason, 'failure-reason'] : [null, null],
  ]);
  fill(
    byId('presence-history'),
    history.length
      ? history.map((entry) =>
          h(
            'li',
            { dataset: { presence: entry.online ? 'online' : 'offline' } },
            badge(entry.online ? 'online' : 'offline'),
            ' at ',
            h('span', { title: entry.at ? ago(entry.at) : '' }, when(entry.at)),
            entry.reason ? h('span', { class: 'muted' }, ` — ${entry.reason}`) : null,
          ),
        )
      : h('li', { class: 'muted' }, 'No connection recorded yet.'),
  );
  byId('presence-note').textContent =
    historyCount > history.length
      ? `The latest ${history.length} of ${historyCount.toLocaleString()} changes kept (the server keeps a device's last 1,000).`
      : '';
}

/* location */

let settings = null;
let deviceMap = null;
let deviceMarker = null;

async function loadSettings() {
  if (!settings) {
    try {
      settings = await api.get('/console/settings.json');
    } catch {
      settings = { tile_url: '', tile_attribution: '' };
    }
  }
  return settings;
}

let located = null; // whether the device has a location: true, false, or not known yet
let locatedChecked = 0;

/**
 * Whether the device has a location, from the device list's `with_geo` filter (so that a
 * device without coordinates costs no 404): true, false, or null when the list cannot tell.
 */
async function hasLocation() {
  try {
    const answer = await api.get('/api/v1/controller/device/', {
      with_geo: 'true',
      search: device.id,
      organization: device.organization,
      page_size: 1,
    });
    const results = answer.results || [];
    if (results.some((d) => d.id === device.id)) return true;
    if (!results.length) return false;
  } catch {
    // ask the coordinates themselves
  }
  return null;
}

/** Loads the coordinates (one load at a time: the map is made once). */
const loadCoordinates = once(fetchCoordinates);

async function fetchCoordinates() {
  const note = byId('coordinates');
  const mapBox = byId('device-map');
  const none = () => {
    note.textContent = 'This device has reported no coordinates.';
    mapBox.classList.toggle('hidden', !deviceMap);
  };
  if (located !== true) {
    // Devices without a location are asked again every five minutes, not at every poll.
    if (located === false && Date.now() - locatedChecked < 300_000) return;
    locatedChecked = Date.now();
    located = await hasLocation();
    if (located === false) {
      none();
      return;
    }
  }
  let feature;
  try {
    feature = await api.get(`${DEVICE}/coordinates/`);
  } catch (error) {
    if (error.status === 404) {
      located = false;
      none();
    } else if (error.status === 403) {
      located = false;
      locatedChecked = Date.now() + 3_600_000;
      note.textContent = 'You may not see where this device is.';
      mapBox.classList.toggle('hidden', !deviceMap);
    } else {
      note.textContent = `Coordinates could not be loaded: ${error.message}`;
    }
    return;
  }
  located = true;
  const point = pointOf(feature && feature.geometry);
  if (!point) {
    note.textContent = 'This device has no usable coordinates.';
    mapBox.classList.toggle('hidden', !deviceMap);
    return;
  }
  mapBox.classList.remove('hidden');
  const [lat, lng] = point;
  note.textContent = `${lat.toFixed(5)}, ${lng.toFixed(5)}${feature.properties && feature.properties.name ? ` · ${feature.properties.name}` : ''}`;
  if (!window.L) {
    note.textContent += ' (the map library did not load)';
    return;
  }
  if (!deviceMap) {
    const { tile_url: tiles, tile_attribution: attribution } = await loadSettings();
    deviceMap = window.L.map(mapBox, { scrollWheelZoom: false }).setView([lat, lng], 14);
    if (tiles) {
      window.L.tileLayer(tiles, { maxZoom: 19, attribution: escapeHtml(attribution || '') }).addTo(deviceMap);
    }
    deviceMarker = window.L.circleMarker([lat, lng], markerStyle()).addTo(deviceMap);
    deviceMarker.on('add', tagMarker);
    tagMarker();
  } else {
    deviceMarker.setLatLng([lat, lng]);
    deviceMarker.setStyle(markerStyle());
    tagMarker();
    if (!deviceMap.getBounds().contains([lat, lng])) deviceMap.panTo([lat, lng]);
  }
}

const MARKER = {
  online: { color: '#0b4f22', fillColor: '#1a7f37' },
  offline: { color: '#6e2b2b', fillColor: '#b5625f' },
  unknown: { color: '#57606a', fillColor: '#8c959f' },
};

function presenceStatus() {
  if (!presence) return 'unknown';
  return presence.online ? 'online' : 'offline';
}

function markerStyle() {
  return { radius: 9, weight: 2, fillOpacity: 0.85, className: 'device-marker', ...MARKER[presenceStatus()] };
}

function tagMarker() {
  const el = deviceMarker && deviceMarker.getElement && deviceMarker.getElement();
  if (el) {
    el.dataset.device = device.id;
    el.dataset.presence = presenceStatus();
  }
}

/* telemetry */

let samples = []; // oldest first
let plots = [];
let plotFields = [];
let telemetryTicket = 0;
let resizeWatch = null;

async function loadTelemetry(quiet = false) {
  const ticket = ++telemetryTicket;
  const range = Number(byId('telemetry-range').value) || 86400;
  const since = new Date(Date.now() - range * 1000).toISOString();
  const status = byId('telemetry-status');
  if (!quiet) status.textContent = 'Loading…';
  let latest = null;
  let count = 0;
  const collected = [];
  let truncated = false;
  try {
    let path = `${DEVICE}/telemetry/?${new URLSearchParams({ since, page_size: '100' })}`;
    for (let page = 0; path; page += 1) {
      if (page === TELEMETRY_PAGES) {
        truncated = true;
        break;
      }
      const answer = await api.get(path);
      if (ticket !== telemetryTicket) return;
      if (page === 0) {
        latest = answer.latest;
        count = answer.count;
      }
      collected.push(...(answer.results || []));
      path = answer.next ? localPath(answer.next) : null;
    }
  } catch (error) {
    if (ticket !== telemetryTicket) return;
    status.textContent = error.status === 403 ? 'You may not see this device’s telemetry.' : `Telemetry could not be loaded: ${error.message}`;
    return;
  }
  samples = collected.reverse();
  drawLatest(latest);
  drawCharts();
  const label = byId('telemetry-range').selectedOptions[0].textContent;
  if (!latest) {
    status.textContent = 'This device has sent no telemetry.';
  } else if (!count) {
    status.textContent = `No samples in the ${label}.`;
  } else {
    status.textContent = `${count.toLocaleString()} samples in the ${label}${truncated ? ` (the chart shows the newest ${samples.length.toLocaleString()})` : ''}.`;
  }
}

/** An absolute `next` link of the API, as a path on this origin. */
function localPath(link) {
  const url = new URL(link, window.location.origin);
  return url.pathname + url.search;
}

/** New samples since the newest one shown (polled: telemetry has no live event). */
async function pollTelemetry() {
  const last = samples.length ? samples[samples.length - 1].timestamp : null;
  if (!last) {
    await loadTelemetry(true);
    return;
  }
  const ticket = telemetryTicket;
  let answer;
  try {
    answer = await api.get(`${DEVICE}/telemetry/`, { since: last, page_size: 100 });
  } catch {
    return;
  }
  if (ticket !== telemetryTicket) return;
  const lastTime = Date.parse(last);
  const fresh = (answer.results || []).filter((s) => Date.parse(s.timestamp) > lastTime).reverse();
  drawLatest(answer.latest);
  if (!fresh.length) return;
  const range = Number(byId('telemetry-range').value) || 86400;
  const from = Date.now() - range * 1000;
  samples = samples.concat(fresh).filter((s) => Date.parse(s.timestamp) >= from);
  drawCharts();
}

function drawLatest(latest) {
  const box = byId('telemetry-latest');
  if (!latest) {
    box.replaceChildren();
    return;
  }
  const metrics = flatten(latest.metrics);
  fill(
    box,
    h(
      'div',
      { class: 'metric when', dataset: { field: 'timestamp' } },
      h('span', { class: 'metric-name' }, 'measured'),
      h('span', { class: 'metric-value', title: when(latest.timestamp) }, ago(latest.timestamp)),
    ),
    Object.entries(metrics).map(([name, value]) =>
      h(
        'div',
        { class: 'metric', dataset: { field: name } },
        h('span', { class: 'metric-name' }, name),
        h('span', { class: 'metric-value' }, formatValue(value)),
      ),
    ),
  );
}

function flatten(object, prefix = '', out = {}, depth = 0) {
  for (const [key, value] of Object.entries(object || {})) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === 'object' && !Array.isArray(value) && depth < 3) {
      flatten(value, name, out, depth + 1);
    } else {
      out[name] = value;
    }
  }
  return out;
}

function formatValue(value) {
  if (typeof value === 'number') return value.toLocaleString(undefined, { maximumFractionDigits: 3 });
  if (typeof value === 'string') return value;
  if (value === null || value === undefined) return '—';
  return JSON.stringify(value);
}

/** One small chart per numeric field (fields differ in scale), cursors in step. */
function drawCharts() {
  const box = byId('telemetry-chart');
  const rows = samples.map((s) => ({ t: Date.parse(s.timestamp) / 1000, m: flatten(s.metrics) }));
  const names = new Set();
  for (const row of rows) {
    for (const [name, value] of Object.entries(row.m)) {
      if (typeof value === 'number' && Number.isFinite(value)) names.add(name);
    }
  }
  const fields = [...names].sort().slice(0, CHARTS_MAX);
  // A pause much longer than the usual interval (the device was offline) breaks the lines.
  const steps = rows.slice(1).map((r, i) => r.t - rows[i].t).sort((a, b) => a - b);
  const gap = Math.max(1, 5 * (steps.length ? steps[Math.floor(steps.length / 2)] : 0));
  const points = [];
  rows.forEach((row, i) => {
    if (i && row.t - rows[i - 1].t > gap) points.push({ t: (row.t + rows[i - 1].t) / 2, m: {} });
    points.push(row);
  });
  const xs = points.map((r) => r.t);
  const series = fields.map((name) => points.map((r) => (typeof r.m[name] === 'number' && Number.isFinite(r.m[name]) ? r.m[name] : null)));
  if (fields.join('\n') === plotFields.join('\n') && plots.length) {
    plots.forEach((plot, i) => plot.setData([xs, series[i]]));
    return;
  }
  for (const plot of plots) plot.destroy();
  plots = [];
  plotFields = fields;
  box.replaceChildren();
  if (!rows.length || !fields.length) {
    if (rows.length) box.append(h('p', { class: 'muted small' }, 'No numeric fields to chart.'));
    return;
  }
  const width = chartWidth(box);
  fields.forEach((name, i) => {
    const holder = h('div', { class: 'chart', dataset: { field: name } });
    box.append(holder);
    const color = COLORS[i % COLORS.length];
    const plot = new uPlot(
      {
        title: name,
        width,
        height: 150,
        cursor: { sync: { key: `telemetry-${id}` } },
        scales: { x: { time: true } },
        legend: { show: true, live: true },
        series: [
          {},
          {
            label: name,
            stroke: color,
            width: 1.5,
            spanGaps: false,
            points: { show: rows.length <= 60, size: 4 },
            value: (u, v) => (v === null || v === undefined ? '—' : formatValue(v)),
          },
        ],
        axes: [{ stroke: '#5f6b7a', grid: { stroke: '#eaeef2' } }, { stroke: '#5f6b7a', grid: { stroke: '#eaeef2' }, size: axisSize }],
      },
      [xs, series[i]],
      holder,
    );
    plots.push(plot);
  });
  if (!resizeWatch && window.ResizeObserver) {
    let last = width;
    resizeWatch = new ResizeObserver(() => {
      const next = chartWidth(box);
      if (Math.abs(next - last) < 4) return;
      last = next;
      for (const plot of plots) plot.setSize({ width: next, height: 150 });
    });
    resizeWatch.observe(box);
  }
}

/** Room for the longest label of a y axis. */
function axisSize(u, values) {
  const longest = (values || []).reduce((max, v) => Math.max(max, String(v).length), 0);
  return Math.max(40, longest * 7 + 20);
}

function chartWidth(box) {
  return Math.max(240, Math.floor(box.clientWidth || box.getBoundingClientRect().width || 600));
}

/* commands */

function setupCommands() {
  const form = byId('command-form');
  const type = byId('command-type');
  const input = byId('command-input');
  const send = byId('command-send');
  const sync = () => {
    const custom = type.value === 'custom';
    input.classList.toggle('hidden', !custom);
    input.required = custom;
  };
  type.addEventListener('change', sync);
  sync();
  if (device.is_deactivated) {
    for (const el of form.elements) el.disabled = true;
    form.append(h('span', { class: 'muted small' }, 'Commands cannot be sent to a deactivated device.'));
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = type.value === 'custom' ? { type: 'custom', input: { command: input.value.trim() } } : { type: 'reboot' };
    if (body.type === 'custom' && !body.input.command) {
      input.focus();
      return;
    }
    send.disabled = true;
    try {
      const command = await api.post(`${DEVICE}/command/`, body);
      showError(null);
      upsertCommand(command, true);
      if (body.type === 'custom') input.value = '';
      flash(body.type === 'reboot' ? 'Reboot sent.' : 'Command sent.');
    } catch (error) {
      showError(error);
    } finally {
      send.disabled = false;
    }
  });
}

const loadCommands = once(fetchCommands);

/** A passing note in #messages, gone after a few seconds unless replaced. */
function flash(text) {
  showInfo(text);
  const box = byId('messages');
  const shown = box.firstChild;
  setTimeout(() => {
    if (box.firstChild === shown) showError(null);
  }, 5000);
}

async function fetchCommands() {
  const body = byId('command-list').querySelector('tbody');
  try {
    const answer = await api.get(`${DEVICE}/command/`, { page_size: COMMANDS_SHOWN });
    commandRows.clear();
    const commands = answer.results || [];
    const rows = commands.map((c) => {
      const row = commandRow(c);
      commandRows.set(c.id, row);
      return row;
    });
    fill(body, rows.length ? rows : emptyRow(5, 'No commands yet.'));
  } catch (error) {
    fill(body, emptyRow(5, error.status === 403 ? 'You may not see this device’s commands.' : `Commands could not be loaded: ${error.message}`));
  }
}

async function refreshCommand(commandId) {
  try {
    const command = await api.get(`${DEVICE}/command/${encodeURIComponent(commandId)}/`);
    upsertCommand(command, false);
  } catch {
    // gone, or no longer visible: the next reload tells
  }
}

function upsertCommand(command, fresh) {
  const body = byId('command-list').querySelector('tbody');
  const old = commandRows.get(command.id);
  const row = commandRow(command);
  if (old && old.isConnected) {
    // An answer that overtook the creation's own reply is not replaced by the older state.
    if (Date.parse(old.dataset.modified) > Date.parse(command.modified)) return;
    old.replaceWith(row);
  } else {
    body.querySelector('tr.empty')?.remove();
    body.prepend(row);
    while (body.rows.length > COMMANDS_SHOWN) {
      const last = body.rows[body.rows.length - 1];
      commandRows.delete(last.dataset.commandId);
      last.remove();
    }
  }
  commandRows.set(command.id, row);
  if (fresh) row.classList.add('fresh');
}

function commandRow(command) {
  const input =
    command.type === 'custom' && command.input && typeof command.input.command === 'string'
      ? h('code', {}, command.input.command)
      : command.type === 'change_password'
        ? '••••••'
        : '—';
  const row = h(
    'tr',
    { dataset: { commandId: command.id, status: command.status, modified: command.modified } },
    h('td', { title: when(command.created) }, ago(command.created)),
    h('td', {}, command.type),
    h('td', { class: 'input' }, input),
    h('td', { class: 'status' }, badge(command.status)),
    h('td', { class: 'output' }, command.output ? outputBlock(command.output) : h('span', { class: 'muted' }, command.status === 'in-progress' ? 'waiting…' : '—')),
  );
  return row;
}

/** Output or a log: short text as is, longer text folded under its first (or last) line. */
function outputBlock(text, last = false) {
  if (text.length <= 80 && !text.includes('\n')) return h('pre', { class: 'output inline' }, text);
  const lines = text.split('\n').filter((line) => line.trim());
  const line = (last ? lines[lines.length - 1] : lines[0]) || '';
  return h(
    'details',
    {},
    h('summary', {}, line.length > 48 ? `${line.slice(0, 48)}…` : line),
    h('pre', { class: 'output' }, text),
  );
}

function emptyRow(columns, text) {
  return h('tr', { class: 'empty' }, h('td', { colspan: columns, class: 'muted' }, text));
}

/* firmware */

let firmwareTimer = null;

const loadFirmware = once(fetchFirmware);

async function fetchFirmware() {
  const current = byId('firmware-current');
  const body = byId('upgrade-list').querySelector('tbody');
  let firmware = null;
  let operations = [];
  let firmwareNote = null;
  let operationsNote = null;
  try {
    const answer = await api.get(`${FIRMWARE}/upgrade-operation/`, { page_size: UPGRADES_SHOWN });
    operations = answer.results || [];
  } catch (error) {
    operationsNote = error.status === 403 ? 'You may not see upgrade operations.' : `Upgrade operations could not be loaded: ${error.message}`;
  }
  const none = 'No firmware image is assigned to this device.';
  if (!operationsNote && !operations.length) {
    // Assigning firmware always starts an operation: without any, there is none to ask for.
    firmwareNote = none;
  } else {
    try {
      firmware = await api.get(`${FIRMWARE}/firmware/`);
    } catch (error) {
      firmwareNote =
        error.status === 404 ? none : error.status === 403 ? 'You may not see this device’s firmware.' : `Firmware could not be loaded: ${error.message}`;
    }
  }
  const draw = () => {
    if (firmware) {
      facts(current, [
        ['Image', imageLabel(firmware.image, true), 'image'],
        ['Installed', firmware.installed ? badge('success', 'installed') : badge('in-progress', 'not yet installed'), 'installed'],
        ['Changed', h('span', { title: when(firmware.modified) }, ago(firmware.modified)), 'modified'],
        ['Reported OS', device.os || '—', 'os'],
      ]);
    } else {
      fill(current, h('dt', {}, 'Image'), h('dd', { class: 'muted', dataset: { field: 'image' } }, firmwareNote));
    }
    fill(
      body,
      operationsNote
        ? emptyRow(5, operationsNote)
        : operations.length
          ? operations.map(operationRow)
          : emptyRow(5, 'No upgrades yet.'),
    );
  };
  draw();
  const ids = [firmware && firmware.image, ...operations.map((op) => op.image)].filter(Boolean);
  if (ids.some((image) => !imageNames.has(image))) {
    await nameImages(ids);
    draw();
  }
  // No live event tells an upgrade's progress yet: follow a running one.
  clearTimeout(firmwareTimer);
  if (operations.some((op) => op.status === 'in-progress')) firmwareTimer = setTimeout(loadFirmware, 10_000);
}

function operationRow(op) {
  const bar = h('span', { class: op.status });
  bar.style.width = `${Math.max(0, Math.min(100, op.progress))}%`;
  return h(
    'tr',
    { dataset: { operationId: op.id, status: op.status } },
    h('td', { title: when(op.created) }, ago(op.created)),
    h('td', {}, imageLabel(op.image)),
    h('td', {}, badge(op.status), op.flagged ? [' ', badge('failed', 'needs attention')] : null),
    h('td', { class: 'progress' }, h('div', { class: 'bar', title: `${op.progress}%` }, bar), h('span', { class: 'muted small' }, `${op.progress}%`)),
    h('td', { class: 'output' }, op.log ? outputBlock(op.log, true) : '—'),
  );
}

/** An image by its build's version (long: category and type too), else its id's start. */
function imageLabel(image, long = false) {
  const known = imageNames.get(image);
  if (!known) return h('span', { class: 'mono', title: image }, image.slice(0, 8));
  const full = `${known.category ? `${known.category} · ` : ''}${known.version} · ${known.type}`;
  return h('span', { title: `${full} (${image})` }, long ? full : known.version);
}

/** Names images by their build (category, version, type): the API lists images per build only. */
async function nameImages(ids) {
  const wanted = new Set(ids.filter((image) => !imageNames.has(image)));
  if (!wanted.size) return;
  let builds;
  try {
    builds = (await api.get('/api/v1/firmware-upgrader/build/', { page_size: 100 })).results || [];
  } catch {
    return;
  }
  for (const build of builds.slice(0, BUILDS_SCANNED)) {
    if (!wanted.size) break;
    let images;
    try {
      images = (await api.get(`/api/v1/firmware-upgrader/build/${build.id}/image/`, { page_size: 100 })).results || [];
    } catch {
      continue;
    }
    const category = build.category_relation && build.category_relation.name;
    for (const image of images) {
      imageNames.set(image.id, { category, version: build.version, type: image.type });
      wanted.delete(image.id);
    }
  }
  for (const image of wanted) imageNames.set(image, null); // not searched again on this page
}

/* configuration */

function drawConfiguration() {
  const config = device.config;
  const link = byId('config-download');
  if (!config) {
    facts(byId('configuration'), [['Status', 'This device has no configuration.', 'status']]);
    link.classList.add('hidden');
    return;
  }
  facts(byId('configuration'), [
    ['Status', badge(config.status), 'status'],
    config.status === 'error' && config.error_reason ? ['Error', config.error_reason, 'error-reason'] : [null, null],
    ['Backend', config.backend, 'backend'],
    ['Templates', String((config.templates || []).length), 'templates'],
    ['Device changed', h('span', { title: when(device.modified) }, ago(device.modified)), 'modified'],
  ]);
  link.href = `${DEVICE}/configuration/`;
  link.classList.remove('hidden');
}

/* periodic */

function tick() {
  if (document.visibilityState === 'hidden') return;
  drawPresence(); // ages
  pollTelemetry();
  loadCoordinates();
}

/* start */

try {
  device = await api.get(`${DEVICE}/`);
} catch (error) {
  failPage(error);
}

if (device) {
  drawIdentity();
  drawConfiguration();
  setupKey();
  setupCommands();
  byId('device').removeAttribute('aria-busy');

  live.on('presence', (event) => {
    if (event.device !== device.id) return;
    setPresence({ online: event.online, since: event.at }, true);
  });
  live.on('command', (event) => {
    if (event.device === device.id) refreshCommand(event.command);
  });
  live.onResync(() => {
    loadPresence(true);
    loadCommands();
    loadFirmware();
    loadCoordinates();
  });

  await Promise.all([loadPresence(), loadCommands(), loadFirmware(), loadCoordinates(), loadTelemetry()]);
  setInterval(tick, POLL_MS);
  byId('telemetry-range').addEventListener('change', () => loadTelemetry());
}
