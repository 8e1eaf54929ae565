// The live event stream (GET /api/v1/events/): one EventSource per page, shared by every
// view on it. The browser reconnects by itself; after a reconnect or a `lagged` event the
// views reload what they show, since events may have been missed.

import { toLogin } from './api.js';

/** Wait before opening a refused stream again. */
const RETRY_MS = 5000;

const handlers = new Map();
const resyncs = new Set();
let source = null;

/** Calls fn(data) for each event of `type` (presence, command, batch, upgrade). */
export function on(type, fn) {
  if (!handlers.has(type)) {
    handlers.set(type, new Set());
    if (source) listen(type);
  }
  handlers.get(type).add(fn);
  connect();
}

/** Calls fn() when events may have been missed (reconnected, lagged): reload. */
export function onResync(fn) {
  resyncs.add(fn);
  connect();
}

function connect() {
  if (source) return;
  source = new EventSource('/api/v1/events/');
  // Every open (the first one too) reloads the views: what changed before the stream was
  // open is in what they load then, and what changes after comes as events.
  source.addEventListener('open', () => {
    setState('open');
    resync();
  });
  source.addEventListener('error', () => {
    setState('error');
    // The browser retries a dropped stream by itself, but not one the server refused
    // (401 once the session is revoked, 503 when too many streams are open).
    if (source.readyState === EventSource.CLOSED) refused();
  });
  source.addEventListener('lagged', resync);
  for (const type of handlers.keys()) listen(type);
}

/** The stream was refused: to the login page if the session is gone, else retry later. */
async function refused() {
  source = null;
  try {
    const answer = await fetch('/api/v1/users/session/', { credentials: 'same-origin' });
    if (answer.status === 401) {
      toLogin();
      return;
    }
  } catch {
    // The server is unreachable; retry below.
  }
  setTimeout(connect, RETRY_MS);
}

function listen(type) {
  source.addEventListener(type, (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    for (const fn of handlers.get(type) || []) fn(data);
  });
}

function resync() {
  for (const fn of resyncs) fn();
}

function setState(state) {
  const dot = document.getElementById('live-state');
  if (dot) {
    dot.dataset.state = state;
    dot.title = state === 'open' ? 'Live: changes appear as they happen' : 'Live updates interrupted; reconnecting';
  }
}
