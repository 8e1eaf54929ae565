// The REST API as the console uses it: same origin, the session cookie, and the session's
// CSRF token on every request that changes state. Errors become ApiError with the API's
// own message.

let csrfToken = '';

/** Remembers the session's CSRF token (from POST/GET /api/v1/users/session/). */
export function setCsrf(token) {
  csrfToken = token || '';
}

/** An answer that was not 2xx. */
export class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }
}

/** The API's error body as one line: `detail`, else "field: message" pairs. */
function describe(status, body) {
  if (body && typeof body === 'object') {
    if (typeof body.detail === 'string') return body.detail;
    const parts = [];
    for (const [field, messages] of Object.entries(body)) {
      const text = Array.isArray(messages) ? messages.join(' ') : JSON.stringify(messages);
      parts.push(field === 'non_field_errors' ? text : `${field}: ${text}`);
    }
    if (parts.length) return parts.join(' · ');
  }
  if (typeof body === 'string' && body) return body;
  return `The server answered ${status}.`;
}

/** Sends a request; returns the parsed body (null for 204). */
export async function request(method, path, { body, query, headers = {} } = {}) {
  const url = withQuery(path, query);
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (method !== 'GET' && method !== 'HEAD') init.headers['X-CSRFToken'] = csrfToken;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, { detail: `The server cannot be reached (${error.message}).` });
  }
  const text = await response.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  if (response.status === 401 && !path.startsWith('/api/v1/users/session/')) {
    toLogin();
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

/** Sends the browser to the login page, to come back here afterwards. */
export function toLogin() {
  const next = window.location.pathname + window.location.search;
  window.location.assign(`/login/?next=${encodeURIComponent(next)}`);
}

function withQuery(path, query) {
  if (!query) return path;
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `${path}${path.includes('?') ? '&' : '?'}${text}` : path;
}

export const get = (path, query) => request('GET', path, { query });
export const post = (path, body) => request('POST', path, { body });
export const patch = (path, body) => request('PATCH', path, { body });
export const del = (path) => request('DELETE', path);

/** Every page of a list (for the small lists: organizations, groups, categories). */
export async function all(path, query = {}) {
  const items = [];
  for (let page = 1; page <= 100; page += 1) {
    const answer = await get(path, { ...query, page, page_size: 100 });
    const results = Array.isArray(answer) ? answer : answer.results || [];
    items.push(...results);
    if (Array.isArray(answer) || !answer.next) break;
  }
  return items;
}

/**
 * Uploads a multipart form with progress: onProgress(sentBytes, totalBytes).
 * fetch() cannot report upload progress, so this one uses XMLHttpRequest.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.withCredentials = true;
    xhr.setRequestHeader('X-CSRFToken', csrfToken);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener('load', () => {
      let parsed = null;
      try {
        parsed = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        parsed = xhr.responseText;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(parsed);
      else reject(new ApiError(xhr.status, parsed));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, { detail: 'The upload failed: the server cannot be reached.' })));
    xhr.send(form);
  });
}

/**
 * Runs fn at most once per `gap` ms; a call while it runs or waits runs it once more after.
 * For re-reads that live events ask for: a burst of events costs one or two requests.
 */
export /** fn at most once per `gap` ms; a call while one runs or waits runs it once more after. */
function throttled(fn, gap) {
  let running = false;
  let pending = false;
  let timer = null;
  let last = 0;
  const run = async () => {
    timer = null;
    running = true;
    pending = false;
    last = Date.now();
    try {
      await fn();
    } finally {
      running = false;
      if (pending) schedule();
    }
  };
  const schedule = () => {
    pending = true;
    if (running || timer) return;
    timer = setTimeout(run, Math.max(0, last + gap - Date.now()));
  };
  return schedule;
}

/** Runs fn on every item, `limit` at a time (requests that would otherwise go all at once). */
export async function pool(items, limit, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
