// Firmware: categories (lines of firmware), their builds (versions) and each build's image
// files, within the chosen organization (shared categories included). The chosen category and
// build are in the address (?category=&build=) so a reload or a link shows the same.

import * as api from './api.js';
import { start, orgName } from './layout.js';
import { h, fill, byId, ago, when, showError, showInfo } from './dom.js';

const FW = '/api/v1/firmware-upgrader';

const ctx = await start('firmware');
const multiOrg = ctx.organizations.length > 1 && !ctx.organization;
let categories = [];
let builds = [];
let images = [];
let imageTypes = [];
let state = readState();
let uploading = false;

for (const column of document.querySelectorAll('.org-column')) column.classList.toggle('hidden', !multiOrg);
setupOrganizationField();

byId('category-form').addEventListener('submit', createCategory);
byId('build-form').addEventListener('submit', createBuild);
byId('upload-form').addEventListener('submit', uploadImage);
byId('image-type').addEventListener('change', showBoards);
for (const input of document.querySelectorAll('input, select, textarea')) {
  input.addEventListener('input', () => input.removeAttribute('aria-invalid'));
}
window.addEventListener('popstate', () => {
  state = readState();
  refresh();
});

await Promise.all([loadCategories(), loadImageTypes()]);
await refresh();

function readState() {
  const query = new URLSearchParams(window.location.search);
  return { category: query.get('category') || '', build: query.get('build') || '' };
}

function writeState() {
  const query = new URLSearchParams();
  if (state.category) query.set('category', state.category);
  if (state.build) query.set('build', state.build);
  const text = query.toString();
  history.pushState(null, '', text ? `?${text}` : window.location.pathname);
}

async function select(category, build = '') {
  state = { category, build };
  writeState();
  await refresh();
}

/** Builds of the chosen category and images of the chosen build, as the state says. */
async function refresh() {
  if (state.category && !categories.some((c) => c.id === state.category)) state = { category: '', build: '' };
  // Nothing chosen yet: the first category (the address stays as it is).
  if (!state.category && categories.length) state.category = categories[0].id;
  drawCategories();
  await loadBuilds();
  if (state.build && !builds.some((b) => b.id === state.build)) state.build = '';
  drawBuilds();
  await loadImages();
  drawImages();
}

// ---- categories ----

async function loadCategories() {
  try {
    const all = await api.all(`${FW}/category/`);
    // The chosen organization's own categories and shared ones (the API's organization
    // filter would leave the shared ones out).
    categories = all.filter((c) => !ctx.organization || !c.organization || c.organization === ctx.organization);
    categories.sort((a, b) => a.name.localeCompare(b.name));
  } catch (error) {
    showError(error);
  }
}

function organizationText(org) {
  return org ? orgName(ctx.organizations, org) : 'shared';
}

function drawCategories() {
  fill(
    byId('categories').querySelector('tbody'),
    categories.length
      ? categories.map((c) =>
          h(
            'tr',
            {
              dataset: { categoryId: c.id },
              class: c.id === state.category ? 'selected' : undefined,
              'aria-selected': c.id === state.category ? 'true' : 'false',
              onclick: (event) => {
                if (event.ctrlKey || event.metaKey || event.shiftKey || event.button > 0) return; // a new tab
                if (event.target.closest('a')) event.preventDefault();
                if (c.id !== state.category) select(c.id);
              },
            },
            h('td', {}, h('a', { href: `?category=${c.id}` }, c.name)),
            h('td', { class: multiOrg ? 'org-column' : 'org-column hidden' }, organizationText(c.organization)),
            h('td', { class: 'hide-narrow muted wrap' }, c.description || '—'),
          ),
        )
      : h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No categories yet: create one below.')),
  );
  byId('categories-summary').textContent = categories.length ? String(categories.length) : '';
  const buildCategory = byId('build-category');
  fill(
    buildCategory,
    h('option', { value: '' }, 'Choose a category…'),
    categories.map((c) => h('option', { value: c.id, selected: c.id === state.category }, multiOrg ? `${c.name} (${organizationText(c.organization)})` : c.name)),
  );
  if (!categories.length) byId('category-create').open = true;
}

/** The organization of a new category: the chosen one, else a select of the user's. */
function setupOrganizationField() {
  const field = byId('category-organization-field');
  const select = byId('category-organization');
  if (ctx.organization) {
    fill(select, h('option', { value: ctx.organization }, orgName(ctx.organizations, ctx.organization)));
    field.classList.add('hidden');
    return;
  }
  fill(
    select,
    ctx.organizations.length === 1 ? null : h('option', { value: '' }, 'Choose an organization…'),
    ctx.organizations.map((o) => h('option', { value: o.id }, o.name)),
    ctx.session.is_superuser ? h('option', { value: 'shared' }, 'Shared: every organization') : null,
  );
  field.classList.toggle('hidden', ctx.organizations.length === 1 && !ctx.session.is_superuser);
}

