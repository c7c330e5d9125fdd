// The validator's dashboard: reads this node's JSON API (same origin) and draws it.
// No build step, no library. Every value from the API reaches the page as a text node or
// an attribute (never as markup), and the page's Content-Security-Policy allows only
// scripts, styles and requests from this origin.
"use strict";

const REFRESH_MS = 5000;
const EPOCHS_SHOWN = 24;
// epoch: the one chosen (null: follow the newest final); shown: the one drawn.
const state = { epoch: null, shown: null, provider: null, network: null };

// -- DOM helpers (text only) -----------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "onclick") node.addEventListener("click", value);
    else if (name.startsWith("data-")) node.dataset[name.slice(5)] = String(value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

// A table whose headers align with their column (numbers right) as in its first row.
function table(head, rows, attrs) {
  const first = rows.find((r) => r && r.cells);
  const numeric = (i) => first && first.cells[i] && first.cells[i].classList.contains("num");
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: numeric(i) ? "num" : null }, h)))),
    el("tbody", {}, rows));
}

// -- formatting --------------------------------------------------------------------------------
const int = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
const pct = (bps) => (bps === null || bps === undefined ? "–" : (bps / 100).toFixed(2) + " %");
const ms = (us) => (us === null || us === undefined ? "–" : (us / 1000).toFixed(2) + " ms");
const mbit = (kbps) => (kbps === null || kbps === undefined ? "–" : (kbps / 1000).toFixed(1) + " Mbit/s");
const short = (key) => (key && key.length > 12 ? key.slice(0, 5) + "…" + key.slice(-4) : String(key));
const when = (unix) => new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";

function keyText(key) {
  return el("code", { class: "key", title: key }, short(key));
}

function validatorName(key) {
  const v = (state.network && state.network.validators || []).find((m) => m.signing_key === key);
  return v ? v.name : null;
}

function who(key) {
  const name = validatorName(key);
  return name ? el("span", { title: key }, name) : keyText(key);
}

function flagList(names) {
  if (!names || !names.length) return el("span", { class: "muted" }, "none");
  return names.map((n) => el("span", { class: "flag" }, n));
}

// -- fetching ----------------------------------------------------------------------------------
async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  return { status: response.status, body };
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const epoch = params.get("epoch");
  state.epoch = epoch !== null && /^[0-9]{1,15}$/.test(epoch) ? Number(epoch) : null;
  const provider = params.get("provider");
  state.provider = provider && /^[1-9A-HJ-NP-Za-km-z]{32,44}$/.test(provider) ? provider : null;
}

function writeHash() {
  const params = new URLSearchParams();
  if (state.epoch !== null) params.set("epoch", String(state.epoch));
  if (state.provider) params.set("provider", state.provider);
  history.replaceState(null, "", "#" + params.toString());
}

// -- this node ---------------------------------------------------------------------------------
function renderHealth(health) {
  const body = health.body || {};
  const ok = health.status === 200 && body.ok === true;
  const badge = document.getElementById("health");
  badge.className = "badge " + (ok ? "ok" : "bad");
  badge.textContent = ok ? "healthy" : "unhealthy" + (health.status ? ` (${health.status})` : "");
  const checks = Object.entries(body.checks || {}).map(([name, passed]) =>
    el("span", { class: "check " + (passed ? "yes" : "no") }, name, passed ? " ✓" : " ✗"));
  const reasons = Array.isArray(body.reasons) ? body.reasons.map(String) : [];
  if (body.error) reasons.push(String(body.error));
  fill("health-detail", checks.length ? el("div", { class: "checks" }, el("span", { class: "label" }, "Health"), checks) : null,
    reasons.length ? el("ul", { class: "reasons" }, reasons.map((r) => el("li", {}, r))) : null);
}

