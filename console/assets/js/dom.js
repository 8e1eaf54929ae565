// Small DOM helpers. Everything the console shows goes through textContent, never innerHTML,
// so a device named "<script>" is only text.

/** Creates an element: h('a', {href: '/x', class: 'y'}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** The element with this id (throws if the page lacks it: a bug, not input). */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`no #${id} on this page`);
  return el;
}

/** A status badge: colour by `status`, text `label` (default: the status). */
export function badge(status, label = status) {
  return h('span', { class: 'badge', dataset: { status } }, label);
}

/** A timestamp as local date and time, or '—'. */
export function when(value) {
  if (!value) return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** "3 min ago" style age of a timestamp. */
export function ago(value) {
  if (!value) return '—';
  const seconds = Math.round((Date.now() - new Date(value).getTime()) / 1000);
  if (!Number.isFinite(seconds)) return String(value);
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

/** Shows an error (or clears it with null) in the page's #messages box. */
export function showError(error) {
  const box = document.getElementById('messages');
  if (!box) return;
  if (!error) {
    box.replaceChildren();
    return;
  }
  fill(box, h('div', { class: 'alert error', role: 'alert' }, error.message || String(error)));
}

/** Shows a passing note in #messages. */
export function showInfo(text) {
  const box = document.getElementById('messages');
  if (box) fill(box, h('div', { class: 'alert info', role: 'status' }, text));
}

/** The query parameters of the current address. */
export function params() {
  return new URLSearchParams(window.location.search);
}

/** The last non-empty path segment: the id of /devices/<id>/. */
export function pathId() {
  return window.location.pathname.split('/').filter(Boolean).pop() || '';
}

/** Text made safe for the few library options that take HTML (Leaflet's attribution). */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** An error shown at the top of one panel, so the others still work; null clears it. */
export function panelError(panelId, error) {
  const panel = byId(panelId);
  let box = panel.querySelector('.panel-error');
  if (!error) {
    if (box) box.remove();
    return;
  }
  if (!box) {
    box = h('div', { class: 'alert error panel-error', role: 'alert' });
    (panel.querySelector('.detail-head') || panel.querySelector('h2')).after(box);
  }
  box.textContent = error.status === 403 ? `You may not see this: ${error.message}` : error.message || String(error);
}

/** [lat, lng] of a GeoJSON Point, or the middle of a Polygon's outer ring. */
export /** [lat, lng] of a GeoJSON Point, or the middle of a Polygon's outer ring. */
function pointOf(geometry) {
  if (!geometry) return null;
  if (geometry.type === 'Point' && Array.isArray(geometry.coordinates)) {
    const [lng, lat] = geometry.coordinates;
    return Number.isFinite(lat) && Number.isFinite(lng) ? [lat, lng] : null;
  }
  if (geometry.type === 'Polygon' && Array.isArray(geometry.coordinates) && geometry.coordinates[0]) {
    const ring = geometry.coordinates[0].filter((p) => Array.isArray(p) && p.length >= 2);
    if (!ring.length) return null;
    return [ring.reduce((s, p) => s + p[1], 0) / ring.length, ring.reduce((s, p) => s + p[0], 0) / ring.length];
  }
  return null;
}
