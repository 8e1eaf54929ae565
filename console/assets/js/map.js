// The map: every device with coordinates in the caller's organizations (or the chosen one), as
// circle markers in clusters, coloured by presence and recoloured live by presence events.
//
// Where the devices are comes in bulk from two lists: the devices that have a location
// (GET /api/v1/controller/device/?with_geo=true, 100 a page, with their presence) and the
// located locations (GET /api/v1/controller/location/geojson/, 1000 a page). A device's own
// location, the one its coordinates create, is mobile, holds that device only and is named
// after it, so the two lists join on (organization, name) without a request per device. Any
// other location (shared by several devices, renamed, fixed) is asked for its devices
// (GET /api/v1/controller/location/{id}/device/), a few at a time and at most
// LOOKUPS_MAX of them.

import * as api from './api.js';
import * as live from './live.js';
import { start, orgName } from './layout.js';
import { h, fill, byId, badge, when, ago, showError, escapeHtml, pointOf } from './dom.js';

const DEVICE_PAGES_MAX = 100; // 10,000 devices
const LOCATION_PAGES_MAX = 20; // 20,000 locations
const LOOKUPS_MAX = 200; // locations asked for their devices
const LOOKUP_PAGES_MAX = 10; // pages of one location's devices
const LOOKUPS_AT_ONCE = 4;
const WORLD = { center: [20, 0], zoom: 2 };
const STYLE = {
  online: { color: '#0b4f22', fillColor: '#1a7f37' },
  offline: { color: '#6e2b2b', fillColor: '#b5625f' },
  unknown: { color: '#57606a', fillColor: '#8c959f' },
};

const ctx = await start('map');
const box = byId('map');
const note = byId('map-note');
const markers = new Map(); // device id → circle marker
let map = null;
let clusters = null;
let loading = 0;
let fitted = false; // the first drawing fits the map to the markers; later ones keep the view
const notes = { tiles: '', data: '' };
const heard = new Map(); // device id → presence from events, newer than a list read during a load

if (!window.L || !window.L.markerClusterGroup) {
  showError(new Error('The map library did not load; reload the page.'));
} else {
  await setupMap();
  byId('reload').addEventListener('click', () => load());
  live.on('presence', (event) => {
    const presence = { online: event.online, since: event.at };
    heard.set(event.device, presence);
    const marker = markers.get(event.device);
    if (marker) setPresence(marker, presence);
  });
  live.onResync(() => load());
  await load();
}

async function setupMap() {
  let settings = { tile_url: '', tile_attribution: '' };
  try {
    settings = await api.get('/console/settings.json');
  } catch {
    // no tiles then
  }
  const L = window.L;
  // maxZoom is set on the map itself: without tiles the clusters still need one.
  map = L.map(box, { minZoom: 1, maxZoom: 18, worldCopyJump: true }).setView(WORLD.center, WORLD.zoom);
  if (settings.tile_url) {
    const tiles = L.tileLayer(settings.tile_url, { maxZoom: 18, attribution: escapeHtml(settings.tile_attribution || '') });
    let failed = false;
    tiles.on('tileerror', () => {
      if (failed) return;
      failed = true;
      notes.tiles = 'Map tiles could not be loaded: devices are shown on a blank background.';
      drawNote();
    });
    tiles.addTo(map);
  } else {
    notes.tiles = 'No map tiles are configured: devices are shown on a blank background.';
  }
  clusters = L.markerClusterGroup({
    chunkedLoading: true,
    showCoverageOnHover: false,
    spiderfyOnMaxZoom: true,
    maxClusterRadius: 50,
    iconCreateFunction: clusterIcon,
  });
  map.addLayer(clusters);
  drawNote();
}

/** A cluster's icon, coloured by its devices' presence: all online, some, none (offline or unknown). */
function clusterIcon(cluster) {
  const children = cluster.getAllChildMarkers();
  const counts = { online: 0, offline: 0, unknown: 0 };
  for (const marker of children) counts[marker.presence] += 1;
  const kind =
    counts.online === children.length
      ? 'online'
      : counts.online
        ? 'mixed'
        : counts.offline
          ? 'offline'
          : 'unknown';
  const count = Number(cluster.getChildCount()) || children.length;
  return window.L.divIcon({
    html: `<div><span>${count}</span></div>`,
    className: `marker-cluster cluster-presence cluster-${kind}`,
    iconSize: window.L.point(40, 40),
  });
}