function renderNode(status, network) {
  const me = status.signing_key;
  fill("node-name", validatorName(me) || short(me));
  fill("network", network.network_id, " · ", `${network.n} validators, threshold ${network.threshold}`,
    " · ", `epochs of ${network.epoch_seconds} s`);
  const chain = status.chain || {};
  const facts = [
    ["Epoch", int(status.epoch)], ["Phase", status.phase],
    ["Last final epoch", int(status.last_final_epoch)], ["Last posted epoch", int(chain.last_posted_epoch)],
    ["Peers", int(status.peers)], ["Providers known", int(status.providers)],
    ["Signing key", el("code", { class: "key wrap" }, me)],
    ["Peer id", el("code", { class: "key wrap" }, status.identity)],
    ["RPC", chain.rpc_url || "–"],
    ["Last chain error", chain.last_error ? el("span", { class: "error" }, chain.last_error) : "none"],
  ];
  fill("node-facts", facts.map(([k, v]) => el("div", { class: "fact" }, el("dt", {}, k), el("dd", {}, v))));
  const dropped = Object.entries(status.dropped || {}).sort((a, b) => b[1] - a[1]);
  document.getElementById("dropped-box").querySelector("summary").textContent =
    `Drops and refusals by reason (${dropped.reduce((s, [, n]) => s + n, 0).toLocaleString("en-US")})`;
  fill("dropped", dropped.length
    ? table(["reason", "count"], dropped.map(([r, n]) => el("tr", {}, el("td", {}, el("code", {}, r)), el("td", { class: "num" }, int(n)))))
    : el("tbody", {}, el("tr", {}, el("td", { class: "muted" }, "nothing dropped"))));
}

// -- epochs ------------------------------------------------------------------------------------
function renderTimeline(epochs, network) {
  const items = epochs.map((e) => {
    const chosen = e.epoch === state.shown;
    return el("button", {
      class: "tick" + (e.posted ? " posted" : " unposted") + (chosen ? " chosen" : ""),
      role: "listitem", "data-epoch": e.epoch,
      title: `epoch ${e.epoch}: final, ${e.signatures} of ${network.n} signatures, ${e.posted ? "accepted on chain" : "not confirmed on chain"}`,
      onclick: () => { state.epoch = e.epoch; writeHash(); refresh(); },
    }, el("span", { class: "tick-epoch" }, String(e.epoch)),
    el("span", { class: "tick-sigs" }, `${e.signatures}/${network.n}`),
    el("span", { class: "tick-chain" }, e.posted ? "on chain" : "pending"));
  });
  fill("timeline", items.length ? items : el("p", { class: "muted" }, "No final report yet."));
}

function renderEpochDetail(report, network) {
  const box = document.getElementById("epoch-detail");
  if (!report) { box.replaceChildren(el("p", { class: "muted" }, "No final report yet.")); return; }
  const pool = report.pool;
  const total = report.records.reduce((s, r) => s + BigInt(r.weight), 0n);
  const signers = new Set(report.signatures.map((s) => s.signer));
  const chainFacts = [
    ["Chain status", el("span", { class: "state " + report.chain.status }, report.chain.status)],
    ["Transaction", report.chain.tx ? keyText(report.chain.tx) : "–"],
    ["Slot", int(report.chain.slot)],
  ];
  if (pool) {
    chainFacts.push(
      ["Accepted by the pool", pool.accepted === null ? "unknown" : pool.accepted ? "yes" : "no"],
      ["Signatures on chain", pool.signatures_on_chain === null ? "–" : `${pool.signatures_on_chain} of ${pool.threshold ?? "?"} needed`],
      ["Reserved", int(pool.reserved)], ["Claimed", `${int(pool.claimed_total)} in ${int(pool.claimed_count)} claims`]);
    if (pool.error) chainFacts.push(["Chain read error", el("span", { class: "error" }, pool.error)]);
  }
  box.replaceChildren(
    el("h3", { id: "epoch-title", "data-epoch": report.epoch }, `Epoch ${report.epoch}`,
      el("span", { class: "muted" }, ` · final · ${report.signatures.length} of ${network.n} signatures (threshold ${network.threshold})`)),
    el("dl", { class: "facts" },
      el("div", { class: "fact wide" }, el("dt", {}, "Header sha256"), el("dd", {}, el("code", { class: "key wrap" }, report.header_sha256))),
      chainFacts.map(([k, v]) => el("div", { class: "fact" }, el("dt", {}, k), el("dd", {}, v)))),
    el("div", { class: "signers" }, el("span", { class: "label" }, "Signed by"),
      network.validators.map((v) => el("span", { class: "signer " + (signers.has(v.signing_key) ? "yes" : "no"), title: v.signing_key },
        v.name, signers.has(v.signing_key) ? " ✓" : " –"))),
    table(["provider", "uptime", "rtt", "down", "up", "weight", "share", "flags"],
      report.records.map((r) => el("tr", { "data-provider": r.provider, onclick: () => chooseProvider(r.provider) },
        el("td", {}, keyText(r.provider)), el("td", { class: "num" }, pct(r.uptime_bps)), el("td", { class: "num" }, ms(r.rtt_us)),
        el("td", { class: "num" }, mbit(r.down_kbps)), el("td", { class: "num" }, mbit(r.up_kbps)),
        el("td", { class: "num" }, int(r.weight)), el("td", { class: "num" }, share(BigInt(r.weight), total)),
        el("td", {}, flagList(r.flag_names)))),
      { class: "clickable", id: "epoch-records" }));
}

