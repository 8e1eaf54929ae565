// What every page but the login shares: the session (or a trip to the login page), the top
// bar with navigation, the organization switcher and logout.

import * as api from './api.js';
import { h, fill, byId } from './dom.js';

const PAGES = [
  ['fleet', 'Fleet', '/'],
  ['map', 'Map', '/map/'],
  ['locations', 'Locations', '/locations/'],
  ['configuration', 'Configuration', '/configuration/'],
  ['rollouts', 'Rollouts', '/rollouts/'],
  ['firmware', 'Firmware', '/firmware/'],
  ['software', 'Software', '/software/'],
];
const ORG_KEY = 'fleetmq.organization';

/**
 * Starts a page: checks the session, draws the top bar and returns
 * { session, organizations, organization } where `organization` is the chosen
 * organization's id ('' for all of the user's organizations).
 */
export async function start(current) {
  let session;
  try {
    session = await api.get('/api/v1/users/session/');
  } catch (error) {
    if (error.status !== 401) throw error;
    api.toLogin();
    return new Promise(() => {});
  }
  api.setCsrf(session.csrf_token);
  let organizations = [];
  try {
    organizations = await api.all('/api/v1/users/organization/');
  } catch {
    organizations = [];
  }
  let organization = localStorage.getItem(ORG_KEY) || '';
  if (!organizations.some((org) => org.id === organization)) organization = '';
  drawTopbar(current, session, organizations, organization);
  return { session, organizations, organization };
}

function drawTopbar(current, session, organizations, organization) {
  const bar = byId('topbar');
  const switcher = h(
    'select',
    {
      id: 'organization',
      'aria-label': 'Organization',
      onchange: (event) => {
        localStorage.setItem(ORG_KEY, event.target.value);
        window.location.reload();
      },
    },
    h('option', { value: '' }, session.is_superuser ? 'All organizations' : 'My organizations'),
    organizations.map((org) => h('option', { value: org.id, selected: org.id === organization }, org.name)),
  );
  fill(
    bar,
    h('a', { class: 'brand', href: '/' }, 'fleetmq'),
    h(
      'nav',
      {},
      PAGES.map(([key, label, href]) =>
        h('a', { href, 'aria-current': key === current ? 'page' : undefined }, label),
      ),
    ),
    h(
      'div',
      { class: 'who' },
      organizations.length > 1 ? switcher : null,
      h('span', { id: 'live-state', class: 'live-dot', title: 'Live updates' }),
      h('span', { id: 'username' }, session.username),
      h('button', { id: 'logout', type: 'button', onclick: logout }, 'Log out'),
    ),
  );
}

async function logout() {
  try {
    await api.del('/api/v1/users/session/');
  } finally {
    window.location.assign('/login/');
  }
}

/** The organization's name by id (for tables that span several). */
export function orgName(organizations, id) {
  const org = organizations.find((o) => o.id === id);
  return org ? org.name : id;
}
