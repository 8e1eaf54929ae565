// Rollouts: start a mass upgrade of a build (POST /api/v1/firmware-upgrader/build/{id}/upgrade/)
// after previewing it with the dry run (GET of the same path), with the rollout controls
// (waves, max parallel, rate per minute, abort threshold); below, the history of batches.

import * as api from './api.js';
import * as live from './live.js';
import { start, orgName } from './layout.js';
import { h, fill, byId, badge, ago, when, showError, showInfo } from './dom.js';

const FW = '/api/v1/firmware-upgrader';
const PAGE_SIZE = 20;
const PREVIEW_ROWS = 100;
const ENDED = ['success', 'failed', 'aborted', 'cancelled'];

const ctx = await start('rollouts');
const form = byId('rollout-form');
const buildSelect = byId('build');
const groupSelect = byId('group');
const upgradeAll = byId('upgrade-all');
const historyBody = byId('batches').querySelector('tbody');
const multiOrg = ctx.organizations.length > 1 && !ctx.organization;
const currentOrg = ctx.organizations.find((o) => o.id === ctx.organization);

let builds = [];
let groups = [];
let preview = null; // { build, group, answer, images }
let page = Math.max(1, Number.parseInt(new URLSearchParams(window.location.search).get('page') || '1', 10) || 1);
let loadingHistory = 0;

await Promise.all([loadBuilds(), loadGroups()]);
const wanted = new URLSearchParams(window.location.search).get('build');
if (wanted && builds.some((b) => b.id === wanted)) buildSelect.value = wanted;
buildChanged();

buildSelect.addEventListener('change', buildChanged);
groupSelect.addEventListener('change', () => clearPreview());
upgradeAll.addEventListener('change', () => {
  if (preview) drawPreview();
});
byId('preview').addEventListener('click', runPreview);
form.addEventListener('submit', (event) => {
  event.preventDefault();
  startRollout();
});
for (const input of form.querySelectorAll('input, select')) {
  input.addEventListener('input', () => input.removeAttribute('aria-invalid'));
}
byId('batches-previous').addEventListener('click', () => {
  page = Math.max(1, page - 1);
  loadHistory();
});
byId('batches-next').addEventListener('click', () => {
  page += 1;
  loadHistory();
});

const refreshHistory = api.throttled(() => loadHistory(), 1000);
live.on('batch', refreshHistory);
live.onResync(refreshHistory);

await loadHistory();

// ---- the new rollout ----

async function loadBuilds() {
  try {
    const all = await api.all(`${FW}/build/`);
    // With an organization chosen: its own builds and shared ones (the API's organization
    // filter would leave the shared ones out).
    builds = all.filter((b) => {
      const org = b.category_relation && b.category_relation.organization;
      return !ctx.organization || !org || org === ctx.organization;
    });
    builds.sort((a, b) => buildLabel(a).localeCompare(buildLabel(b)) || String(b.created).localeCompare(String(a.created)));
    buildSelect.append(...builds.map((b) => h('option', { value: b.id }, buildLabel(b))));
    if (!builds.length) {
      buildSelect.append(h('option', { value: '', disabled: true }, 'No builds yet: add one on the Firmware page'));
    }
  } catch (error) {
    showError(error);
  }
}

async function loadGroups() {
  try {
    groups = await api.all('/api/v1/controller/group/', { organization: ctx.organization });
  } catch (error) {
    groups = [];
    showError(error);
  }
}

function buildLabel(build, withOrg = multiOrg) {
  const relation = build.category_relation || {};
  const category = relation.name || 'Unknown category';
  let label = `${category} · ${build.version}`;
  if (withOrg) label += ` (${relation.organization ? orgName(ctx.organizations, relation.organization) : 'shared'})`;
  return label;
}

function organizationOf(build) {
  const org = build.category_relation && build.category_relation.organization;
  return org ? orgName(ctx.organizations, org) : 'shared';
}