function share(weight, total) {
  if (total === 0n) return "–";
  return (Number((weight * 1000000n) / total) / 10000).toFixed(2) + " %";
}

// -- providers ---------------------------------------------------------------------------------
function chooseProvider(key) {
  state.provider = key;
  writeHash();
  refresh();
  document.getElementById("providers").scrollIntoView({ behavior: "smooth" });
}

function renderProviders(list) {
  const rows = list.map((p) => el("tr", { "data-provider": p.provider, class: p.provider === state.provider ? "chosen" : null,
    onclick: () => chooseProvider(p.provider) },
  el("td", {}, keyText(p.provider)), el("td", {}, p.region || "–"), el("td", { class: "num" }, pct(p.uptime_bps)),
  el("td", { class: "num" }, ms(p.rtt_us)), el("td", { class: "num" }, mbit(p.down_kbps)), el("td", { class: "num" }, mbit(p.up_kbps)),
  el("td", { class: "num" }, int(p.weight)), el("td", {}, flagList(p.flag_names))));
  const head = ["provider", "region", "uptime", "rtt", "down", "up", "weight", "flags"];
  const empty = el("tr", {}, el("td", { class: "muted", colspan: head.length }, "No records yet."));
  const built = table(head, rows.length ? rows : [empty]);
  document.getElementById("provider-table").replaceChildren(...built.childNodes);
}

// The record's values, recomputed from the committee the way proofs/aggregate.py does:
// medians of integers (floored mean of the two middle values), flags by majority.
function median(values) {
  const v = [...values].sort((a, b) => a - b);
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : Math.floor((v[mid - 1] + v[mid]) / 2);
}

const uptimeOf = (o) => Math.floor((o.heartbeats_ok * 10000) / o.heartbeats_sent);

// proofs.aggregate.weight in exact integers (BigInt): capped throughput x uptime^p x
// regional demand x latency discount, floored once.
function weightOf(rewards, uptime, rtt, down, up, demand) {
  const cap = BigInt(rewards.throughput_cap_kbps);
  const min = (a, b) => (a < b ? a : b);
  const throughput = (min(BigInt(down), cap) + min(BigInt(up), cap)) / 2n;
  const p = BigInt(rewards.uptime_exponent);
  let num = throughput * BigInt(uptime) ** p * BigInt(demand);
  let den = 10000n ** p * 1000n;
  const bound = BigInt(rewards.latency_bound_us);
  if (BigInt(rtt) > bound) { num *= bound; den *= BigInt(rtt); }
  return { throughput, weight: num / den };
}

const FRAUD = new Set(["throughput_fraud", "heartbeat_bad_sig", "upload_mismatch", "truncated_stream"]);

