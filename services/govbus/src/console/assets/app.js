// The govbus console: plain JavaScript over the stack's JSON API, no build step.
"use strict";

const view = document.getElementById("view");
const statusLine = document.getElementById("status");
let timer = null;

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path, options = {}) {
  // What changes something carries the console's header: another site's page cannot (CSRF).
  const method = (options.method || "GET").toUpperCase();
  const headers = method === "GET" ? options.headers : { ...(options.headers || {}), "X-Govbus-Console": "1" };
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function ms(micros) { return (micros / 1000).toFixed(2) + " ms"; }
function rate(value) { return (value || 0).toFixed(1) + "/s"; }

function table(headers, rows, attrs = "") {
  return `<table ${attrs}><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows.join("") || `<tr><td colspan="${headers.length}" class="muted">None.</td></tr>`}</tbody></table>`;
}

const views = {
  async overview() {
    const [overview, flow] = await Promise.all([api("/api/overview"), api("/api/flow")]);
    const services = overview.services.map((s) => `<tr data-service="${esc(s.name)}"><td>${esc(s.name)}</td><td class="mono">${esc(s.address)}</td><td class="${s.healthy ? "ok" : "bad"}">${s.healthy ? "healthy" : "unhealthy"}</td><td>${esc(s.detail)}</td></tr>`);
    const edges = flow.map((e) => `<tr><td>${esc(e.from)}</td><td>→</td><td>${esc(e.to)}</td><td class="mono">${e.events.map(esc).join("<br>")}</td><td class="num">${rate(e.rate)}</td><td class="num">${e.lag}</td></tr>`);
    return `<div class="cards">
      <div class="card"><div class="muted">Services healthy</div><div class="big" id="healthy-count">${overview.services.filter((s) => s.healthy).length}/${overview.services.length}</div></div>
      <div class="card"><div class="muted">NATS</div><div class="${overview.nats_connected ? "ok" : "bad"}">${overview.nats_connected ? "connected" : "disconnected"}</div><div class="mono muted">${esc(overview.nats_url)}</div></div>
      <div class="card"><div class="muted">Dead letters</div><div class="big" id="dead-letter-count">${esc(overview.dead_letters ?? "?")}</div></div>
      <div class="card"><div class="muted">Traces kept</div><div class="big">${overview.traces_kept}</div></div>
    </div>
    <h2>Services</h2>${table(["Service", "gRPC", "State", "Detail"], services, 'id="services"')}
    ${flowDiagram(flow)}
    <h2>Event flow</h2>${table(["From", "", "To", "Events", "Rate", "Lag"], edges, 'id="flow"')}`;
  },

  async consumers() {
    const [streams, letters] = await Promise.all([api("/api/streams"), api("/api/deadletters?limit=200")]);
    const rows = [];
    for (const stream of streams) {
      rows.push(`<tr><td><strong>${esc(stream.name)}</strong></td><td></td><td class="num">${stream.messages}</td><td></td><td></td><td></td><td class="num">${rate(stream.publish_rate)}</td></tr>`);
      for (const c of stream.consumers) {
        rows.push(`<tr><td>&nbsp;&nbsp;${esc(c.name)}</td><td>${esc(c.service)}</td><td></td><td class="num">${c.pending}</td><td class="num">${c.ack_pending}</td><td class="num">${c.lag}</td><td class="num">${rate(c.delivery_rate)}</td></tr>`);
      }
    }
    const dead = letters.items.map((d) => `<tr data-sequence="${d.sequence}"><td class="num">${d.sequence}</td><td>${esc(d.consumer)}</td><td class="mono">${esc(d.event.event_type)}</td><td class="num">${d.deliveries}</td><td>${esc(d.reason)}</td><td><button class="replay" data-sequence="${d.sequence}">Replay</button></td></tr>`);
    return `<h2>Streams and consumers</h2>${table(["Stream / consumer", "Service", "Messages", "Pending", "Ack pending", "Lag", "Rate"], rows, 'id="streams"')}
      <h2>Dead letters (<span id="dead-letter-total">${letters.count}</span>) ${letters.count ? '<button id="replay-all">Replay all</button>' : ""}</h2>
      ${table(["Seq", "Consumer", "Type", "Deliveries", "Reason", ""], dead, 'id="dead-letters"')}`;
  },

  async events() {
    const events = await api("/api/events?limit=100");
    const rows = events.map((e) => `<tr><td class="mono">${esc(e.time)}</td><td class="mono">${esc(e.event_type)}</td><td class="mono">${e.trace_id ? `<a href="#/traces/${esc(e.trace_id)}">${esc(e.trace_id.slice(0, 8))}…</a>` : ""}</td><td class="mono">${esc(JSON.stringify(e.data))}</td></tr>`);
    return `<h2>Recent events (personal fields masked)</h2>${table(["Time", "Type", "Trace", "Data"], rows, 'id="events"')}`;
  },

  async traces(id) {
    if (id) return traceView(id);
    const traces = await api("/api/traces?limit=100");
    const rows = traces.map((t) => `<tr><td class="mono"><a href="#/traces/${esc(t.trace_id)}">${esc(t.trace_id)}</a></td><td>${esc(t.root)}</td><td>${esc(t.services.join(", "))}</td><td class="num">${t.spans}</td><td class="num">${ms(t.duration_micros)}</td><td class="${t.errors ? "bad" : ""}">${t.errors ? t.errors + " errors" : ""}</td></tr>`);
    return `<h2>Recent traces</h2>${table(["Trace", "Root", "Services", "Spans", "Duration", ""], rows, 'id="traces"')}`;
  },

  async complaints() {
    const data = await api("/api/complaints?limit=200");
    const counts = {};
    for (const c of data.complaints) counts[c.status] = (counts[c.status] || 0) + 1;
    const escalated = data.complaints.filter((c) => c.escalated).length;
    const forwarded = data.complaints.filter((c) => c.national_ref).length;
    const card = (label, value, id) => `<div class="card"><div class="muted">${esc(label)}</div><div class="big" id="${id}">${value}</div></div>`;
    const rows = data.complaints.map((c) => `<tr data-complaint="${esc(c.complaint_ref)}"><td class="mono">${esc(c.filed_at)}</td><td>${esc(c.status.replaceAll("_", " "))}</td><td title="${esc(c.agency_name)}">${esc(c.agency_code)}</td><td>${esc(c.category.replaceAll("_", " "))}</td><td>${esc(c.channel)}</td><td>${esc(c.class.replaceAll("_", " "))}</td><td class="mono ${c.escalated ? "bad" : ""}">${esc(c.deadline)}${c.escalated ? " (escalated)" : ""}</td><td class="mono">${esc(c.national_ref)}</td></tr>`);
    const classes = data.classes.map((c) => `${esc(c.class.replaceAll("_", " "))} ${c.working_days}`).join(", ");
    return `<div class="cards">
      ${card("Awaiting verification", counts.awaiting_verification || 0, "complaints-awaiting")}
      ${card("With an agency", counts.with_agency || 0, "complaints-with-agency")}
      ${card("Escalated (past deadline)", escalated, "complaints-escalated")}
      ${card("Forwarded to SP4N-LAPOR", forwarded, "complaints-forwarded")}
    </div>
    <p class="muted">Deadlines in government working days: verification ${data.verification_working_days}; responses ${classes}. Complainants and texts are not shown.</p>
    <h2>Recent complaints</h2>${table(["Filed", "Status", "Agency", "Category", "Channel", "Class", "Due", "SP4N-LAPOR"], rows, 'id="complaints"')}`;
  },

  async spbe() {
    const spbe = await api("/api/spbe");
    const years = (spbe.history.years || []);
    const history = years.map((y) => `<tr><td>${y.year}</td><td class="num">${esc(y.index)}</td><td>${esc(y.predicate)}</td><td class="num">${esc(y.change || "")}</td><td class="num">${esc(y.target || "")}</td></tr>`);
    const domains = (spbe.assessment?.finalIndex?.domains || []).map((d) => `<tr><td>${d.number}</td><td>${esc(d.name)}</td><td class="num">${esc(d.value)}</td></tr>`);
    const suggestions = (spbe.evidence.suggestions || []).map((s) => `<tr><td>${s.indicator}</td><td>${esc(s.name)}</td><td>${esc(s.suggestion?.level)} ${esc(s.suggestion?.levelName)}</td><td>${(s.suggestion?.facts || []).map(esc).join("<br>")}</td></tr>`);
    const flows = (spbe.evidence.flows || []).map((f) => `<tr><td>${esc(f.fromService)}</td><td>${esc(f.toService)}</td><td class="num">${esc(f.reactions)}</td></tr>`);
    return `<h2>SPBE index — ${esc(spbe.history.instanceName || spbe.history.instanceCode)}</h2>
      ${trendChart(years)}
      ${table(["Year", "Index", "Predicate", "Change", "Target"], history, 'id="spbe-history"')}
      <h2>Domains (${esc(spbe.assessment?.year ?? "")})</h2>${table(["#", "Domain", "Index"], domains, 'id="spbe-domains"')}
      <h2>Live evidence from the bus</h2>${table(["From", "To", "Reactions"], flows, 'id="spbe-flows"')}
      ${table(["Indicator", "Name", "Suggested level", "Facts"], suggestions, 'id="spbe-evidence"')}`;
  },
};

async function traceView(id) {
  const spans = await api(`/api/traces/${encodeURIComponent(id)}`);
  const start = Math.min(...spans.map((s) => s.start_unix_micros));
  const end = Math.max(...spans.map((s) => s.start_unix_micros + s.duration_micros));
  const total = Math.max(end - start, 1);
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const span of spans) {
    const parent = ids.has(span.parent_span_id) ? span.parent_span_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(span);
  }
  const rows = [];
  const walk = (parent, depth) => {
    for (const span of (children.get(parent) || []).sort((a, b) => a.start_unix_micros - b.start_unix_micros)) {
      const left = ((span.start_unix_micros - start) / total) * 100;
      const width = (span.duration_micros / total) * 100;
      rows.push(`<tr><td style="padding-left:${0.6 + depth * 1.2}rem">${esc(span.name)}</td><td>${esc(span.service || "")}</td><td class="num">${ms(span.duration_micros)}</td><td class="bar"><div class="track"><div class="span${span.error ? " error" : ""}" style="left:${left}%;width:${width}%" title="${esc(span.error || "")}"></div></div></td></tr>`);
      walk(span.span_id, depth + 1);
    }
  };
  walk(null, 0);
  return `<h2>Trace <span class="mono">${esc(id)}</span> — ${ms(total)}, ${spans.length} spans</h2>
    ${table(["Span", "Service", "Duration", "Timeline"], rows, 'id="waterfall" class="waterfall"')}
    <p><a href="#/traces">All traces</a></p>`;
}