function chosenBuild() {
  return builds.find((b) => b.id === buildSelect.value) || null;
}

function buildChanged() {
  clearPreview();
  const build = chosenBuild();
  const info = byId('build-info');
  if (!build) {
    info.textContent = '';
  } else {
    const relation = build.category_relation || {};
    const parts = [`Category ${relation.name || '—'}`, `version ${build.version}`];
    if (build.os) parts.push(`OS ${build.os}`);
    parts.push(relation.organization ? orgName(ctx.organizations, relation.organization) : 'shared category');
    parts.push(`created ${when(build.created)}`);
    info.textContent = parts.join(' · ');
  }
  // Groups of the build's organization (a shared build reaches every organization's devices).
  const org = build && build.category_relation ? build.category_relation.organization : null;
  const kept = groupSelect.value;
  const fitting = groups.filter((g) => !org || g.organization === org);
  fill(
    groupSelect,
    h('option', { value: '' }, 'Every device the build fits'),
    fitting.map((g) =>
      h('option', { value: g.id, selected: g.id === kept }, multiOrg && !org ? `${g.name} (${orgName(ctx.organizations, g.organization)})` : g.name),
    ),
  );
}

function clearPreview() {
  preview = null;
  byId('dry-run').classList.add('hidden');
}

async function runPreview() {
  const build = chosenBuild();
  if (!build) {
    invalid(buildSelect, 'Choose a build first.');
    return;
  }
  const button = byId('preview');
  button.disabled = true;
  byId('dry-run').setAttribute('aria-busy', 'true');
  try {
    const group = groupSelect.value;
    const [answer, images] = await Promise.all([
      api.get(`${FW}/build/${build.id}/upgrade/`, { group }),
      api.all(`${FW}/build/${build.id}/image/`).catch(() => []),
    ]);
    showError(null);
    preview = { build: build.id, group, answer, images: new Map(images.map((i) => [i.id, i])) };
    drawPreview();
  } catch (error) {
    clearPreview();
    showFieldErrors(error);
  } finally {
    button.disabled = false;
    byId('dry-run').removeAttribute('aria-busy');
  }
}

/** The devices the batch would upgrade, as the POST would choose them. */
function previewRows() {
  const { answer } = preview;
  const rows = (answer.device_firmwares || []).map((f) => ({
    id: f.device,
    name: f.device_name,
    now: f.installed ? 'firmware of another build' : 'firmware of another build (not installed yet)',
    model: '',
    image: f.target_image,
  }));
  if (upgradeAll.checked) {
    for (const d of answer.devices || []) {
      rows.push({ id: d.id, name: d.name, now: 'no firmware', model: d.model, image: d.target_image });
    }
  }
  return rows;
}

function drawPreview() {
  const rows = previewRows();
  const without = (preview.answer.devices || []).length;
  byId('dry-run').classList.remove('hidden');
  byId('dry-run-count').textContent = rows.length.toLocaleString();
  byId('dry-run-label').textContent = rows.length === 1 ? 'device would be upgraded' : 'devices would be upgraded';
  const notes = [];
  if (rows.length > PREVIEW_ROWS) notes.push(`The first ${PREVIEW_ROWS} are listed.`);
  if (!upgradeAll.checked && without) {
    notes.push(`${without.toLocaleString()} more without firmware would be upgraded with "Also devices without firmware".`);
  }
  byId('dry-run-note').textContent = notes.join(' ');
  // Per image: how many devices get which image.
  const perImage = new Map();
  for (const row of rows) perImage.set(row.image, (perImage.get(row.image) || 0) + 1);
  if (perImage.size > 1) {
    byId('dry-run-note').append(
      h('span', { class: 'per-image' }, ' ', [...perImage].map(([id, n]) => `${imageName(id)}: ${n.toLocaleString()}`).join(' · ')),
    );
  }
  fill(
    byId('dry-run-table').querySelector('tbody'),
    rows.length
      ? rows.slice(0, PREVIEW_ROWS).map((row) =>
          h(
            'tr',
            { dataset: { deviceId: row.id } },
            h('td', {}, h('a', { href: `/devices/${row.id}/` }, row.name || row.id)),
            h('td', { class: 'muted' }, row.now),
            h('td', { class: 'hide-narrow' }, row.model || '—'),
            h('td', { class: 'mono wrap' }, imageName(row.image)),
          ),
        )
      : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No device would be upgraded.')),
  );
}