async function load() {
  const ticket = ++loading;
  box.setAttribute('aria-busy', 'true');
  byId('reload').disabled = true;
  try {
    const [devices, locations] = await Promise.all([listDevices(), listLocations()]);
    if (ticket !== loading) return;
    const placed = await place(devices.items, locations.items);
    if (ticket !== loading) return;
    draw(placed.placements);
    const parts = [];
    if (devices.truncated) parts.push(`Only the first ${devices.items.length.toLocaleString()} devices with a location are shown.`);
    if (placed.skipped) parts.push(`${placed.skipped.toLocaleString()} shared locations were not looked up (at most ${LOOKUPS_MAX} a load).`);
    if (placed.unplaced) parts.push(`${placed.unplaced.toLocaleString()} ${placed.unplaced === 1 ? 'device has a location' : 'devices have a location'} without coordinates to show.`);
    if (locations.truncated) parts.push('Not every location was read.');
    if (!placed.placements.size) parts.push('No device here has reported coordinates yet.');
    notes.data = parts.join(' ');
    drawNote();
    showError(null);
  } catch (error) {
    if (ticket !== loading) return;
    showError(error);
  } finally {
    if (ticket === loading) {
      box.removeAttribute('aria-busy');
      byId('reload').disabled = false;
    }
  }
}

/** Every device that has a location, with its presence (capped). */
async function listDevices() {
  const items = [];
  let path = `/api/v1/controller/device/?${query({ with_geo: 'true', page_size: '100', organization: ctx.organization })}`;
  for (let page = 0; path; page += 1) {
    if (page === DEVICE_PAGES_MAX) return { items, truncated: true };
    const answer = await api.get(path);
    items.push(...(answer.results || []));
    path = answer.next ? localPath(answer.next) : null;
  }
  return { items, truncated: false };
}

/** Every location devices are placed at, as GeoJSON features (capped). */
async function listLocations() {
  const items = [];
  let path = `/api/v1/controller/location/geojson/?${query({ organization: ctx.organization })}`;
  for (let page = 0; path; page += 1) {
    if (page === LOCATION_PAGES_MAX) return { items, truncated: true };
    let answer;
    try {
      answer = await api.get(path);
    } catch (error) {
      // Without the location permission there is nothing to place devices with.
      if (error.status === 403) throw new Error(`The map needs permission to view locations: ${error.message}`);
      throw error;
    }
    items.push(...(answer.features || []));
    path = answer.next ? localPath(answer.next) : null;
  }
  return { items, truncated: false };
}

/** Devices and where they are: joined by name where a location is a device's own, asked otherwise. */
async function place(devices, locations) {
  const known = new Map(devices.map((d) => [d.id, d]));
  const byName = new Map(devices.map((d) => [nameKey(d.organization, d.name), d]));
  const placements = new Map(); // device id → {device, point}
  const lookups = [];
  for (const feature of locations) {
    const point = pointOf(feature.geometry);
    const props = feature.properties || {};
    if (!point || !props.device_count) continue;
    const own = byName.get(nameKey(props.organization, props.name));
    if (props.is_mobile && props.device_count === 1 && own && !placements.has(own.id)) {
      placements.set(own.id, { device: own, point });
    } else {
      lookups.push({ id: feature.id, point });
    }
  }
  const asked = lookups.slice(0, LOOKUPS_MAX);
  let next = 0;
  const worker = async () => {
    while (next < asked.length) {
      const { id, point } = asked[next];
      next += 1;
      let path = `/api/v1/controller/location/${encodeURIComponent(id)}/device/?page_size=100`;
      for (let page = 0; path && page < LOOKUP_PAGES_MAX; page += 1) {
        let answer;
        try {
          answer = await api.get(path);
        } catch {
          break;
        }
        for (const d of answer.results || []) placements.set(d.id, { device: known.get(d.id) || d, point });
        path = answer.next ? localPath(answer.next) : null;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(LOOKUPS_AT_ONCE, asked.length) }, worker));
  // With an organization chosen, a shared location's other devices stay out.
  if (ctx.organization) {
    for (const [id, p] of placements) if (p.device.organization !== ctx.organization) placements.delete(id);
  }
  let unplaced = 0;
  for (const d of devices) if (!placements.has(d.id)) unplaced += 1;
  return { placements, skipped: lookups.length - asked.length, unplaced };
}