function flowDiagram(flow) {
  // Publishers on the left, pure consumers on the right.
  const balance = new Map();
  for (const e of flow) {
    balance.set(e.from, (balance.get(e.from) || 0) + 1);
    balance.set(e.to, (balance.get(e.to) || 0) - 1);
  }
  const services = [...balance.keys()].sort((a, b) => balance.get(b) - balance.get(a) || a.localeCompare(b));
  if (!services.length) return "";
  const width = 720, height = 70 + services.length * 10, gap = width / services.length;
  const x = (name) => gap / 2 + services.indexOf(name) * gap;
  const arcs = flow.map((e, i) => {
    const x1 = x(e.from), x2 = x(e.to), mid = (x1 + x2) / 2, lift = 20 + (Math.abs(x2 - x1) / width) * 40 + i * 2;
    return `<path d="M${x1},50 Q${mid},${50 - lift} ${x2},50" fill="none" stroke="#1f5fbf" stroke-width="${1 + Math.min(e.rate, 50) / 10}" marker-end="url(#arrow)"><title>${esc(e.from)} → ${esc(e.to)}: ${rate(e.rate)}</title></path>`;
  });
  const nodes = services.map((s) => `<circle cx="${x(s)}" cy="50" r="6" fill="#1d2433"/><text x="${x(s)}" y="70" text-anchor="middle">${esc(s)}</text>`);
  return `<h2>Who sends events to whom</h2><svg id="flow-diagram" width="${width}" height="${height}" role="img" aria-label="event flow between services"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#1f5fbf"/></marker></defs>${arcs.join("")}${nodes.join("")}</svg>`;
}

