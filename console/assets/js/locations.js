// Locations: a page of 100 from GET /api/v1/controller/location/ (type and mobility filters,
// page and chosen location in the address), each with the devices placed there (counted from
// the GeoJSON list, listed on demand from /location/{id}/device/) and, for indoor ones, the
// floor plans, their images shown from the API (the session cookie is enough).

import * as api from './api.js';
import { start, orgName } from './layout.js';
import { h, fill, byId, badge, ago, when, showError } from './dom.js';

const C = '/api/v1/controller';
const PAGE_SIZE = 100;
const DEVICES_PAGE = 25;
const GEOJSON_PAGES_MAX = 20;
const FILTERS = ['type', 'is_mobile'];

const ctx = await start('locations');
const multiOrg = ctx.organizations.length > 1 && !ctx.organization;
const form = byId('filters');
let state = readState();
let answer = { count: 0, results: [], next: null, previous: null };
let deviceCounts = new Map(); // location id → devices placed there (absent: none)
let countsKnown = false;
let loading = 0;
let devicesShown = { location: '', page: 0, items: [], count: 0, next: false };

for (const column of document.querySelectorAll('.org-column')) column.classList.toggle('hidden', !multiOrg);
writeForm();
form.addEventListener('input', () => {
  const data = new FormData(form);
  for (const name of FILTERS) state[name] = data.get(name) || '';
  state.page = 1;
  load();
});
form.addEventListener('submit', (event) => event.preventDefault());
byId('previous').addEventListener('click', () => {
  state.page = Math.max(1, state.page - 1);
  load();
});
byId('next').addEventListener('click', () => {
  state.page += 1;
  load();
});
byId('location-close').addEventListener('click', () => choose(''));
byId('location-devices-more').addEventListener('click', () => loadDevices(devicesShown.page + 1));
window.addEventListener('popstate', () => {
  state = readState();
  writeForm();
  load(false);
});

await Promise.all([loadCounts(), load(false)]);

function readState() {
  const query = new URLSearchParams(window.location.search);
  const s = {
    page: Math.max(1, Number.parseInt(query.get('page') || '1', 10) || 1),
    location: query.get('location') || '',
  };
  for (const name of FILTERS) s[name] = query.get(name) || '';
  return s;
}

function writeForm() {
  for (const name of FILTERS) form.elements[name].value = state[name];
}

function pushState() {
  const query = new URLSearchParams();
  for (const name of FILTERS) if (state[name]) query.set(name, state[name]);
  if (state.page > 1) query.set('page', String(state.page));
  if (state.location) query.set('location', state.location);
  const text = query.toString();
  history.pushState(null, '', text ? `?${text}` : window.location.pathname);
}

/** Device counts of every located location, from the GeoJSON list (1000 a page). */
async function loadCounts() {
  const counts = new Map();
  try {
    for (let page = 1; page <= GEOJSON_PAGES_MAX; page += 1) {
      const collection = await api.get(`${C}/location/geojson/`, { organization: ctx.organization, page });
      for (const feature of collection.features || []) counts.set(feature.id, feature.properties.device_count);
      if (!collection.next) break;
    }
    deviceCounts = counts;
    countsKnown = true;
  } catch {
    countsKnown = false;
  }
  if (answer.results.length) draw();
}

async function load(push = true) {
  const ticket = ++loading;
  if (push) pushState();
  byId('locations').setAttribute('aria-busy', 'true');
  try {
    const result = await api.get(`${C}/location/`, {
      page: state.page,
      page_size: PAGE_SIZE,
      organization: ctx.organization,
      type: state.type,
      is_mobile: state.is_mobile,
    });
    if (ticket !== loading) return;
    showError(null);
    answer = result;
    draw();
    await drawDetail();
  } catch (error) {
    if (ticket !== loading) return;
    if (error.status === 404 && state.page > 1) {
      state.page = 1;
      load();
      return;
    }
    showError(error);
  } finally {
    if (ticket === loading) byId('locations').removeAttribute('aria-busy');
  }
}