function imageName(id) {
  const image = preview && preview.images.get(id);
  return image ? image.type : id;
}

/** The rollout settings as the API takes them; throws with the field to blame. */
function readSettings() {
  const body = {};
  const wavesText = byId('waves').value.trim();
  if (wavesText) {
    const parts = wavesText.split(/[\s,;]+/).filter(Boolean);
    const waves = parts.map((p) => Number(p.replace(/%$/, '')));
    if (waves.some((w) => !Number.isInteger(w))) {
      throw fieldError('waves', 'Waves are whole percentages separated by commas, e.g. 1, 10, 100.');
    }
    body.waves = waves;
  } else {
    body.waves = null;
  }
  body.max_parallel = positive('max-parallel', 'Max parallel');
  body.rate_per_minute = positive('rate', 'Rate per minute');
  const rateText = byId('abort-threshold').value.trim();
  if (rateText) {
    const percent = Number(rateText);
    if (!(percent > 0 && percent <= 100)) {
      throw fieldError('abort-threshold', 'The abort failure rate is a percentage above 0, at most 100.');
    }
    const sample = positive('abort-min-sample', 'The minimum sample') || 1;
    body.abort_threshold = { failure_rate: Math.round(percent * 100) / 10000, min_sample: sample };
  } else {
    body.abort_threshold = null;
  }
  return body;
}

function positive(id, name) {
  const text = byId(id).value.trim();
  if (!text) return null;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw fieldError(id, `${name} must be a whole number of at least 1.`);
  return n;
}

function fieldError(id, message) {
  const error = new Error(message);
  error.field = id;
  return error;
}

function invalid(input, message) {
  input.setAttribute('aria-invalid', 'true');
  input.focus();
  showError(new Error(message));
}

// The API's field names → this form's inputs.
const FIELD_INPUTS = {
  waves: 'waves',
  max_parallel: 'max-parallel',
  rate_per_minute: 'rate',
  abort_threshold: 'abort-threshold',
  group: 'group',
  location: 'group',
};

function showFieldErrors(error) {
  // OpenWISP's `{"error": "…"}` (nothing to upgrade) reads better without its key.
  const body = error && error.body;
  showError(body && typeof body.error === 'string' && Object.keys(body).length === 1 ? new Error(body.error) : error);
  if (error && error.body && typeof error.body === 'object') {
    for (const key of Object.keys(error.body)) {
      const id = FIELD_INPUTS[key];
      if (id) byId(id).setAttribute('aria-invalid', 'true');
    }
  }
}

async function startRollout() {
  const build = chosenBuild();
  if (!build) {
    invalid(buildSelect, 'Choose a build first.');
    return;
  }
  let body;
  try {
    body = readSettings();
  } catch (error) {
    invalid(byId(error.field), error.message);
    return;
  }
  body.upgrade_all = upgradeAll.checked;
  body.group = groupSelect.value || null;
  const known = preview && preview.build === build.id && preview.group === groupSelect.value;
  const count = known ? previewRows().length : null;
  const what = count === null ? 'every device it fits' : `${count.toLocaleString()} device${count === 1 ? '' : 's'}`;
  if (!window.confirm(`Start upgrading ${what} to ${buildLabel(build, false)}?`)) return;
  const button = byId('start');
  button.disabled = true;
  try {
    const answer = await api.post(`${FW}/build/${build.id}/upgrade/`, body);
    showInfo('Rollout started.');
    window.location.assign(`/rollouts/${answer.batch}/`);
  } catch (error) {
    showFieldErrors(error);
    button.disabled = false;
  }
}