function trendChart(years) {
  if (!years.length) return `<p class="muted">No assessments recorded yet.</p>`;
  const width = 520, height = 180, pad = 36, inset = 30;
  const sorted = [...years].sort((a, b) => a.year - b.year);
  const span = width - 2 * pad - 2 * inset;
  const x = (i) => pad + inset + (sorted.length === 1 ? span / 2 : (i * span) / (sorted.length - 1));
  const y = (value) => height - pad - (Number(value) / 5) * (height - 2 * pad);
  const points = sorted.map((year, i) => `${x(i)},${y(year.index)}`).join(" ");
  const dots = sorted.map((year, i) => `<circle cx="${x(i)}" cy="${y(year.index)}" r="4" fill="#1f5fbf"/><text x="${x(i)}" y="${y(year.index) - 9}" text-anchor="middle">${esc(year.index)}</text><text x="${x(i)}" y="${height - 12}" text-anchor="middle">${year.year}</text>`);
  const grid = [1, 2, 3, 4, 5].map((v) => `<line x1="${pad}" x2="${width - pad}" y1="${y(v)}" y2="${y(v)}" stroke="#e4e7ec"/><text x="${pad - 8}" y="${y(v) + 4}" text-anchor="end">${v}</text>`);
  return `<svg id="spbe-trend" width="${width}" height="${height}" role="img" aria-label="SPBE index per year">${grid.join("")}<polyline points="${points}" fill="none" stroke="#1f5fbf" stroke-width="2"/>${dots.join("")}</svg>`;
}

async function render() {
  const [, name = "", id] = location.hash.split("/");
  const key = { "": "overview", consumers: "consumers", events: "events", traces: "traces", complaints: "complaints", spbe: "spbe" }[name] || "overview";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === key);
  try {
    view.innerHTML = await views[key](id);
    view.dataset.view = key;
    statusLine.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    view.innerHTML = `<p class="bad" id="error">${esc(error.message)}</p>`;
    statusLine.textContent = "error";
  }
  clearTimeout(timer);
  // Live pages refresh; a trace waterfall stays still for reading.
  if (!id) timer = setTimeout(render, 3000);
}

view.addEventListener("click", async (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  try {
    if (button.classList.contains("replay")) {
      button.disabled = true;
      await api(`/api/deadletters/${button.dataset.sequence}/replay`, { method: "POST" });
    } else if (button.id === "replay-all") {
      if (!confirm("Replay every dead letter to its consumer?")) return;
      await api("/api/deadletters/replay-all", { method: "POST" });
    }
    statusLine.textContent = "replayed";
    render();
  } catch (error) {
    statusLine.textContent = "replay failed: " + error.message;
  }
});

window.addEventListener("hashchange", render);
render();
