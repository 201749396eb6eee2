// The sluice admin dashboard. It loads api/snapshot (every section and the recorder's whole
// history), then follows api/events, a snapshot a second with the last second of history,
// and redraws. Names and hosts come from users: every one of them reaches the page as a text
// node or an attribute value, never parsed as markup, and the page's
// Content-Security-Policy forbids inline script should that ever slip.
'use strict';

(() => {
  const HISTORY = 120; // seconds drawn in each chart, at most
  const MIN_SPAN = 30; // seconds drawn in each chart, at least
  const SVG = 'http://www.w3.org/2000/svg';

  // history of every route and endpoint: name → {start, requests, errors, p50, p99}
  const history = { routes: new Map(), endpoints: new Map() };
  let newest = 0; // the newest second of history received
  let oldest = Infinity; // the oldest second with a request in it

  // span is how many seconds the charts draw: since the oldest request, between a minimum
  // (so that a fresh page's lines do not stretch) and HISTORY.
  function span() {
    return Math.max(MIN_SPAN, Math.min(HISTORY, newest - oldest + 1));
  }

  // el builds an element; attrs values are set as attributes (class via className), children
  // are nodes or strings, which append turns into text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else e.setAttribute(k, v);
    }
    e.append(...children.filter((c) => c !== null && c !== undefined));
    return e;
  }

  function list(items) {
    return el('span', { class: 'list' }, ...(items || []).map((s) => el('span', {}, String(s))));
  }

  function merge(map, series) {
    for (const s of series || []) {
      let h = map.get(s.name);
      if (!h) {
        h = { start: s.start, requests: [], errors: [], p50: [], p99: [] };
        map.set(s.name, h);
      }
      for (let i = 0; i < s.requests.length; i++) {
        const sec = s.start + i;
        if (sec < h.start) continue;
        const at = sec - h.start;
        while (h.requests.length < at) { // a gap: seconds no event brought
          h.requests.push(0); h.errors.push(0); h.p50.push(0); h.p99.push(0);
        }
        h.requests[at] = s.requests[i];
        h.errors[at] = s.errors[i];
        h.p50[at] = s.p50_ms[i];
        h.p99[at] = s.p99_ms[i];
        newest = Math.max(newest, sec);
        if (s.requests[i] > 0) oldest = Math.min(oldest, sec);
      }
      const drop = h.requests.length - HISTORY;
      if (drop > 0) {
        for (const k of ['requests', 'errors', 'p50', 'p99']) h[k].splice(0, drop);
        h.start += drop;
      }
    }
  }

  // column returns the last span() seconds of one column of h, ending at newest, zeros
  // where h has nothing.
  function column(h, key) {
    const n = span();
    const out = new Array(n).fill(0);
    if (!h) return out;
    const first = newest - n + 1;
    for (let i = 0; i < h[key].length; i++) {
      const at = h.start + i - first;
      if (at >= 0 && at < n) out[at] = h[key][i];
    }
    return out;
  }

  function polyline(values, max, cls) {
    const p = document.createElementNS(SVG, 'polyline');
    const pts = values.map((v, i) => `${i},${(28 - (v / max) * 26 - 1).toFixed(1)}`);
    p.setAttribute('points', pts.join(' '));
    p.setAttribute('class', cls);
    return p;
  }

  // chart draws lines (sets of values sharing one scale) with the latest value as text.
  function chart(lines, label, title) {
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${lines[0].values.length - 1} 28`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    const t = document.createElementNS(SVG, 'title');
    t.textContent = title;
    svg.append(t);
    const max = Math.max(1e-9, ...lines.flatMap((l) => l.values));
    for (const l of lines) svg.append(polyline(l.values, max, l.cls));
    return el('div', { class: 'chart' }, svg, el('span', { class: 'value' }, label));
  }

  function last(values) { return values[values.length - 1] || 0; }

  // charts returns the three chart cells of one route or endpoint.
  function charts(h, kind, name) {
    const req = column(h, 'requests');
    const errs = column(h, 'errors');
    const pct = errs.map((e, i) => (req[i] ? (100 * e) / req[i] : 0));
    const p50 = column(h, 'p50');
    const p99 = column(h, 'p99');
    const rate = last(req);
    return [
      el('td', { 'data-rate': String(rate) }, chart([{ values: req, cls: 'rate' }], `${rate}/s`, `${kind} ${name}: requests per second`)),
      el('td', { 'data-errors': String(last(errs)) }, chart([{ values: pct, cls: 'errors' }], `${last(pct).toFixed(1)}%`, `${kind} ${name}: errors, % of requests`)),
      el('td', {}, chart([{ values: p50, cls: 'p50' }, { values: p99, cls: 'p99' }],
        `${fmtMS(last(p50))} · ${fmtMS(last(p99))}`, `${kind} ${name}: latency p50 and p99`)),
    ];
  }

  function fmtMS(ms) {
    if (!ms) return '–';
    if (ms < 1) return `${Math.round(ms * 1000)}µs`;
    if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)}ms`;
    return `${(ms / 1000).toFixed(1)}s`;
  }

  function section(id, present) {
    const s = document.getElementById(id);
    s.hidden = !present;
    return s;
  }

  function renderRoutes(routes) {
    const body = section('routes', routes !== undefined).querySelector('tbody');
    body.replaceChildren(...(routes || []).map((r) => el('tr', { 'data-route': r.name },
      el('td', { class: 'name' }, r.name),
      el('td', {}, (r.hosts && r.hosts.length) ? list(r.hosts) : '(any)'),
      el('td', {}, list(r.paths)),
      el('td', {}, list(r.pools)),
      ...charts(history.routes.get(r.name), 'route', r.name))));
  }

  function renderPools(pools) {
    const box = section('pools', pools !== undefined).querySelector('.pools');
    box.replaceChildren(...(pools || []).map((p) => el('div', { class: 'pool', 'data-pool': p.name },
      el('h3', {}, p.name, p.policy ? el('span', { class: 'policy' }, p.policy) : null),
      el('table', {},
        el('thead', {}, el('tr', {}, ...['endpoint', 'zone', 'state', 'in flight', 'latency est.', 'ejections',
          'requests/s', 'errors', 'latency p50 · p99'].map((t) => el('th', {}, t)))),
        el('tbody', {}, ...(p.endpoints || []).map((e) => el('tr',
          { 'data-endpoint': e.addr, 'data-state': e.state, class: `state-${e.state}` },
          el('td', { class: 'name' }, e.addr),
          el('td', {}, e.zone || ''),
          el('td', {}, el('span', { class: 'state' }, e.state)),
          el('td', { class: 'num' }, e.in_flight == null ? '—' : String(e.in_flight)),
          el('td', { class: 'num' }, fmtMS(e.latency_ms)),
          el('td', { class: 'ejections' }, ejections(e.ejections)),
          ...charts(history.endpoints.get(e.addr), 'endpoint', e.addr))))))));
  }

  function ejections(list) {
    if (!list || !list.length) return '';
    const l = list[list.length - 1];
    const when = new Date(l.at).toLocaleTimeString();
    return `${list.length}× · last ${l.reason} at ${when}`;
  }

  function renderCertificates(certs) {
    const body = section('certificates', certs !== undefined).querySelector('tbody');
    const now = Date.now();
    body.replaceChildren(...(certs || []).map((c) => {
      const days = (Date.parse(c.not_after) - now) / 86400e3;
      const cls = days < 0 ? 'expired' : days < 14 ? 'expiring' : '';
      return el('tr', {},
        el('td', {}, list(c.names)),
        el('td', {}, c.issuer || ''),
        el('td', {}, new Date(c.not_after).toISOString()),
        el('td', { class: cls }, days < 0 ? 'expired' : `${Math.floor(days)} days`));
    }));
  }

  function renderCache(c) {
    const dl = section('cache', c !== undefined).querySelector('dl');
    if (!c) { dl.replaceChildren(); return; }
    const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
    const rows = [['entries', c.entries], ['held', mib(c.bytes)], ['bound', c.max_bytes ? mib(c.max_bytes) : 'none'],
      ['hits', c.hits], ['misses', c.misses], ['stale', c.stale], ['collapsed', c.collapsed],
      ['stored', c.stored], ['evicted', c.evicted]];
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, String(v))]));
  }

  function renderLimiters(lims) {
    const body = section('limiters', lims !== undefined).querySelector('tbody');
    body.replaceChildren(...(lims || []).map((l) => el('tr', {},
      el('td', { class: 'name' }, l.name),
      el('td', { class: 'num' }, l.max_keys ? `${l.keys} / ${l.max_keys}` : String(l.keys)),
      el('td', { class: 'num' }, String(l.allowed)),
      el('td', { class: 'num' }, String(l.limited)),
      el('td', { class: 'num' }, String(l.delayed)))));
  }

  function renderOther() {
    const rows = [];
    for (const [kind, map] of [['route', history.routes], ['endpoint', history.endpoints]]) {
      if (map.has('(other)')) {
        rows.push(el('tr', {}, el('td', { class: 'name' }, `other ${kind}s`), ...charts(map.get('(other)'), kind, '(other)')));
      }
    }
    section('other', rows.length > 0).querySelector('tbody').replaceChildren(...rows);
  }

  function render(snap) {
    if (snap.stats) {
      merge(history.routes, snap.stats.routes);
      merge(history.endpoints, snap.stats.endpoints);
    }
    const has = (s) => snap.sections.includes(s);
    renderRoutes(has('routes') ? snap.routes || [] : undefined);
    renderPools(has('pools') ? snap.pools || [] : undefined);
    renderCertificates(has('certificates') ? snap.certificates || [] : undefined);
    renderCache(has('cache') ? snap.cache : undefined);
    renderLimiters(has('limiters') ? snap.limiters || [] : undefined);
    renderOther();
    document.getElementById('updated').textContent = `updated ${new Date(snap.time).toLocaleTimeString()}`;
  }

  function status(s) {
    const e = document.getElementById('status');
    e.dataset.status = s;
    e.textContent = s;
  }

  async function start() {
    try {
      const r = await fetch('api/snapshot', { cache: 'no-store' });
      if (r.ok) render(await r.json());
    } catch (err) {
      status('reconnecting');
    }
    const es = new EventSource('api/events');
    es.onopen = () => status('live');
    es.onerror = () => status('reconnecting'); // EventSource reconnects by itself
    es.addEventListener('snapshot', (ev) => {
      status('live');
      render(JSON.parse(ev.data));
    });
  }

  start();
})();