async function createCategory(event) {
  event.preventDefault();
  const name = byId('category-name');
  const org = byId('category-organization');
  if (!name.value.trim()) return invalid(name, 'A category needs a name.');
  if (!org.value) return invalid(org, 'Choose the organization of the category.');
  const button = byId('category-submit');
  button.disabled = true;
  try {
    const created = await api.post(`${FW}/category/`, {
      name: name.value.trim(),
      description: byId('category-description').value,
      organization: org.value === 'shared' ? null : org.value,
    });
    showInfo(`Category "${created.name}" created.`);
    byId('category-form').reset();
    setupOrganizationField();
    byId('category-create').open = false;
    await loadCategories();
    await select(created.id);
    byId('build-create').open = true;
    byId('build-version').focus();
  } catch (error) {
    fieldErrors(error, { name: 'category-name', description: 'category-description', organization: 'category-organization' });
  } finally {
    button.disabled = false;
  }
}

// ---- builds ----

async function loadBuilds() {
  builds = [];
  if (!state.category) return;
  try {
    builds = await api.all(`${FW}/build/`, { category: state.category });
    builds.sort((a, b) => String(b.created).localeCompare(String(a.created)));
  } catch (error) {
    showError(error);
  }
}

function drawBuilds() {
  const category = categories.find((c) => c.id === state.category);
  byId('builds-title').textContent = category ? `Builds of ${category.name}` : 'Builds';
  byId('builds-empty').classList.toggle('hidden', Boolean(category));
  byId('builds').classList.toggle('hidden', !category);
  fill(
    byId('builds').querySelector('tbody'),
    builds.length
      ? builds.map((b) =>
          h(
            'tr',
            {
              dataset: { buildId: b.id },
              class: b.id === state.build ? 'selected' : undefined,
              'aria-selected': b.id === state.build ? 'true' : 'false',
              onclick: (event) => {
                if (event.target.closest('a.rollout-link')) return;
                if (event.ctrlKey || event.metaKey || event.shiftKey || event.button > 0) return; // a new tab
                if (event.target.closest('a')) event.preventDefault();
                if (b.id !== state.build) select(state.category, b.id);
              },
            },
            h('td', {}, h('a', { href: `?category=${state.category}&build=${b.id}` }, b.version)),
            h('td', { class: 'wrap' }, b.os || '—'),
            h('td', { class: 'hide-narrow muted wrap changelog', title: b.changelog }, firstLine(b.changelog)),
            h('td', { class: 'hide-narrow', title: when(b.created) }, ago(b.created)),
            h('td', {}, h('a', { class: 'rollout-link', href: `/rollouts/?build=${b.id}` }, 'Roll out')),
          ),
        )
      : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No builds in this category yet.')),
  );
  const buildCategory = byId('build-category');
  if (state.category) buildCategory.value = state.category;
}

function firstLine(text) {
  const line = String(text || '').split('\n').find((l) => l.trim()) || '—';
  return line.length > 80 ? `${line.slice(0, 79)}…` : line;
}

async function createBuild(event) {
  event.preventDefault();
  const version = byId('build-version');
  const category = byId('build-category');
  if (!category.value) return invalid(category, 'Choose the category of the build.');
  if (!version.value.trim()) return invalid(version, 'A build needs a version.');
  const button = byId('build-submit');
  button.disabled = true;
  try {
    const created = await api.post(`${FW}/build/`, {
      category: category.value,
      version: version.value.trim(),
      os: byId('build-os').value.trim(),
      changelog: byId('build-changelog').value,
    });
    showInfo(`Build ${created.version} created: upload its images below.`);
    byId('build-form').reset();
    byId('build-create').open = false;
    await select(created.category, created.id);
    byId('image-type').focus();
  } catch (error) {
    fieldErrors(error, { version: 'build-version', category: 'build-category', os: 'build-os', changelog: 'build-changelog' });
  } finally {
    button.disabled = false;
  }
}

// ---- images ----

async function loadImageTypes() {
  try {
    imageTypes = await api.get(`${FW}/image-type/`);
    if (!Array.isArray(imageTypes)) imageTypes = imageTypes.results || [];
    imageTypes.sort((a, b) => (a.label || a.name).localeCompare(b.label || b.name));
    byId('image-type').append(
      ...imageTypes.map((t) => h('option', { value: t.name, title: t.name }, t.label && t.label !== t.name ? `${t.label} — ${t.name}` : t.name)),
    );
  } catch (error) {
    showError(error);
  }
}