function renderProviderDetail(p, network, status) {
  const box = document.getElementById("provider-detail");
  box.hidden = false;
  const title = el("h3", { id: "provider-title" }, "Why this score: ", el("code", { class: "key wrap", id: "provider-key" }, p.provider));
  if (p.epoch === null) {
    box.replaceChildren(title, el("p", { class: "muted" }, "Registered, but in no final report yet: it is measured from the epoch after its registration is in one."));
    return;
  }
  const excluded = new Set((status.excluded || {})[String(p.epoch)] || []);
  const quorum = Math.floor(Math.min(network.committee_size, network.n) / 2) + 1;
  const used = p.committee.filter((o) => o.heartbeats_sent > 0 && !excluded.has(o.validator));
  const rows = p.committee.map((o) => {
    const why = o.heartbeats_sent === 0 ? "no heartbeat sent: not used" : excluded.has(o.validator) ? "excluded as inconsistent" : "used";
    return el("tr", { class: why === "used" ? null : "unused", "data-validator": o.validator },
      el("td", {}, o.name || keyText(o.validator)),
      el("td", { class: "num" }, `${o.heartbeats_ok}/${o.heartbeats_sent}`),
      el("td", { class: "num" }, o.heartbeats_sent ? int(uptimeOf(o)) : "–"),
      el("td", { class: "num" }, int(o.rtt_median_us)), el("td", { class: "num" }, int(o.down_kbps)),
      el("td", { class: "num" }, int(o.up_kbps)), el("td", {}, flagList(o.flag_names)), el("td", { class: "muted" }, why));
  });
  const carried = p.flag_names.includes("insufficient");
  let medianRow = null;
  if (used.length && !carried) {
    const flagCounts = {};
    for (const o of used) for (const f of o.flag_names) flagCounts[f] = (flagCounts[f] || 0) + 1;
    const majority = Object.keys(flagCounts).filter((f) => flagCounts[f] * 2 > used.length);
    medianRow = el("tr", { class: "median", id: "median-row" }, el("td", {}, `median of ${used.length}`), el("td", {}),
      el("td", { class: "num" }, int(median(used.map(uptimeOf)))), el("td", { class: "num" }, int(median(used.map((o) => o.rtt_median_us)))),
      el("td", { class: "num" }, int(median(used.map((o) => o.down_kbps)))), el("td", { class: "num" }, int(median(used.map((o) => o.up_kbps)))),
      el("td", {}, flagList(majority)), el("td", { class: "muted" }, "flags: set by more than half"));
  }
  const recordRow = el("tr", { class: "record", id: "record-row" }, el("td", {}, `record, epoch ${p.epoch}`), el("td", {}),
    el("td", { class: "num" }, int(p.uptime_bps)), el("td", { class: "num" }, int(p.rtt_us)), el("td", { class: "num" }, int(p.down_kbps)),
    el("td", { class: "num" }, int(p.up_kbps)), el("td", {}, flagList(p.flag_names)), el("td", {}));
  const committee = table(["committee member", "heartbeats ok", "uptime (bps)", "rtt median (µs)", "down (kbit/s)", "up (kbit/s)", "flags", ""],
    [...rows, medianRow, recordRow], { id: "committee", class: "compact" });
  const notes = [];
  if (carried) notes.push("The committee had no quorum this epoch: the last quorate record is carried one epoch, flagged insufficient.");
  else if (used.length < quorum) notes.push(`Only ${used.length} usable observations here (quorum ${quorum}).`);
  box.replaceChildren(title,
    el("p", { class: "muted" }, `Region ${p.region || "?"} · payout `, keyText(p.payout),
      p.registration ? ` · registered ${when(p.registration.issued_at)} · ${p.registration.multiaddr}` : ""),
    el("h4", {}, "What each committee member measured"), committee, notes.map((n) => el("p", { class: "note" }, n)),
    el("h4", {}, "Weight"), formula(p, network), payouts(p));
}

function formula(p, network) {
  const r = network.rewards;
  const demand = (r.region_demand_milli || {})[p.region] ?? 1000;
  const fraud = p.flag_names.filter((f) => FRAUD.has(f));
  const { throughput, weight } = weightOf(r, p.uptime_bps, p.rtt_us, p.down_kbps, p.up_kbps, demand);
  const computed = fraud.length ? 0n : weight;
  const latency = p.rtt_us > r.latency_bound_us
    ? `${int(r.latency_bound_us)} / ${int(p.rtt_us)} = ${(r.latency_bound_us / p.rtt_us).toFixed(4)} (rtt over the ${ms(r.latency_bound_us)} bound)`
    : `1 (rtt ${ms(p.rtt_us)} within the ${ms(r.latency_bound_us)} bound)`;
  const lines = [
    ["weight", "= throughput × (uptime / 10000)^p × demand / 1000 × latency factor, floored; 0 with a fraud flag"],
    ["throughput", `= (min(down, cap) + min(up, cap)) / 2 = (min(${int(p.down_kbps)}, ${int(r.throughput_cap_kbps)}) + min(${int(p.up_kbps)}, ${int(r.throughput_cap_kbps)})) / 2 = ${int(throughput)} kbit/s`],
    ["uptime factor", `= (${int(p.uptime_bps)} / 10000)^${r.uptime_exponent} = ${Math.pow(p.uptime_bps / 10000, r.uptime_exponent).toFixed(4)}`],
    ["demand", `= ${demand} / 1000 for region ${p.region || "?"}`],
    ["latency factor", `= ${latency}`],
    ["fraud flags", fraud.length ? fraud.join(", ") + ": weight 0" : "none"],
    ["computed", `= ${int(computed)}`],
  ];
  const match = BigInt(p.weight) === computed;
  return el("div", { class: "formula", id: "formula" },
    lines.map(([k, v]) => el("div", { class: "line" }, el("span", { class: "term" }, k), el("span", {}, v))),
    el("div", { class: "line result " + (match ? "match" : "mismatch") }, el("span", { class: "term" }, "record says"),
      el("span", { id: "record-weight" }, int(p.weight), match ? " ✓ matches" : " ≠ computed (the record was computed from another registration or carried)")));
}

