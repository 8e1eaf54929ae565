// One rollout (batch upgrade) live: its status, counts, overall and per-wave progress, the
// rate at which operations end, its failures with their reasons, and a cancel button. Kept
// current by the live `batch` events (a throttled re-fetch of the batch's detail) and by a
// re-fetch whenever the stream reconnects.

import * as api from './api.js';
import * as live from './live.js';
import { start, orgName } from './layout.js';
import { h, fill, byId, badge, ago, when, showError, showInfo, pathId } from './dom.js';

const FW = '/api/v1/firmware-upgrader';
const STATUSES = ['in-progress', 'success', 'failed', 'aborted', 'cancelled'];
const ENDED = ['success', 'failed', 'aborted', 'cancelled'];
const DETAIL_OPERATIONS = 1000; // what the detail lists at most (api: DETAIL_OPERATIONS)
const FETCH_GAP_MS = 500;
const TABLE_ROWS = 100; // failures listed at most
const OPERATION_ROWS = 50; // operations listed at most
const MAX_BARS = 60;

const ctx = await start('rollouts');
const id = pathId();
const deviceNames = new Map(); // device id → name, or a promise while asked
const waiting = []; // device look-ups not yet sent
let batch = null;
let build = null;
let failuresKey = '';
let samples = []; // [{at, ended, success, failed}] seen by this page, for big batches
let cancelling = false;

byId('cancel').addEventListener('click', cancel);
byId('operations-status').addEventListener('change', () => batch && drawOperations(batch));

const refetch = api.throttled(load, FETCH_GAP_MS);
const mine = (event) => {
  if (event && event.batch === id) refetch();
};
live.on('batch', mine);
live.onResync(refetch);

refetch();

async function load() {
  let answer;
  try {
    answer = await api.get(`${FW}/batch-upgrade-operation/${id}/`);
  } catch (error) {
    if (error.status === 404) {
      byId('rollout-title').textContent = 'Rollout not found';
      fill(byId('batch-status'), 'unknown');
      byId('batch-status').dataset.status = 'unknown';
    }
    showError(error);
    return;
  }
  batch = answer;
  if (!build || build.id !== batch.build) {
    try {
      build = await api.get(`${FW}/build/${batch.build}/`);
    } catch {
      build = { id: batch.build, version: batch.build, category_relation: {} };
    }
  }
  samples.push({
    at: Date.now(),
    success: batch.status_counts.success,
    failed: batch.status_counts.failed,
    ended: batch.total - batch.status_counts['in-progress'],
  });
  if (samples.length > 5000) samples = samples.slice(-5000);
  draw(batch);
  await drawFailures(batch);
}

function running(b) {
  return b.status === 'in-progress' || b.status === 'idle';
}

function complete(b) {
  // The detail lists every operation only up to DETAIL_OPERATIONS of them.
  return (b.upgrade_operations || []).length >= (b.upgrade_operations_count ?? b.total) && b.total <= DETAIL_OPERATIONS;
}

function draw(b) {
  const relation = build.category_relation || {};
  const title = `Rollout of ${relation.name ? `${relation.name} · ` : ''}${build.version}`;
  byId('rollout-title').textContent = title;
  document.title = `${title} · fleetmq`;
  const status = byId('batch-status');
  status.dataset.status = b.status;
  status.textContent = b.status;
  byId('cancel').disabled = !running(b) || cancelling;
  const note = byId('note');
  note.classList.toggle('hidden', !b.note);
  note.classList.toggle('error', b.status === 'failed');
  note.classList.toggle('info', b.status !== 'failed');
  note.textContent = b.note ? `Stopped early: ${b.note}` : '';

  byId('progress-report').textContent = `${b.progress_report} ended`;
  drawBar(byId('overall-bar'), b.status_counts, b.total);
  fill(
    byId('counts'),
    STATUSES.map((s) =>
      h('li', { dataset: { status: s } }, h('span', { class: `swatch ${s}` }), `${s} `, h('strong', { class: 'count' }, (b.status_counts[s] || 0).toLocaleString()), rateText(b, s)),
    ),
  );
  drawFacts(b);
  drawWaves(b);
  drawRate(b);
  drawOperations(b);
}

function rateText(b, status) {
  const key = { success: 'success_rate', failed: 'failed_rate', aborted: 'aborted_rate', cancelled: 'cancelled_rate' }[status];
  return key ? h('span', { class: 'muted' }, ` (${b[key]} %)`) : null;
}