function showBoards() {
  const type = imageTypes.find((t) => t.name === byId('image-type').value);
  byId('image-type-boards').textContent = type ? `Fits: ${type.boards.join(', ')}` : '';
}

async function loadImages() {
  images = [];
  if (!state.build) return;
  try {
    images = await api.all(`${FW}/build/${state.build}/image/`);
  } catch (error) {
    showError(error);
  }
}

function drawImages() {
  const build = builds.find((b) => b.id === state.build);
  byId('images-title').textContent = build ? `Images of ${build.version}` : 'Images';
  byId('images-empty').classList.toggle('hidden', Boolean(build));
  byId('images').classList.toggle('hidden', !build);
  byId('upload-form').classList.toggle('hidden', !build || !state.build);
  const taken = new Set(images.map((i) => i.type));
  for (const option of byId('image-type').options) {
    option.disabled = Boolean(option.value) && taken.has(option.value);
  }
  if (byId('image-type').selectedOptions[0] && byId('image-type').selectedOptions[0].disabled) byId('image-type').value = '';
  showBoards();
  fill(
    byId('images').querySelector('tbody'),
    images.length
      ? images.map((image) =>
          h(
            'tr',
            { dataset: { imageId: image.id } },
            h('td', { class: 'mono wrap' }, image.type),
            h('td', { title: `${image.size.toLocaleString()} bytes` }, size(image.size)),
            h('td', { class: 'hide-narrow mono sha', title: image.sha256 }, image.sha256 ? `${image.sha256.slice(0, 16)}…` : '—'),
            h('td', { class: 'hide-narrow', title: when(image.created) }, ago(image.created)),
            h(
              'td',
              { class: 'actions' },
              h('a', { href: image.file, download: '' }, 'Download'),
              h('button', { type: 'button', class: 'danger small delete-image', onclick: () => deleteImage(image) }, 'Delete'),
            ),
          ),
        )
      : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No images yet: upload one per board type below.')),
  );
}

function size(bytes) {
  if (!Number.isFinite(bytes)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let n = bytes;
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return unit ? `${n.toFixed(n < 10 ? 1 : 0)} ${units[unit]}` : `${bytes} B`;
}

async function uploadImage(event) {
  event.preventDefault();
  if (uploading || !state.build) return;
  const type = byId('image-type');
  const file = byId('image-file');
  if (!type.value) return invalid(type, 'Choose the image type.');
  if (!file.files.length) return invalid(file, 'Choose the image file.');
  const form = new FormData();
  form.append('type', type.value);
  form.append('file', file.files[0]);
  const build = state.build;
  const box = byId('upload-progress');
  const bar = box.querySelector('.bar');
  const span = bar.querySelector('span');
  const text = byId('upload-text');
  const total = file.files[0].size;
  const progress = (sent, of) => {
    const percent = of ? Math.floor((sent / of) * 100) : 0;
    span.style.width = `${percent}%`;
    bar.setAttribute('aria-valuenow', String(percent));
    text.textContent = sent >= of ? `${size(of)} sent; the server checks the file…` : `${size(sent)} of ${size(of)} (${percent} %)`;
  };
  uploading = true;
  byId('upload').disabled = true;
  box.classList.remove('hidden');
  box.dataset.state = 'uploading';
  progress(0, total);
  try {
    const image = await api.upload(`${FW}/build/${build}/image/`, form, progress);
    box.dataset.state = 'done';
    span.style.width = '100%';
    bar.setAttribute('aria-valuenow', '100');
    text.textContent = `Uploaded ${image.type} (${size(image.size)}).`;
    showInfo(`Image ${image.type} uploaded.`);
    byId('upload-form').reset();
    if (state.build === build) {
      await loadImages();
      drawImages();
    }
  } catch (error) {
    box.dataset.state = 'failed';
    text.textContent = 'The upload failed.';
    fieldErrors(error, { type: 'image-type', file: 'image-file' });
  } finally {
    uploading = false;
    byId('upload').disabled = false;
  }
}

async function deleteImage(image) {
  if (!window.confirm(`Delete the image ${image.type}? Devices can no longer be upgraded to it.`)) return;
  try {
    await api.del(`${FW}/build/${image.build}/image/${image.id}/`);
    showInfo(`Image ${image.type} deleted.`);
    await loadImages();
    drawImages();
  } catch (error) {
    showError(error);
  }
}

// ---- form errors ----

function invalid(input, message) {
  input.setAttribute('aria-invalid', 'true');
  input.focus();
  showError(new Error(message));
}

function fieldErrors(error, inputs) {
  showError(error);
  if (error && error.body && typeof error.body === 'object') {
    for (const key of Object.keys(error.body)) {
      if (inputs[key]) byId(inputs[key]).setAttribute('aria-invalid', 'true');
    }
  }
}
