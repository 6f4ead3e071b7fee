// Cadenza speaker web UI: plain ES2020, no build step, no framework, nothing from elsewhere.
//
// The view follows the speaker's live events (GET /api/v1/events); commands' responses
// update it too. API reference: /api/v1/openapi.json.
'use strict';

(() => {
  const API = '/api/v1';
  const TOKEN_KEY = 'cadenza.token';
  const REPEAT_NEXT = { off: 'all', all: 'one', one: 'off' };
  const STATUS_TEXT = {
    playing: 'Playing',
    paused: 'Paused',
    buffering: 'Buffering…',
    loading: 'Loading…',
    stopped: 'Stopped',
  };

  // --- tiny DOM helpers ------------------------------------------------------------------------

  const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key === 'testid') node.dataset.testid = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  function icon(name) {
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('aria-hidden', 'true');
    const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
    use.setAttribute('href', `#i-${name}`);
    svg.append(use);
    return svg;
  }

  function setIcon(button, name) {
    button.querySelector('use').setAttribute('href', `#i-${name}`);
  }

  function fmtTime(ms) {
    if (!Number.isFinite(ms) || ms < 0) ms = 0;
    const s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
  }

  // Track records come in two shapes: summaries (state: artists are names, album a title)
  // and catalog records (search: artists and album are objects).
  const artistNames = (t) =>
    (t?.artists || []).map((a) => (typeof a === 'string' ? a : a?.name)).filter(Boolean);
  const albumTitle = (t) => (typeof t?.album === 'string' ? t.album : t?.album?.title) || '';

  function hue(text) {
    let h = 0;
    for (const ch of String(text)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return h % 360;
  }

  function initial(text) {
    const m = String(text || '').match(/[\p{L}\p{N}]/u);
    return m ? m[0].toUpperCase() : '♪';
  }

  // A placeholder for artwork: a gradient picked from the name, and its initial.
  function paintArt(node, name) {
    const h = hue(name || '');
    node.style.setProperty('--h1', String(h));
    node.style.setProperty('--h2', String((h + 70) % 360));
    const letter = node.querySelector('.art-letter') || node;
    letter.textContent = initial(name);
  }

  function browserName() {
    const ua = navigator.userAgent;
    const browser = /Edg\//.test(ua) ? 'Edge' : /Firefox\//.test(ua) ? 'Firefox'
      : /Chrom(e|ium)\//.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : 'Browser';
    const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS'
      : /Mac OS X/.test(ua) ? 'macOS' : /Windows/.test(ua) ? 'Windows'
      : /Linux/.test(ua) ? 'Linux' : '';
    return os ? `${browser} on ${os}` : browser;
  }

  // --- toasts -------------------------------------------------------------------------------------

  function toast(message, kind = 'error') {
    const box = $('toasts');
    for (const shown of box.children) if (shown.textContent === message) return;
    const node = el('div', {
      class: 'toast',
      role: kind === 'error' ? 'alert' : 'status',
      'data-kind': kind,
      testid: 'toast',
      text: message,
    });
    box.append(node);
    while (box.children.length > 3) box.firstElementChild.remove();
    setTimeout(() => node.remove(), kind === 'error' ? 6000 : 2000);
  }

  // --- API ------------------------------------------------------------------------------------------

  let token = null;
  try {
    token = localStorage.getItem(TOKEN_KEY);
  } catch {
    token = null;
  }

  function saveToken(value) {
    token = value;
    try {
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      /* private mode: the token lives as long as the page */
    }
    renderAuth();
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // quiet: no toast (the caller handles the error); anonymous: no token (pairing);
  // pair: a 401 opens the pairing panel.
  async function api(method, path, body, { quiet = false, anonymous = false, pair = true } = {}) {
    const headers = { Accept: 'application/json' };
    if (token && !anonymous) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (err) {
      const message = 'The speaker cannot be reached.';
      if (!quiet) toast(message);
      throw new ApiError(0, message);
    }
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const message = data?.error?.message || `${res.status} ${res.statusText}`;
      if (res.status === 401 && pair && !anonymous) {
        needPairing(message);
      } else if (!quiet) {
        toast(message);
      }
      throw new ApiError(res.status, message);
    }
    return data;
  }

  // Fire a command; its response (a state or a part of it) updates the view.
  async function command(method, path, body) {
    try {
      const data = await api(method, path, body);
      if (data && typeof data === 'object') update(data);
      return data;
    } catch {
      return null; // already shown
    }
  }

  // --- state ------------------------------------------------------------------------------------------

  const S = {
    name: '',
    status: 'stopped',
    track: null,
    index: -1,
    queue: [],
    volume: 0,
    max_volume: 100,
    shuffle: false,
    repeat: 'off',
    session: null,
    position_ms: 0,
  };
  // Where the playhead was at a known moment; it advances between events while playing.
  const clock = { ms: 0, at: performance.now() };
  const dirty = new Set();
  let frameRequested = false;

  function update(part) {
    // Leaving "playing": hold the playhead where it is now until the speaker says where.
    if ('status' in part && part.status !== 'playing' && S.status === 'playing') {
      clock.ms = currentPosition();
      clock.at = performance.now();
    }
    for (const [key, value] of Object.entries(part)) {
      if (key === 'position_ms') {
        clock.ms = value || 0;
        clock.at = performance.now();
      }
      if (!(key in S)) continue; // the rest of the state (statistics) is not shown here
      S[key] = value;
      dirty.add(key);
    }
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(render);
    }
  }

  function render() {
    frameRequested = false;
    const has = (...keys) => keys.some((k) => dirty.has(k));
    if (has('name')) renderName();
    if (has('track', 'queue')) renderTrack();
    if (has('status', 'track', 'queue')) renderStatus();
    if (has('volume', 'max_volume')) renderVolume();
    if (has('shuffle', 'repeat')) renderModes();
    if (has('queue', 'index', 'track', 'status')) renderQueue();
    if (has('session')) renderSession();
    dirty.clear();
    renderPosition();
  }

  // --- header ---------------------------------------------------------------------------------------

  function renderName() {
    $('speaker-name').textContent = S.name || 'Speaker';
    const input = $('rename-input');
    if (document.activeElement !== input) input.value = S.name || '';
    updateTitle();
  }

  function updateTitle() {
    const t = S.track;
    document.title = t ? `${t.title} · ${S.name || 'Cadenza'}` : S.name || 'Cadenza';
  }

  function renderSession() {
    const session = S.session || {};
    const state = session.state || 'starting';
    const node = $('session-state');
    node.dataset.state = state;
    const text = {
      online: 'online',
      connecting: 'connecting',
      starting: 'starting',
      offline: 'offline',
      'needs-login': 'needs login',
    }[state] || state;
    node.querySelector('.session-text').textContent = text;
    node.title = `Music service: ${text}${session.error ? ` (${session.error})` : ''}`;
    $('about-service').textContent =
      `${text}${session.access_point ? ` · ${session.access_point}` : ''}` +
      `${session.user ? ` · ${session.user}` : ''}`;
  }

  // --- now playing ----------------------------------------------------------------------------------

  function renderTrack() {
    const t = S.track;
    const art = $('artwork');
    if (t) {
      $('title').textContent = t.title || 'Untitled';
      $('artists').textContent = artistNames(t).join(', ');
      $('album').textContent = albumTitle(t);
      art.dataset.empty = 'false';
      paintArt(art, albumTitle(t) || t.title);
    } else {
      $('title').textContent = 'Nothing playing';
      $('artists').textContent = S.queue.length ? 'Press play to start the queue'
        : 'Search for something to play';
      $('album').textContent = '';
      art.dataset.empty = 'true';
      art.querySelector('.art-letter').textContent = '♪';
    }
    const duration = t?.duration_ms || 0;
    const seek = $('seek');
    seek.max = String(duration);
    seek.disabled = !t;
    $('duration').textContent = fmtTime(duration);
    updateTitle();
  }

  function renderStatus() {
    const status = S.status || 'stopped';
    const node = $('status');
    node.dataset.status = status;
    node.textContent = STATUS_TEXT[status] || status;
    const button = $('play-pause');
    const active = ['playing', 'buffering', 'loading'].includes(status);
    button.dataset.state = active ? 'pause' : 'play';
    button.setAttribute('aria-label', active ? 'Pause' : 'Play');
    setIcon(button, active ? 'pause' : 'play');
    button.disabled = !active && status !== 'paused' && S.queue.length === 0;
    $('previous').disabled = !S.track && S.queue.length === 0;
    $('next').disabled = !S.track;
  }

  let seeking = false;

  function currentPosition() {
    let ms = clock.ms;
    if (S.status === 'playing') ms += performance.now() - clock.at;
    const duration = S.track?.duration_ms || 0;
    return duration ? Math.min(ms, duration) : S.track ? ms : 0;
  }

  function renderPosition() {
    const ms = currentPosition();
    if (!seeking) $('seek').value = String(Math.round(ms));
    $('position').textContent = fmtTime(seeking ? Number($('seek').value) : ms);
    $('seek').setAttribute('aria-valuetext', `${fmtTime(ms)} of ${fmtTime(S.track?.duration_ms)}`);
  }

  // The playhead moves smoothly while playing (only when the page is visible).
  function tick() {
    if (S.status === 'playing' && !document.hidden) renderPosition();
    requestAnimationFrame(tick);
  }

  function renderModes() {
    const shuffle = $('shuffle');
    shuffle.setAttribute('aria-pressed', String(Boolean(S.shuffle)));
    shuffle.setAttribute('aria-label', S.shuffle ? 'Shuffle: on' : 'Shuffle: off');
    const repeat = $('repeat');
    const mode = S.repeat || 'off';
    repeat.dataset.mode = mode;
    repeat.setAttribute(
      'aria-label',
      { off: 'Repeat: off', all: 'Repeat: all', one: 'Repeat: this track' }[mode],
    );
    setIcon(repeat, mode === 'one' ? 'repeat-one' : 'repeat');
  }

  let volumeHeld = false; // the user is dragging: events must not move the slider back
  let volumeTimer = null;

  function renderVolume() {
    const slider = $('volume');
    slider.max = String(S.max_volume ?? 100);
    if (!volumeHeld) slider.value = String(S.volume ?? 0);
    $('volume-value').textContent = String(volumeHeld ? slider.value : S.volume ?? 0);
    slider.setAttribute('aria-valuetext', `${slider.value} of ${slider.max}`);
  }

  function sendVolume(final) {
    const value = Number($('volume').value);
    $('volume-value').textContent = String(value);
    if (volumeTimer) return; // one request per 150 ms while dragging; the last one always
    const go = () => {
      volumeTimer = null;
      command('PUT', '/volume', { volume: Number($('volume').value) });
    };
    if (final) go();
    else volumeTimer = setTimeout(go, 150);
  }

  function wireNowPlaying() {
    $('play-pause').addEventListener('click', () => {
      const status = S.status;
      if (['playing', 'buffering', 'loading'].includes(status)) command('POST', '/pause');
      else if (status === 'paused') command('POST', '/resume');
      else if (S.queue.length) {
        const from = Math.max(0, S.index);
        command('POST', '/play', { uris: S.queue.slice(from, from + 1000).map((t) => t.uri) });
      }
    });
    $('next').addEventListener('click', () => command('POST', '/next'));
    $('previous').addEventListener('click', () => {
      if (S.track) command('POST', '/previous');
      else if (S.queue.length) {
        command('POST', '/play', { uris: S.queue.slice(0, 1000).map((t) => t.uri) });
      }
    });
    $('shuffle').addEventListener('click', () => command('PUT', '/shuffle', { shuffle: !S.shuffle }));
    $('repeat').addEventListener('click', () =>
      command('PUT', '/repeat', { repeat: REPEAT_NEXT[S.repeat] || 'off' }),
    );

    const volume = $('volume');
    volume.addEventListener('pointerdown', () => {
      volumeHeld = true;
    });
    volume.addEventListener('input', () => sendVolume(false));
    volume.addEventListener('change', () => {
      clearTimeout(volumeTimer);
      volumeTimer = null;
      volumeHeld = false;
      sendVolume(true);
    });
    volume.addEventListener('pointerup', () => {
      volumeHeld = false;
    });

    const seek = $('seek');
    seek.addEventListener('pointerdown', () => {
      seeking = true;
    });
    seek.addEventListener('input', () => {
      seeking = true;
      renderPosition();
    });
    seek.addEventListener('change', async () => {
      const target = Number(seek.value);
      clock.ms = target;
      clock.at = performance.now();
      seeking = false;
      await command('POST', '/seek', { position_ms: target });
    });
  }

  // --- search --------------------------------------------------------------------------------------------

  let searchSeq = 0;
  let searchTimer = null;

  function wireSearch() {
    const input = $('search-input');
    input.addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => search(input.value), 250);
    });
    $('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      clearTimeout(searchTimer);
      search(input.value);
      input.blur(); // phones: hide the keyboard to show the results
    });
  }

  async function search(text) {
    const q = text.trim();
    const seq = ++searchSeq;
    if (!q) {
      showResults([], []);
      $('search-hint').textContent = 'Type a few letters of a title, an artist or an album.';
      $('search-hint').hidden = false;
      return;
    }
    const query = (type, limit) =>
      api('GET', `/search?q=${encodeURIComponent(q)}&type=${type}&limit=${limit}`);
    let tracks;
    let albums;
    try {
      [tracks, albums] = await Promise.all([query('track', 25), query('album', 8)]);
    } catch {
      return;
    }
    if (seq !== searchSeq) return; // a newer search is on its way
    showResults(tracks.items || [], albums.items || []);
    const none = !(tracks.items || []).length && !(albums.items || []).length;
    $('search-hint').textContent = none ? `Nothing found for “${q}”.` : '';
    $('search-hint').hidden = !none;
  }

  function showResults(tracks, albums) {
    const albumList = $('album-results');
    albumList.replaceChildren(
      ...albums.map((album) => {
        const art = el('span', { class: 'mini-art', 'aria-hidden': 'true' });
        paintArt(art, album.title);
        const sub = [artistNames(album).join(', '), album.year].filter(Boolean).join(' · ');
        return el(
          'li',
          { class: 'row-item', testid: 'album-result', 'data-uri': album.uri },
          el(
            'button',
            {
              type: 'button',
              class: 'row-main',
              testid: 'album-play',
              'aria-label': `Play the album ${album.title}${sub ? ` by ${artistNames(album).join(', ')}` : ''}`,
              onclick: () => command('POST', '/play', { context: album.uri }),
            },
            art,
            el(
              'span',
              { class: 'row-text' },
              el('span', { class: 'row-title', text: album.title }),
              el('span', { class: 'row-sub', text: sub || 'Album' }),
            ),
          ),
        );
      }),
    );
    $('albums-head').hidden = albums.length === 0;

    const trackList = $('track-results');
    trackList.replaceChildren(
      ...tracks.map((track) => {
        const art = el('span', { class: 'mini-art', 'aria-hidden': 'true' });
        paintArt(art, albumTitle(track) || track.title);
        const who = artistNames(track).join(', ');
        const sub = [who, albumTitle(track)].filter(Boolean).join(' · ');
        return el(
          'li',
          { class: 'row-item', testid: 'search-result', 'data-uri': track.uri },
          el(
            'button',
            {
              type: 'button',
              class: 'row-main',
              testid: 'search-play',
              'aria-label': `Play ${track.title}${who ? ` by ${who}` : ''}`,
              onclick: () => command('POST', '/play', { uri: track.uri }),
            },
            art,
            el(
              'span',
              { class: 'row-text' },
              el('span', { class: 'row-title', testid: 'result-title', text: track.title }),
              el('span', { class: 'row-sub', text: sub }),
            ),
            el('span', { class: 'row-time', text: fmtTime(track.duration_ms) }),
          ),
          el(
            'button',
            {
              type: 'button',
              class: 'small-btn',
              testid: 'search-add',
              'aria-label': `Add ${track.title} to the queue`,
              onclick: async () => {
                const done = await command('POST', '/queue', { uri: track.uri });
                if (done) toast(`Added “${track.title}” to the queue`, 'info');
              },
            },
            icon('plus'),
          ),
        );
      }),
    );
    $('tracks-head').hidden = tracks.length === 0;
  }

  // --- queue ------------------------------------------------------------------------------------------------

  function renderQueue() {
    const queue = S.queue || [];
    const list = $('queue-list');
    const playingIndex = S.track ? S.index : -1;
    // Keep the keyboard focus on the same control of the same track across a redraw.
    const focused = document.activeElement;
    let focusKey = null;
    if (focused && list.contains(focused)) {
      const item = focused.closest('li');
      focusKey = { role: focused.dataset.testid, uri: item?.dataset.uri, at: Number(item?.dataset.index) };
    }
    list.replaceChildren(
      ...queue.map((track, i) => {
        const current = i === S.index;
        const who = artistNames(track).join(', ');
        return el(
          'li',
          {
            class: 'row-item',
            testid: 'queue-item',
            'data-index': String(i),
            'data-uri': track.uri,
            'aria-current': current && S.track ? 'true' : undefined,
          },
          el('span', { class: 'pos', 'aria-hidden': 'true', text: current && S.track ? '▶' : String(i + 1) }),
          el(
            'button',
            {
              type: 'button',
              class: 'row-main',
              testid: 'queue-play',
              'aria-label': `Play from ${track.title}${current && S.track ? ' (playing now)' : ''}`,
              onclick: () =>
                command('POST', '/play', { uris: queue.slice(i, i + 1000).map((t) => t.uri) }),
            },
            el(
              'span',
              { class: 'row-text' },
              el('span', { class: 'row-title', testid: 'queue-title', text: track.title }),
              el('span', { class: 'row-sub', text: [who, albumTitle(track)].filter(Boolean).join(' · ') }),
            ),
          ),
          el(
            'button',
            {
              type: 'button',
              class: 'small-btn',
              testid: 'queue-up',
              'aria-label': `Move ${track.title} up`,
              disabled: i === 0,
              onclick: () => command('POST', '/queue/move', { from: i, to: i - 1 }),
            },
            icon('up'),
          ),
          el(
            'button',
            {
              type: 'button',
              class: 'small-btn',
              testid: 'queue-down',
              'aria-label': `Move ${track.title} down`,
              disabled: i === queue.length - 1,
              onclick: () => command('POST', '/queue/move', { from: i, to: i + 1 }),
            },
            icon('down'),
          ),
          el(
            'button',
            {
              type: 'button',
              class: 'small-btn',
              testid: 'queue-remove',
              'aria-label': `Remove ${track.title} from the queue`,
              disabled: i === playingIndex, // the speaker refuses: skip it first
              title: i === playingIndex ? 'Playing now: skip it first' : undefined,
              onclick: () => command('DELETE', `/queue/${i}`),
            },
            icon('close'),
          ),
        );
      }),
    );
    if (focusKey) {
      const items = [...list.children];
      const same = items.find((li) => li.dataset.uri === focusKey.uri) || items[focusKey.at] || items.at(-1);
      let target = same?.querySelector(`[data-testid="${focusKey.role}"]`);
      if (target?.disabled) target = same.querySelector('[data-testid="queue-play"]');
      target?.focus();
    }
    $('queue-empty').hidden = queue.length > 0;
    $('queue-clear').disabled = queue.length === 0 || (queue.length === 1 && playingIndex === 0);
    const count = $('queue-count');
    count.textContent = String(queue.length);
    count.dataset.n = String(queue.length);
    count.setAttribute('aria-label', `${queue.length} in the queue`);
  }

  function wireQueue() {
    $('queue-clear').addEventListener('click', () => command('DELETE', '/queue'));
  }

  // --- settings ----------------------------------------------------------------------------------------------

  function wireSettings() {
    $('rename-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const name = $('rename-input').value.trim();
      if (!name) {
        toast('The name cannot be empty.');
        return;
      }
      try {
        const settings = await api('PATCH', '/settings', { name });
        update({ name: settings.name });
        $('rename-input').blur();
        toast('Renamed', 'info');
      } catch {
        /* shown */
      }
    });
    $('pair-open').addEventListener('click', () => openPairing());
    $('forget-token').addEventListener('click', () => {
      saveToken(null);
      toast('This browser forgot its pairing.', 'info');
      start();
    });
  }

  function renderAuth() {
    const loopback = isLoopback(location.hostname);
    $('auth-state').textContent = token
      ? 'This browser is paired with the speaker.'
      : loopback
        ? 'This browser runs on the speaker itself: no pairing needed.'
        : 'Not paired: the speaker may refuse commands.';
    $('forget-token').hidden = !token;
  }

  function isLoopback(host) {
    const h = host.replace(/^\[|\]$/g, '');
    return h === 'localhost' || h === '::1' || /^127\./.test(h);
  }

  async function loadInfo() {
    try {
      const info = await api('GET', '/info', undefined, { quiet: true });
      if (!S.name) update({ name: info.name });
      $('about-version').textContent = `${info.version} (API ${info.api_version})`;
      $('about-audio').textContent = info.audio_device || '–';
    } catch {
      /* the state will tell */
    }
  }

  // Requests from other devices to pair: an admin (loopback, or an admin token) may decide.
  let pendingTimer = null;

  async function refreshPending() {
    let data;
    try {
      data = await api('GET', '/pairing', undefined, { quiet: true, pair: false });
    } catch {
      $('pending-card').hidden = true;
      return;
    }
    const requests = data.requests || [];
    $('pending-card').hidden = requests.length === 0;
    $('pending-list').replaceChildren(
      ...requests.map((req) =>
        el(
          'li',
          { testid: 'pending-item', 'data-id': req.id },
          el(
            'span',
            { class: 'who' },
            el('strong', { text: req.name }),
            ' ',
            el('span', { class: 'hint', text: `(${req.scope})` }),
          ),
          el('span', { class: 'code-small', testid: 'pending-code', text: req.code }),
          el('button', {
            type: 'button',
            class: 'btn primary',
            testid: 'pending-approve',
            'aria-label': `Approve ${req.name} (code ${req.code})`,
            text: 'Approve',
            onclick: () => decide(req.id, 'approve'),
          }),
          el('button', {
            type: 'button',
            class: 'btn',
            testid: 'pending-deny',
            'aria-label': `Deny ${req.name} (code ${req.code})`,
            text: 'Deny',
            onclick: () => decide(req.id, 'deny'),
          }),
        ),
      ),
    );
  }

  async function decide(id, verdict) {
    try {
      await api('POST', `/pairing/${encodeURIComponent(id)}/${verdict}`);
    } catch {
      /* shown */
    }
    refreshPending();
  }

  function watchPending(on) {
    clearInterval(pendingTimer);
    pendingTimer = null;
    if (on) {
      refreshPending();
      pendingTimer = setInterval(refreshPending, 2000);
    }
  }

  // --- pairing -----------------------------------------------------------------------------------------------

  let pairPoll = null;
  let pairing = false;

  function needPairing(message) {
    if (token) saveToken(null); // unknown or revoked: it will not work again
    stopEvents();
    openPairing(message);
  }

  function openPairing(reason) {
    const dialog = $('pairing-panel');
    $('pairing-reason').textContent = reason
      ? `${reason}. Ask the speaker for access; its owner confirms with the speaker's button or from a paired device.`
      : "To control this speaker from here, ask it for access. Its owner confirms with the speaker's button or from a paired device.";
    if (!pairing) {
      $('pairing-ask').hidden = false;
      $('pairing-wait').hidden = true;
      setPairStatus('');
      if (!$('pair-name').value) $('pair-name').value = browserName();
    }
    if (!dialog.open) {
      if (typeof dialog.showModal === 'function') dialog.showModal();
      else dialog.setAttribute('open', '');
    }
  }

  function setPairStatus(text, kind = '') {
    const node = $('pair-status');
    node.textContent = text;
    node.dataset.kind = kind;
  }

  function stopPairing() {
    clearInterval(pairPoll);
    pairPoll = null;
    pairing = false;
  }

  async function startPairing() {
    const name = $('pair-name').value.trim() || browserName();
    stopPairing();
    let req;
    try {
      req = await api('POST', '/pairing', { name, scope: 'playback' }, { anonymous: true, quiet: true });
    } catch (err) {
      setPairStatus(err.message, 'error');
      return;
    }
    pairing = true;
    $('pairing-ask').hidden = true;
    $('pairing-wait').hidden = false;
    $('pair-code').textContent = req.code;
    setPairStatus('Waiting for the owner to confirm…');
    pairPoll = setInterval(() => pollPairing(req.id), 1000);
  }

  async function pollPairing(id) {
    let req;
    try {
      req = await api('GET', `/pairing/${encodeURIComponent(id)}`, undefined, {
        anonymous: true,
        quiet: true,
      });
    } catch (err) {
      if (err.status === 404) {
        stopPairing();
        setPairStatus('The request expired. Ask again.', 'error');
        $('pairing-ask').hidden = false;
      }
      return; // network trouble: keep trying
    }
    if (req.state === 'approved' && req.token) {
      stopPairing();
      saveToken(req.token);
      setPairStatus('Paired. This browser may now control the speaker.', 'ok');
      toast('Paired with the speaker', 'info');
      start();
      setTimeout(() => $('pairing-panel').open && $('pairing-panel').close(), 1200);
    } else if (req.state === 'denied') {
      stopPairing();
      setPairStatus('The owner said no.', 'error');
      $('pairing-ask').hidden = false;
    } else if (req.state === 'collected') {
      stopPairing();
      setPairStatus('That request was already used. Ask again.', 'error');
      $('pairing-ask').hidden = false;
    }
  }

  function wirePairing() {
    $('pair-start').addEventListener('click', startPairing);
    $('pair-name').addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault(); // the dialog's form would close it
        startPairing();
      }
    });
    $('pairing-panel').addEventListener('close', () => {
      stopPairing();
      $('pairing-ask').hidden = false;
      $('pairing-wait').hidden = true;
    });
  }

  // --- live events -------------------------------------------------------------------------------------------

  let events = null;
  let retryTimer = null;
  let retryDelay = 1000;

  function setLive(ok) {
    $('live-badge').hidden = ok;
  }

  function stopEvents() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (events) events.close();
    events = null;
  }

  function connectEvents() {
    stopEvents();
    const url = `${API}/events${token ? `?access_token=${encodeURIComponent(token)}` : ''}`;
    const source = new EventSource(url);
    events = source;
    const on = (name, fn) =>
      source.addEventListener(name, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        fn(data);
      });
    source.addEventListener('open', () => {
      retryDelay = 1000;
      setLive(true);
    });
    on('state', (data) => {
      setLive(true);
      update(data);
    });
    for (const name of ['status', 'track', 'position', 'volume', 'queue', 'connection', 'settings']) {
      on(name, update);
    }
    on('error', (data) => {
      if (data.error) toast(data.error);
    });
    // A dropped stream: the browser reconnects by itself; a refused one (an HTTP error)
    // is closed for good, so find out why and try again.
    source.addEventListener('error', (event) => {
      if (event.data) return; // the speaker's own "error" event, handled above
      setLive(false);
      if (source.readyState === EventSource.CLOSED && events === source) {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(async () => {
          try {
            update(await api('GET', '/state', undefined, { quiet: true }));
          } catch (err) {
            if (err.status === 401) return; // pairing is open
          }
          if (events === source) connectEvents();
        }, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 15000);
      }
    });
  }

  // --- views -------------------------------------------------------------------------------------------------

  const wide = window.matchMedia('(min-width: 900px)');

  function showView(view, focus = false) {
    if (wide.matches && view === 'now') view = 'search';
    document.body.dataset.view = view;
    for (const tab of document.querySelectorAll('[role="tab"]')) {
      const selected = tab.dataset.view === view;
      tab.setAttribute('aria-selected', String(selected));
      tab.tabIndex = selected ? 0 : -1;
      if (selected && focus) tab.focus();
    }
    watchPending(view === 'settings');
    try {
      history.replaceState(null, '', `#${view}`);
    } catch {
      /* file: or sandboxed */
    }
  }

  function wireTabs() {
    const tabs = [...document.querySelectorAll('[role="tab"]')];
    for (const tab of tabs) {
      tab.addEventListener('click', () => showView(tab.dataset.view));
      tab.addEventListener('keydown', (event) => {
        const visible = tabs.filter((t) => t.offsetParent !== null);
        const at = visible.indexOf(tab);
        let next = null;
        if (event.key === 'ArrowRight') next = visible[(at + 1) % visible.length];
        else if (event.key === 'ArrowLeft') next = visible[(at - 1 + visible.length) % visible.length];
        else if (event.key === 'Home') next = visible[0];
        else if (event.key === 'End') next = visible.at(-1);
        if (next) {
          event.preventDefault();
          showView(next.dataset.view, true);
        }
      });
    }
    wide.addEventListener('change', () => showView(document.body.dataset.view));
    const initialView = location.hash.slice(1);
    showView(['now', 'search', 'queue', 'settings'].includes(initialView) ? initialView : 'now');
  }

  // --- start ---------------------------------------------------------------------------------------------------

  async function start() {
    renderAuth();
    loadInfo();
    try {
      update(await api('GET', '/state'));
    } catch (err) {
      if (err.status === 401) return; // the pairing panel is open
    }
    connectEvents();
  }

  function main() {
    wireTabs();
    wireNowPlaying();
    wireSearch();
    wireQueue();
    wireSettings();
    wirePairing();
    for (const key of Object.keys(S)) dirty.add(key);
    render();
    requestAnimationFrame(tick);
    start();
  }

  // For tests and debugging: the state as this page sees it.
  window.cadenza = { state: S, showView, openPairing };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main);
  else main();
})();