function payouts(p) {
  if (!p.payouts || !p.payouts.length) return null;
  return el("div", {}, el("h4", {}, "Payouts"),
    p.payouts_error ? el("p", { class: "error" }, "chain read failed: " + p.payouts_error) : null,
    table(["epoch", "record index", "weight", "amount", "claimed"], p.payouts.map((x) => el("tr", {},
      el("td", { class: "num" }, String(x.epoch)), el("td", { class: "num" }, String(x.index)), el("td", { class: "num" }, int(x.weight)),
      el("td", { class: "num" }, x.amount === null ? "not accepted yet" : int(x.amount)),
      el("td", {}, x.claimed === null ? "–" : x.claimed ? "yes" : "no"))), { id: "payouts", class: "compact" }));
}

// -- excluded and evidence ----------------------------------------------------------------------
function renderExcluded(status) {
  const entries = Object.entries(status.excluded || {});
  fill("excluded-list", entries.length
    ? table(["epoch", "validators left out"], entries.map(([epoch, keys]) => el("tr", {}, el("td", { class: "num" }, epoch),
      el("td", {}, keys.map((k) => el("span", { class: "signer no" }, who(k)))))))
    : el("p", { class: "muted" }, "None in the last 4 epochs."));
}

function renderEvidence(list) {
  fill("evidence-list", list.length
    ? table(["epoch", "kind", "offender", "recorded", "first", "second"], list.map((e) => el("tr", {},
      el("td", { class: "num" }, String(e.epoch)), el("td", {}, e.kind), el("td", {}, e.offender ? who(e.offender) : "(a final report)"),
      el("td", {}, when(e.recorded_at)), el("td", {}, el("code", { class: "key", title: e.first }, short(e.first))),
      el("td", {}, el("code", { class: "key", title: e.second }, short(e.second))))))
    : el("p", { class: "muted" }, "No equivocation seen."));
}

// -- the loop ----------------------------------------------------------------------------------
let refreshing = false;
let again = false; // a click during a refresh: draw once more when it ends

async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const [status, health, network, epochs, providers, evidence] = await Promise.all([
      getJSON("/status"), getJSON("/healthz"), getJSON("/network"), getJSON(`/epochs?limit=${EPOCHS_SHOWN}`),
      getJSON("/providers"), getJSON("/evidence?limit=20")]);
    for (const [name, r] of [["status", status], ["network", network], ["epochs", epochs], ["providers", providers], ["evidence", evidence]]) {
      if (r.status !== 200) throw new Error(`/${name} answered ${r.status}: ${r.body && r.body.error || "no JSON"}`);
    }
    state.network = network.body;
    renderHealth(health);
    renderNode(status.body, network.body);
    const epoch = state.epoch ?? (epochs.body.length ? epochs.body[0].epoch : null);
    const detail = epoch === null ? null : await getJSON(`/epochs/${epoch}`);
    state.shown = detail && detail.status === 200 ? detail.body.epoch : null;
    renderTimeline(epochs.body, network.body);
    renderEpochDetail(detail && detail.status === 200 ? detail.body : null, network.body);
    renderProviders(providers.body);
    if (state.provider) {
      const p = await getJSON(`/providers/${state.provider}`);
      if (p.status === 200) renderProviderDetail(p.body, network.body, status.body);
      else fill("provider-detail", el("p", { class: "error" }, `provider ${state.provider}: ${p.body && p.body.error || p.status}`)).hidden = false;
    }
    renderExcluded(status.body);
    renderEvidence(evidence.body);
    document.getElementById("load-error").hidden = true;
    document.body.dataset.loaded = String(Date.now());
  } catch (err) {
    const box = document.getElementById("load-error");
    box.textContent = "Could not read this node's API: " + err.message;
    box.hidden = false;
  } finally {
    refreshing = false;
    if (again) { again = false; refresh(); }
  }
}

window.addEventListener("hashchange", () => { readHash(); refresh(); });
readHash();
refresh();
setInterval(refresh, REFRESH_MS);