/** "41.89860, 12.48230" (latitude first) for a point; a polygon's size and centre. */
function coordinates(geometry) {
  if (!geometry || !geometry.coordinates) return null;
  if (geometry.type === 'Point') {
    const [lon, lat] = geometry.coordinates;
    return { text: `${lat.toFixed(5)}, ${lon.toFixed(5)}`, title: `latitude ${lat}, longitude ${lon}` };
  }
  if (geometry.type === 'Polygon') {
    const ring = geometry.coordinates[0] || [];
    const points = ring.length > 1 ? ring.slice(0, -1) : ring;
    if (!points.length) return { text: 'polygon', title: '' };
    const lat = points.reduce((s, p) => s + p[1], 0) / points.length;
    const lon = points.reduce((s, p) => s + p[0], 0) / points.length;
    return { text: `polygon of ${points.length} points`, title: `centre ${lat.toFixed(5)}, ${lon.toFixed(5)}` };
  }
  return { text: geometry.type, title: '' };
}

function countOf(location) {
  if (!countsKnown) return null;
  return deviceCounts.get(location.id) || 0;
}

function typeFlags(location) {
  return [
    h('span', { class: 'flag', dataset: { flag: location.type } }, location.type),
    location.is_mobile ? h('span', { class: 'flag', dataset: { flag: 'mobile' } }, 'mobile') : null,
  ];
}

function draw() {
  const locations = answer.results || [];
  fill(
    byId('locations').querySelector('tbody'),
    locations.length
      ? locations.map((l) => {
          const coords = coordinates(l.geometry);
          const count = countOf(l);
          return h(
            'tr',
            {
              dataset: { locationId: l.id },
              class: l.id === state.location ? 'selected' : undefined,
              'aria-selected': l.id === state.location ? 'true' : 'false',
              onclick: (event) => {
                if (event.ctrlKey || event.metaKey || event.shiftKey || event.button > 0) return; // a new tab
                event.preventDefault();
                choose(l.id === state.location ? '' : l.id);
              },
            },
            h('td', {}, h('a', { href: `?location=${l.id}`, class: 'location-link' }, l.name)),
            h('td', { class: 'flags' }, typeFlags(l)),
            h('td', { class: 'hide-narrow address' }, l.address || h('span', { class: 'muted' }, '—')),
            h('td', { class: 'hide-narrow mono coords', title: coords ? coords.title : 'no coordinates' }, coords ? coords.text : h('span', { class: 'muted' }, '—')),
            h('td', { class: 'numeric device-count' }, count === null ? '—' : count.toLocaleString()),
            h('td', { class: 'numeric hide-narrow' }, l.type === 'indoor' ? String((l.floorplan || []).length) : h('span', { class: 'muted' }, '—')),
            h('td', { class: multiOrg ? 'org-column' : 'org-column hidden' }, orgName(ctx.organizations, l.organization)),
          );
        })
      : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, state.type || state.is_mobile ? 'No locations match.' : 'No locations yet.')),
  );
  const pages = Math.max(1, Math.ceil(answer.count / PAGE_SIZE));
  byId('page-info').textContent = `Page ${state.page} of ${pages} · ${answer.count.toLocaleString()} locations`;
  byId('summary').textContent = `${answer.count.toLocaleString()}`;
  byId('previous').disabled = !answer.previous;
  byId('next').disabled = !answer.next;
}

async function choose(id) {
  state.location = id;
  pushState();
  for (const row of byId('locations').querySelectorAll('tbody tr[data-location-id]')) {
    const on = row.dataset.locationId === id;
    row.classList.toggle('selected', on);
    row.setAttribute('aria-selected', on ? 'true' : 'false');
  }
  await drawDetail();
  if (id) byId('location-detail').scrollIntoView({ block: 'nearest' });
}

/** The chosen location: on this page, or asked for (a link from elsewhere). */
async function chosenLocation() {
  if (!state.location) return null;
  const here = (answer.results || []).find((l) => l.id === state.location);
  if (here) return here;
  try {
    return await api.get(`${C}/location/${state.location}/`);
  } catch (error) {
    if (error.status === 404) showError(new Error('That location does not exist, or is not one of your organizations’.'));
    else showError(error);
    return null;
  }
}