function nameKey(organization, name) {
  return `${organization}\n${String(name || '').toLowerCase()}`;
}

function draw(placements) {
  const L = window.L;
  clusters.clearLayers();
  markers.clear();
  const layers = [];
  for (const { device, point } of placements.values()) {
    // An event may be newer than the list (it arrived while the list was read).
    const event = heard.get(device.id);
    if (event && (!device.presence || !device.presence.since || Date.parse(event.since) >= Date.parse(device.presence.since))) {
      device.presence = event;
    }
    const marker = L.circleMarker(point, { radius: 8, weight: 2, fillOpacity: 0.85, className: 'device-marker' });
    marker.device = device;
    marker.presence = presenceOf(device.presence);
    marker.since = device.presence ? device.presence.since : null;
    marker.setStyle(STYLE[marker.presence]);
    marker.bindPopup(() => popup(marker), { minWidth: 160 });
    marker.on('add', () => tag(marker));
    markers.set(device.id, marker);
    layers.push(marker);
  }
  clusters.addLayers(layers);
  if (!fitted) {
    fitted = true;
    if (layers.length) {
      const bounds = L.latLngBounds(layers.map((m) => m.getLatLng()));
      map.fitBounds(bounds.pad(0.15), { maxZoom: 14 });
    } else {
      map.setView(WORLD.center, WORLD.zoom);
    }
  }
  drawSummary();
}

function presenceOf(presence) {
  if (!presence) return 'unknown';
  return presence.online ? 'online' : 'offline';
}

/** Marks a marker's SVG path for tests and styles: data-device, data-presence. */
function tag(marker) {
  const el = marker.getElement && marker.getElement();
  if (!el) return;
  el.dataset.device = marker.device.id;
  el.dataset.presence = marker.presence;
  el.setAttribute('aria-label', `${marker.device.name}: ${marker.presence}`);
}

function setPresence(marker, presence) {
  marker.presence = presenceOf(presence);
  marker.since = presence.since;
  marker.device.presence = presence;
  marker.setStyle(STYLE[marker.presence]);
  tag(marker);
  clusters.refreshClusters(marker);
  if (marker.isPopupOpen()) marker.setPopupContent(popup(marker));
  drawSummary();
}

function popup(marker) {
  const d = marker.device;
  const label = marker.presence === 'offline' && !marker.since ? 'never connected' : marker.presence;
  const showOrg = ctx.organizations.length > 1 && !ctx.organization;
  return h(
    'div',
    { class: 'map-popup', dataset: { device: d.id } },
    h('a', { class: 'name', href: `/devices/${encodeURIComponent(d.id)}/` }, d.name),
    badge(marker.presence, label),
    marker.since ? h('span', { class: 'meta', title: when(marker.since) }, `since ${ago(marker.since)}`) : null,
    d.model ? h('span', { class: 'meta' }, d.model) : null,
    showOrg ? h('span', { class: 'meta' }, orgName(ctx.organizations, d.organization)) : null,
  );
}

function drawSummary() {
  const counts = { online: 0, offline: 0, unknown: 0 };
  for (const marker of markers.values()) counts[marker.presence] += 1;
  const total = markers.size;
  const parts = [`${total.toLocaleString()} ${total === 1 ? 'device' : 'devices'}`];
  if (total) {
    parts.push(`${counts.online.toLocaleString()} online`, `${counts.offline.toLocaleString()} offline`);
    if (counts.unknown) parts.push(`${counts.unknown.toLocaleString()} unknown`);
  }
  byId('summary').textContent = parts.join(' · ');
  Object.assign(box.dataset, {
    markers: String(total),
    online: String(counts.online),
    offline: String(counts.offline),
    unknown: String(counts.unknown),
  });
}

function drawNote() {
  fill(note, [notes.data, notes.tiles].filter(Boolean).join(' '));
}

function query(values) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) if (value) search.set(key, value);
  return search.toString();
}

/** An absolute `next` link of the API, as a path on this origin. */
function localPath(link) {
  const url = new URL(link, window.location.origin);
  return url.pathname + url.search;
}

