// The login page: username and password to POST /api/v1/users/session/, then on to the page
// the user came from (only a path on this site).

import * as api from './api.js';
import { byId, params, showError } from './dom.js';

const form = byId('login-form');
form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  showError(null);
  try {
    await api.post('/api/v1/users/session/', {
      username: form.elements.username.value,
      password: form.elements.password.value,
    });
    window.location.assign(safeNext(params().get('next')));
  } catch (error) {
    showError(error);
    button.disabled = false;
    form.elements.password.select();
  }
});

/** Only a path of this site ("/x", not "//evil.example" or "https://…"). */
function safeNext(next) {
  return next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') ? next : '/';
}

form.elements.username.focus();