async function drawDetail() {
  const panel = byId('location-detail');
  const location = await chosenLocation();
  panel.classList.toggle('hidden', !location);
  if (!location) {
    devicesShown = { location: '', page: 0, items: [], count: 0, next: false };
    return;
  }
  panel.dataset.locationId = location.id;
  byId('location-title').textContent = location.name;
  const coords = coordinates(location.geometry);
  fill(
    byId('location-facts'),
    [
      ['Type', typeFlags(location)],
      ['Address', location.address || '—'],
      ['Coordinates', coords ? `${coords.text}${coords.title && location.geometry.type !== 'Point' ? ` (${coords.title})` : ''}` : 'none'],
      ['Mobile', location.is_mobile ? 'yes: it moves with its device' : 'no'],
      multiOrg || ctx.organizations.length > 1 ? ['Organization', orgName(ctx.organizations, location.organization)] : null,
      ['Created', when(location.created)],
      ['Modified', h('span', { title: when(location.modified) }, ago(location.modified))],
    ]
      .filter(Boolean)
      .map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]),
  );
  drawFloorplans(location);
  if (devicesShown.location !== location.id) {
    devicesShown = { location: location.id, page: 0, items: [], count: 0, next: false };
    fill(byId('location-devices').querySelector('tbody'), h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'Loading…')));
    byId('location-devices-summary').textContent = '';
    await loadDevices(1);
  }
}

async function loadDevices(page) {
  const id = devicesShown.location;
  if (!id) return;
  const more = byId('location-devices-more');
  more.disabled = true;
  try {
    const result = await api.get(`${C}/location/${id}/device/`, { page, page_size: DEVICES_PAGE });
    if (devicesShown.location !== id) return;
    devicesShown.page = page;
    devicesShown.items = page === 1 ? result.results : devicesShown.items.concat(result.results);
    devicesShown.count = result.count;
    devicesShown.next = Boolean(result.next);
    devicesShown.hasFloorplan = result.has_floorplan;
    drawDevices();
  } catch (error) {
    if (devicesShown.location !== id) return;
    fill(byId('location-devices').querySelector('tbody'), h('tr', {}, h('td', { colspan: 4, class: 'muted' }, error.message)));
  } finally {
    more.disabled = false;
  }
}

function drawDevices() {
  const { items, count, next } = devicesShown;
  byId('location-devices-summary').textContent = `${count.toLocaleString()}${devicesShown.hasFloorplan ? ' · some on a floor plan' : ''}`;
  fill(
    byId('location-devices').querySelector('tbody'),
    items.length
      ? items.map((d) => {
          const presence = d.presence && d.presence.online ? 'online' : 'offline';
          return h(
            'tr',
            { dataset: { deviceId: d.id } },
            h('td', {}, h('a', { href: `/devices/${d.id}/` }, d.name)),
            h('td', { title: d.presence && d.presence.since ? `${presence} since ${when(d.presence.since)}` : 'never connected' }, d.presence ? badge(presence) : '—'),
            h('td', { class: 'hide-narrow' }, d.model || '—'),
            h('td', {}, d.config ? badge(d.config.status) : '—'),
          );
        })
      : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No devices are placed here.')),
  );
  byId('location-devices-more').classList.toggle('hidden', !next);
  byId('location-devices-more').textContent = next ? `Show more (${(count - items.length).toLocaleString()} left)` : 'Show more';
}

function drawFloorplans(location) {
  const plans = [...(location.floorplan || [])].sort((a, b) => a.floor - b.floor);
  byId('floorplans-block').classList.toggle('hidden', location.type !== 'indoor');
  byId('floorplans-summary').textContent = plans.length ? String(plans.length) : '';
  fill(
    byId('floorplans'),
    plans.length
      ? plans.map((plan) =>
          h(
            'figure',
            { dataset: { floor: String(plan.floor) } },
            h('a', { href: plan.image, title: 'Open the image' }, h('img', { src: plan.image, alt: `Floor plan of ${location.name}, floor ${plan.floor}`, loading: 'lazy', class: 'floorplan-image' })),
            h('figcaption', {}, h('span', {}, `Floor ${plan.floor}`), h('a', { href: plan.image, download: '' }, 'Download')),
          ),
        )
      : h('p', { class: 'muted' }, 'No floor plans.'),
  );
}