function drawBar(bar, counts, total) {
  const parts = [];
  for (const s of ENDED) {
    const n = counts[s] || 0;
    if (!n || !total) continue;
    const span = h('span', { class: s, title: `${s}: ${n}` });
    span.style.width = `${(n / total) * 100}%`;
    parts.push(span);
  }
  fill(bar, parts);
  bar.setAttribute('aria-label', `${STATUSES.map((s) => `${s} ${counts[s] || 0}`).join(', ')} of ${total}`);
}

function drawFacts(b) {
  const r = b.rollout || {};
  const relation = build.category_relation || {};
  const rows = [
    ['Build', h('a', { href: `/firmware/?category=${build.category || ''}&build=${build.id}` }, `${relation.name || ''} ${build.version}`.trim())],
    relation.organization && ctx.organizations.length > 1 ? ['Organization', orgName(ctx.organizations, relation.organization)] : null,
    ['Devices', b.total.toLocaleString()],
    ['Waves', r.waves && r.waves.length ? `${r.waves.join(', ')} % (cumulative)` : 'one wave'],
    ['Max parallel', r.max_parallel ?? 'no limit'],
    ['Rate per minute', r.rate_per_minute ?? 'no limit'],
    ['Abort threshold', r.abort_threshold ? `${Math.round(r.abort_threshold.failure_rate * 1000) / 10} % failed of at least ${r.abort_threshold.min_sample} ended` : 'none'],
    ['Created', h('span', { title: when(b.created) }, `${when(b.created)} (${ago(b.created)})`)],
    ['Last change', when(b.modified)],
  ].filter(Boolean);
  fill(byId('batch-facts'), rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

// ---- waves ----

/** Where each wave ends (exclusive, by plan order), as the store assigns them (Waves::wave_of). */
function waveEnds(total, waves) {
  return waves.map((p, i) => Math.min(total, Math.max(Math.floor((total * p + 99) / 100), i + 1)));
}

// Each operation says its wave; while the detail lists every operation of the batch (up to
// 1,000) the bars are exact, split by status. For larger batches what the detail gives is
// every wave's size (from the percentages) and the counts: operations of a wave start only
// once the earlier waves ended, so while nothing was cancelled or aborted the ended
// operations fill the waves in order, and that is what the bars show then.
function drawWaves(b) {
  const waves = (b.rollout && b.rollout.waves) || [];
  const box = byId('waves');
  const note = byId('waves-note');
  if (!waves.length) {
    fill(box, h('p', { class: 'muted' }, 'One wave: every device as soon as the limits allow.'));
    note.textContent = '';
    return;
  }
  const ops = b.upgrade_operations || [];
  const exact = ops.length === b.total && ops.every((op) => Number.isInteger(op.wave));
  const ends = waveEnds(b.total, waves);
  const parts = exact ? exactWaves(waves, ops) : estimatedWaves(b, ends);
  const stoppedEarly = b.status_counts.cancelled + b.status_counts.aborted > 0;
  let current = -1;
  let first = 0;
  const rows = waves.map((percent, i) => {
    const { size, counts } = parts[i];
    const done = size - (counts['in-progress'] || 0);
    let state;
    if (size === 0) state = 'empty';
    else if (done >= size) state = 'done';
    else if (!running(b)) state = 'stopped';
    else if (current === -1) {
      state = 'current';
      current = i;
    } else state = 'waiting';
    const bar = h('div', { class: 'bar' });
    for (const status of ['success', 'failed', 'aborted', 'cancelled', 'ended']) {
      if (size && counts[status]) {
        const span = h('span', { class: status });
        span.style.width = `${(counts[status] / size) * 100}%`;
        bar.append(span);
      }
    }
    const from = first;
    first += size;
    const label = size === 0 ? 'no devices' : size === 1 ? `device ${from + 1}` : `devices ${(from + 1).toLocaleString()}–${first.toLocaleString()}`;
    return h(
      'div',
      { class: 'wave', dataset: { wave: i, state } },
      h(
        'div',
        { class: 'wave-head' },
        h('strong', {}, `Wave ${i + 1}`),
        h('span', { class: 'muted' }, ` up to ${percent} % · ${label}`),
        h('span', { class: 'wave-state' }, stateText(state, done, size)),
      ),
      bar,
    );
  });
  fill(box, rows);
  if (exact) note.textContent = '';
  else if (stoppedEarly) note.textContent = 'Estimated from the counts (the batch has more operations than its detail lists); operations were cancelled or aborted, so the waves after the ones that ended show as stopped.';
  else note.textContent = 'Estimated from the counts: the batch has more operations than its detail lists, but a wave starts only once the earlier ones ended.';
}

/** Each wave's size and counts per status, from the operations themselves. */
function exactWaves(waves, ops) {
  const parts = waves.map(() => ({ size: 0, counts: {} }));
  for (const op of ops) {
    const part = parts[Math.min(op.wave, parts.length - 1)];
    part.size += 1;
    part.counts[op.status] = (part.counts[op.status] || 0) + 1;
  }
  return parts;
}

/** Each wave's size from the percentages, and how many of it ended, from the counts. */
function estimatedWaves(b, ends) {
  const c = b.status_counts;
  const stoppedEarly = c.cancelled + c.aborted > 0;
  // Operations that ran to an end; cancelled and aborted ones never started (or stopped
  // with the batch) and are not counted towards any wave.
  const ended = stoppedEarly ? c.success + c.failed : b.total - c['in-progress'];
  return ends.map((end, i) => {
    const from = i === 0 ? 0 : ends[i - 1];
    const size = end - from;
    const done = Math.max(0, Math.min(size, ended - from));
    return { size, counts: { ended: done, 'in-progress': size - done } };
  });
}

function stateText(state, done, size) {
  switch (state) {
    case 'done':
      return 'ended';
    case 'current':
      return `running · ${done.toLocaleString()} of ${size.toLocaleString()} ended`;
    case 'stopped':
      return `stopped · ${done.toLocaleString()} of ${size.toLocaleString()} ended`;
    case 'empty':
      return '';
    default:
      return 'waiting';
  }
}

// ---- rate over time ----

function drawRate(b) {
  const chart = byId('rate-chart');
  const note = byId('rate-note');
  let points; // [{at (ms), success, failed, other}]
  if (complete(b)) {
    points = (b.upgrade_operations || [])
      .filter((op) => op.status !== 'in-progress')
      .map((op) => ({ at: Date.parse(op.modified), status: op.status }))
      .filter((p) => Number.isFinite(p.at));
    note.textContent = 'When each operation ended (its last change).';
  } else {
    // Too many operations to list: what this page saw change since it opened.
    points = [];
    for (let i = 1; i < samples.length; i += 1) {
      const [a, z] = [samples[i - 1], samples[i]];
      const success = Math.max(0, z.success - a.success);
      const failed = Math.max(0, z.failed - a.failed);
      const other = Math.max(0, z.ended - a.ended - success - failed);
      for (let n = 0; n < success; n += 1) points.push({ at: z.at, status: 'success' });
      for (let n = 0; n < failed; n += 1) points.push({ at: z.at, status: 'failed' });
      for (let n = 0; n < other; n += 1) points.push({ at: z.at, status: 'cancelled' });
    }
    note.textContent = `The batch has more than ${DETAIL_OPERATIONS.toLocaleString()} operations, more than the API lists at once: the chart shows what ended since this page was opened.`;
  }
  if (!points.length) {
    const empty = complete(b)
      ? 'Nothing has ended yet.'
      : running(b)
        ? 'Nothing has ended since this page was opened.'
        : 'The batch had ended before this page was opened.';
    fill(chart, h('p', { class: 'muted empty' }, empty));
    fill(byId('rate-axis'));
    byId('rate-summary').textContent = '';
    return;
  }
  const minute = 60000;
  const earliest = Math.min(...points.map((p) => p.at));
  const lastSeen = Math.max(...points.map((p) => p.at));
  const last = running(b) ? Math.max(lastSeen, Date.now()) : lastSeen;
  // Buckets of a round size, as small as gives at most MAX_BARS of them.
  const seconds = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  const fine = complete(b) ? seconds : seconds.filter((s) => s >= 30); // samples come every few seconds
  const fits = (s) => Math.floor(last / (s * 1000)) - Math.floor(earliest / (s * 1000)) + 1 <= MAX_BARS;
  const step = (fine.find(fits) || Math.ceil((last - earliest) / 1000 / MAX_BARS)) * 1000;
  const first = Math.floor(earliest / step) * step;
  const count = Math.floor((last - first) / step) + 1;
  const buckets = Array.from({ length: count }, (_, i) => ({ at: first + i * step, success: 0, failed: 0, other: 0 }));
  for (const p of points) {
    const i = Math.min(count - 1, Math.floor((p.at - first) / step));
    const key = p.status === 'success' ? 'success' : p.status === 'failed' ? 'failed' : 'other';
    buckets[i][key] += 1;
  }
  const top = Math.max(1, ...buckets.map((k) => k.success + k.failed + k.other));
  const time = (t) => new Date(t).toLocaleTimeString([], step < minute ? { hour: '2-digit', minute: '2-digit', second: '2-digit' } : { hour: '2-digit', minute: '2-digit' });
  const stepText = step < minute ? `${step / 1000} s` : step < 60 * minute ? `${step / minute} min` : `${step / (60 * minute)} h`;
  fill(
    chart,
    buckets.map((k) => {
      const sum = k.success + k.failed + k.other;
      const col = h('div', {
        class: 'col',
        title: `${time(k.at)} + ${stepText}: ${sum} ended (${k.success} success, ${k.failed} failed, ${k.other} cancelled or aborted)`,
      });
      for (const [key, cls] of [['other', 'cancelled'], ['failed', 'failed'], ['success', 'success']]) {
        if (!k[key]) continue;
        const seg = h('span', { class: cls });
        seg.style.height = `${(k[key] / top) * 100}%`;
        col.append(seg);
      }
      return col;
    }),
  );
  fill(
    byId('rate-axis'),
    h('span', {}, time(first)),
    h('span', {}, `bars of ${stepText} · highest ${top}`),
    h('span', {}, time(first + count * step)),
  );
  // Since when the points cover: the batch's start, or this page's first look at it.
  const from = complete(b) ? Date.parse(b.created) : samples[0].at;
  const covered = Math.max(0.5, ((running(b) ? last : lastSeen) - from) / minute);
  const parts = [`${(points.length / covered).toFixed(1)}/min on average`];
  const window_ = Math.min(5, covered);
  const recent = points.filter((p) => p.at >= last - window_ * minute).length;
  if (running(b)) parts.push(`${(recent / window_).toFixed(1)}/min over the last ${window_ < 1 ? `${Math.round(window_ * 60)} s` : `${Math.round(window_)} min`}`);
  byId('rate-summary').textContent = parts.join(' · ');
}

// ---- failures ----

async function drawFailures(b) {
  const c = b.status_counts;
  let failures;
  let more = 0;
  let listedTotal = c.failed + c.aborted;
  if (complete(b)) {
    failures = (b.upgrade_operations || []).filter((op) => op.status === 'failed' || op.status === 'aborted');
  } else {
    // Ended operations do not change: ask again only when the counts did.
    const key = `${c.failed}/${c.aborted}`;
    if (key === failuresKey) return;
    try {
      const [failed, aborted] = await Promise.all(
        ['failed', 'aborted'].map((status) =>
          c[status] ? api.get(`${FW}/upgrade-operation/`, { batch: id, status, page_size: 100 }) : { count: 0, results: [] },
        ),
      );
      failures = [...failed.results, ...aborted.results];
      listedTotal = failed.count + aborted.count;
      more = listedTotal - failures.length;
      failuresKey = key;
    } catch (error) {
      showError(error);
      return;
    }
  }
  // Failed ones first (aborted ones mostly share the batch's reason), newest first.
  failures.sort((x, y) => (x.status === 'failed' ? 0 : 1) - (y.status === 'failed' ? 0 : 1) || String(y.modified).localeCompare(String(x.modified)));
  drawReasons(failures);
  const shown = failures.slice(0, TABLE_ROWS);
  more += failures.length - shown.length;
  const total = listedTotal;
  byId('failures-summary').textContent = total ? `${total.toLocaleString()}${more > 0 ? `, the newest ${shown.length} listed` : ''}` : '';
  fill(
    byId('failures').querySelector('tbody'),
    shown.length
      ? shown.map((op) =>
          h(
            'tr',
            { dataset: { operationId: op.id, status: op.status } },
            h('td', {}, deviceLink(op.device), op.flagged ? h('span', { class: 'flag', title: 'Critical failure: the device may need hands-on recovery' }, ' ⚑ flagged') : null),
            h('td', {}, badge(op.status)),
            h('td', { class: 'hide-narrow', title: when(op.modified) }, ago(op.modified)),
            h('td', { class: 'reason' }, h('div', { class: 'reason-line' }, lastLine(op.log)), h('details', {}, h('summary', {}, 'Log'), h('pre', { class: 'output' }, op.log))),
          ),
        )
      : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No failures.')),
  );
}

/** The reasons of the listed failures, most frequent first. */
function drawReasons(failures) {
  const reasons = new Map();
  for (const op of failures) {
    const key = `${op.status}\u0000${lastLine(op.log)}`;
    reasons.set(key, (reasons.get(key) || 0) + 1);
  }
  const top = [...reasons].sort((a, b) => b[1] - a[1]).slice(0, 5);
  fill(
    byId('failure-reasons'),
    top.map(([key, n]) => {
      const [status, reason] = key.split('\u0000');
      return h('li', { dataset: { status } }, h('strong', {}, `${n.toLocaleString()} ×`), ' ', badge(status), ' ', reason);
    }),
  );
}

function lastLine(log) {
  const lines = String(log || '').split('\n').filter((l) => l.trim());
  return lines.length ? lines[lines.length - 1] : '—';
}

// ---- operations ----

function drawOperations(b) {
  const wanted = byId('operations-status').value;
  const ops = (b.upgrade_operations || []).filter((op) => !wanted || op.status === wanted);
  // Running ones first (furthest along first), then the latest changes.
  ops.sort((x, y) => {
    const rx = x.status === 'in-progress' && x.progress > 0 ? 1 : 0;
    const ry = y.status === 'in-progress' && y.progress > 0 ? 1 : 0;
    return ry - rx || (rx ? y.progress - x.progress : 0) || String(y.modified).localeCompare(String(x.modified));
  });
  const shown = ops.slice(0, OPERATION_ROWS);
  const listed = (b.upgrade_operations || []).length;
  const count = b.upgrade_operations_count ?? listed;
  byId('operations-summary').textContent =
    `${shown.length} of ${ops.length.toLocaleString()} shown` + (count > listed ? ` (the API lists ${listed.toLocaleString()} of ${count.toLocaleString()})` : '');
  fill(
    byId('operations').querySelector('tbody'),
    shown.length
      ? shown.map((op) => {
          const bar = h('div', { class: 'bar small' });
          const fillSpan = h('span', { class: op.status === 'in-progress' ? 'in-progress' : op.status });
          fillSpan.style.width = `${op.status === 'in-progress' || op.status === 'success' ? op.progress : 100}%`;
          bar.append(fillSpan);
          return h(
            'tr',
            { dataset: { operationId: op.id, status: op.status } },
            // Names are looked up for the devices upgrading now only (one request each).
            h('td', {}, deviceLink(op.device, op.status === 'in-progress' && op.progress > 0 ? 'busy' : false)),
            h('td', {}, badge(op.status)),
            h('td', { class: 'progress-cell' }, bar, h('span', { class: 'muted' }, `${op.progress} %`)),
            h('td', { class: 'hide-narrow muted wrap' }, lastLine(op.log)),
            h('td', { title: when(op.modified) }, ago(op.modified)),
          );
        })
      : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No operations.')),
  );
}

// ---- devices' names (the operations carry only ids) ----

/** A link to a device's page, named once its name is known. `lookUp`: 'always' (a short
 * list), 'busy' (skipped while many look-ups wait: redrawn often, it asks again) or false. */
function deviceLink(device, lookUp = 'always') {
  return h('a', { href: `/devices/${device}/`, dataset: { device }, title: device }, nameOf(device, lookUp) || `${device.slice(0, 8)}…`);
}

function nameOf(device, lookUp) {
  const known = deviceNames.get(device);
  if (typeof known === 'string') return known;
  if (!known && (lookUp === 'always' || (lookUp === 'busy' && waiting.length < 20))) {
    deviceNames.set(
      device,
      queue(() => api.get(`/api/v1/controller/device/${device}/`))
        .then((d) => d.name)
        .catch(() => device)
        .then((name) => {
          deviceNames.set(device, name);
          for (const a of document.querySelectorAll(`a[data-device="${device}"]`)) a.textContent = name;
        }),
    );
  }
  return null;
}

// At most four device look-ups at once.
let active = 0;
function queue(task) {
  return new Promise((resolve, reject) => {
    waiting.push({ task, resolve, reject });
    pump();
  });
}
function pump() {
  while (active < 4 && waiting.length) {
    const { task, resolve, reject } = waiting.shift();
    active += 1;
    task()
      .then(resolve, reject)
      .finally(() => {
        active -= 1;
        pump();
      });
  }
}

// ---- cancel ----

async function cancel() {
  if (!batch || !running(batch)) return;
  const left = batch.status_counts['in-progress'];
  if (!window.confirm(`Cancel this rollout? The ${left.toLocaleString()} operation${left === 1 ? '' : 's'} still in progress that have not begun flashing will be cancelled; those flashing will finish.`)) {
    return;
  }
  cancelling = true;
  byId('cancel').disabled = true;
  try {
    batch = await api.post(`${FW}/batch-upgrade-operation/${id}/cancel/`);
    showInfo('Rollout cancelled: operations that had not begun flashing were cancelled.');
    draw(batch);
    await drawFailures(batch);
  } catch (error) {
    showError(error);
  } finally {
    cancelling = false;
    if (batch) byId('cancel').disabled = !running(batch);
  }
}