// ---- the history ----

async function loadHistory() {
  const ticket = ++loadingHistory;
  const query = { page, page_size: PAGE_SIZE };
  if (currentOrg) query.organization = currentOrg.slug;
  byId('batches').setAttribute('aria-busy', 'true');
  try {
    const answer = await api.get(`${FW}/batch-upgrade-operation/`, query);
    if (ticket !== loadingHistory) return;
    drawHistory(answer);
    const address = page > 1 ? `?page=${page}` : window.location.pathname;
    history.replaceState(null, '', address);
  } catch (error) {
    if (ticket !== loadingHistory) return;
    if (error.status === 404 && page > 1) {
      page = 1;
      loadHistory();
      return;
    }
    showError(error);
  } finally {
    if (ticket === loadingHistory) byId('batches').removeAttribute('aria-busy');
  }
}

function drawHistory(answer) {
  const batches = answer.results || [];
  const byId_ = new Map(builds.map((b) => [b.id, b]));
  fill(
    historyBody,
    batches.length
      ? batches.map((batch) => {
          const build = byId_.get(batch.build);
          return h(
            'tr',
            { dataset: { batchId: batch.id, status: batch.status } },
            h(
              'td',
              { class: 'build-cell' },
              h('a', { href: `/rollouts/${batch.id}/` }, build ? buildLabel(build, false) : `Build ${batch.build.slice(0, 8)}…`),
              build && multiOrg ? h('div', { class: 'muted small' }, organizationOf(build)) : null,
            ),
            h('td', {}, badge(batch.status)),
            h('td', { class: 'progress-column' }, statusBar(batch), h('span', { class: 'progress-text muted' }, batch.progress_report)),
            h('td', { class: 'hide-narrow muted' }, settingsText(batch.rollout)),
            h('td', { title: when(batch.created) }, ago(batch.created)),
          );
        })
      : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No rollouts yet.')),
  );
  const pages = Math.max(1, Math.ceil(answer.count / PAGE_SIZE));
  byId('batches-page-info').textContent = `Page ${page} of ${pages}`;
  byId('batches-summary').textContent = `${answer.count.toLocaleString()} batch${answer.count === 1 ? '' : 'es'}`;
  byId('batches-previous').disabled = !answer.previous;
  byId('batches-next').disabled = !answer.next;
}

function settingsText(rollout) {
  if (!rollout) return '—';
  const parts = [];
  if (rollout.waves && rollout.waves.length) parts.push(`waves ${rollout.waves.join('/')} %`);
  if (rollout.max_parallel) parts.push(`≤ ${rollout.max_parallel} parallel`);
  if (rollout.rate_per_minute) parts.push(`≤ ${rollout.rate_per_minute}/min`);
  if (rollout.abort_threshold) {
    const t = rollout.abort_threshold;
    parts.push(`abort at ${Math.round(t.failure_rate * 1000) / 10} % of ≥ ${t.min_sample}`);
  }
  return parts.join(' · ') || 'no limits';
}

/** A bar of a batch's ended operations per status over its total. */
function statusBar(batch) {
  const total = batch.total || 0;
  const counts = batch.status_counts || {};
  const bar = h('div', {
    class: 'bar',
    role: 'img',
    'aria-label': ENDED.map((s) => `${s} ${counts[s] || 0}`).join(', ') + `, in progress ${counts['in-progress'] || 0}`,
  });
  for (const status of ENDED) {
    const n = counts[status] || 0;
    if (!n || !total) continue;
    const span = h('span', { class: status, title: `${status}: ${n}` });
    span.style.width = `${(n / total) * 100}%`;
    bar.append(span);
  }
  return bar;
}

