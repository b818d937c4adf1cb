// K2's live dashboard: plain JavaScript over K2's own JSON API and its SSE stream; no library, no build.
//
// Market: 1-minute candles from /v1/bars/live (Iceberg head + the Kafka tail), updated in place by
// `bar` events of /v1/stream; the trade tape and bid/ask from `trade` and `quote` events.
// Pipeline and data quality: /v1/status every 2 s. Lake: /v1/snapshots every 5 s; choosing a
// snapshot redraws the chart from /v1/bars?snapshot_id= over the same window (time travel).
// Every drawn candle carries its bar's fields as data-* attributes, exactly as the API sent them,
// so a test (or a curious user) can compare the picture with the API's answer.
// Access: when the API answers 401, the page asks for a key, keeps it for the tab's session
// (sessionStorage) and sends it as X-API-Key, also on the stream (fetch, not EventSource, which
// cannot send headers).
"use strict";

(() => {
  const KEY = "k2.apiKey";
  const SVG = "http://www.w3.org/2000/svg";
  const MAX_BARS = 120;
  const TAPE_ROWS = 30;
  const state = {
    symbol: null,
    bars: new Map(), // start (ms) -> bar row, the live view
    shown: [], // the bars drawn now (live or a snapshot's)
    mode: "live",
    snapshot: null,
    streamGen: 0,
    abort: null,
    version: 0,
    liveLoadedAt: 0,
    spark: { rate: [], lag: [], commit: [] },
  };
  const $ = (id) => document.getElementById(id);

  // -- access --------------------------------------------------------------------------------------
  let keyPrompt = null;
  function askForKey(message) {
    if (!keyPrompt) {
      keyPrompt = new Promise((resolve) => {
        const form = $("key-form");
        form.hidden = false;
        $("key-error").textContent = message;
        $("api-key").focus();
        form.onsubmit = (ev) => {
          ev.preventDefault();
          sessionStorage.setItem(KEY, $("api-key").value.trim());
          form.hidden = true;
          keyPrompt = null;
          resolve();
        };
      });
    }
    return keyPrompt;
  }

  async function api(path, params, opts = {}) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
    }
    for (;;) {
      const headers = { Accept: opts.raw ? "text/event-stream" : "application/json" };
      const key = sessionStorage.getItem(KEY);
      if (key) headers["X-API-Key"] = key;
      const resp = await fetch(url, { headers, signal: opts.signal, cache: "no-store" });
      if (resp.status === 401) {
        await askForKey(key ? "That key was refused; try another." : "");
        continue;
      }
      if (opts.raw && resp.ok) return resp;
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) throw new Error(`${path}: ${resp.status} ${body.detail || body.error || resp.statusText}`);
      return body;
    }
  }

  // -- helpers -------------------------------------------------------------------------------------
  const ms = (iso) => Date.parse(iso);
  const num = (s) => (s === null || s === undefined ? NaN : Number(s));
  const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toLocaleString("en", { maximumFractionDigits: digits }) : "–");
  const price = (s) => (s === null || s === undefined ? "–" : String(Number(s)));
  const hhmmss = (iso) => (iso ? new Date(iso).toISOString().slice(11, 23) : "");
  function el(tag, attrs = {}, text) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function fillTable(id, rows, cells) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren(
      ...rows.map((row) => {
        const tr = el("tr");
        for (const c of cells(row)) tr.append(c instanceof Node ? c : el("td", {}, String(c)));
        return tr;
      }),
    );
  }
  function spark(id, series, value) {
    series.push(Number.isFinite(value) ? value : 0);
    if (series.length > 60) series.shift();
    const max = Math.max(...series, 1e-9);
    const pts = series.map((v, i) => `${(i * 120) / 59},${22 - (v / max) * 20}`).join(" ");
    $(id).replaceChildren(el("svg:polyline", { points: pts }));
  }

  // -- the chart -----------------------------------------------------------------------------------
  function draw(bars, note) {
    const svg = $("chart");
    const W = 960, H = 340, L = 8, R = 64, T = 10, VOL = 44, B = 20;
    const plotW = W - L - R, priceH = H - T - VOL - B;
    const nodes = [];
    state.shown = bars;
    state.version += 1;
    svg.dataset.version = String(state.version);
    svg.dataset.mode = state.mode;
    svg.dataset.bars = String(bars.length);
    if (state.snapshot) svg.dataset.snapshotId = state.snapshot;
    else delete svg.dataset.snapshotId;
    if (!bars.length) {
      nodes.push(el("svg:text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" }, "no bars in this window"));
      svg.replaceChildren(...nodes);
      svg.dataset.state = "ready";
      $("chart-note").textContent = note || "";
      return;
    }
    const lo = Math.min(...bars.map((b) => num(b.low)));
    const hi = Math.max(...bars.map((b) => num(b.high)));
    const pad = (hi - lo) * 0.05 || hi * 0.001 || 1;
    const yMin = lo - pad, yMax = hi + pad;
    const y = (p) => T + ((yMax - p) / (yMax - yMin)) * priceH;
    const slots = Math.max(bars.length, 12);
    const slot = plotW / slots;
    const bodyW = Math.max(1, slot * 0.65);
    const maxVol = Math.max(...bars.map((b) => num(b.volume)), 1e-9);
    for (let i = 0; i <= 4; i++) {
      const p = yMin + ((yMax - yMin) * i) / 4;
      nodes.push(el("svg:line", { x1: L, x2: L + plotW, y1: y(p), y2: y(p), class: "grid" }));
      nodes.push(el("svg:text", { x: L + plotW + 4, y: y(p) + 3, class: "axis" }, p.toFixed(p >= 100 ? 2 : 4)));
    }
    const every = Math.max(1, Math.ceil(44 / slot)); // a time label every 44 px at least
    bars.forEach((b, i) => {
      const cx = L + slot * i + slot / 2;
      const o = num(b.open), c = num(b.close), up = c >= o;
      const g = el("svg:g", {
        class: `bar ${up ? "up" : "down"}`,
        "data-start": b.start, "data-end": b.end, "data-open": b.open, "data-high": b.high,
        "data-low": b.low, "data-close": b.close, "data-volume": b.volume, "data-trades": b.trades,
        "data-vwap": b.vwap, "data-uncommitted": b.uncommitted > 0 || b.live === true ? "true" : "false",
      });
      g.append(el("svg:title", {}, `${b.start}  O ${price(b.open)} H ${price(b.high)} L ${price(b.low)} C ${price(b.close)}  vol ${price(b.volume)}  ${b.trades} trades`));
      g.append(el("svg:line", { x1: cx, x2: cx, y1: y(num(b.high)), y2: y(num(b.low)), class: `wick ${up ? "up" : "down"}` }));
      const top = y(Math.max(o, c)), height = Math.max(1, Math.abs(y(o) - y(c)));
      g.append(el("svg:rect", { x: cx - bodyW / 2, y: top, width: bodyW, height, class: `body ${up ? "up" : "down"}` }));
      const vh = (num(b.volume) / maxVol) * (VOL - 6);
      g.append(el("svg:rect", { x: cx - bodyW / 2, y: T + priceH + VOL - vh, width: bodyW, height: vh, class: "vol" }));
      nodes.push(g);
      if (i % every === 0) {
        nodes.push(el("svg:text", { x: cx, y: H - 6, class: "axis", "text-anchor": "middle" }, b.start.slice(11, 16)));
      }
    });
    svg.replaceChildren(...nodes);
    svg.dataset.state = "ready";
    $("chart-note").textContent = note || "";
  }

  function liveBars() {
    return [...state.bars.values()].sort((a, b) => ms(a.start) - ms(b.start)).slice(-MAX_BARS);
  }

  function mergeBar(row) {
    if (row.symbol !== state.symbol) return;
    state.bars.set(ms(row.start), { ...row, live: true });
    while (state.bars.size > MAX_BARS) state.bars.delete(Math.min(...state.bars.keys()));
    if (state.mode === "live") draw(liveBars(), "live: the newest bar moves with every tick that reaches Kafka");
  }

  async function loadLive() {
    state.liveLoadedAt = Date.now();
    const body = await api("/v1/bars/live", { symbol: state.symbol, interval: "1m", minutes: 60 });
    state.bars = new Map(body.data.map((b) => [ms(b.start), b]));
    const tail = body.tail_rows ?? 0;
    if (state.mode === "live") {
      draw(liveBars(), `live: Iceberg snapshot ${body.snapshot_id ?? "none"} + ${tail} uncommitted trade(s) from Kafka`);
    }
  }

  async function travel(snapshotId) {
    if (!snapshotId) return goLive();
    const bars = liveBars();
    if (!bars.length) return;
    state.mode = "snapshot";
    state.snapshot = snapshotId;
    $("mode").dataset.mode = "snapshot";
    $("mode").textContent = `as of snapshot ${snapshotId}`;
    $("chart").dataset.state = "loading";
    const start = bars[0].start, end = bars[bars.length - 1].end;
    const body = await api("/v1/bars", { symbols: state.symbol, start, end, interval: "1m", snapshot_id: snapshotId });
    if (state.snapshot !== snapshotId) return; // another choice came first
    draw(body.data, `as of snapshot ${snapshotId}: the same window as Iceberg held it then`);
    $("travel-note").textContent = `${body.data.length} bar(s) as of ${snapshotId}`;
    markSelected();
  }

  async function goLive() {
    state.mode = "live";
    state.snapshot = null;
    $("snapshot").value = "";
    $("mode").dataset.mode = "live";
    $("mode").textContent = "live";
    $("travel-note").textContent = "";
    markSelected();
    await loadLive();
  }

  // -- tape and quote ------------------------------------------------------------------------------
  let lastPrice = NaN;
  function addTrades(rows, fresh) {
    const body = $("tape").querySelector("tbody");
    for (const t of rows) {
      if (t.symbol !== state.symbol) continue;
      const p = num(t.price);
      const side = Number.isFinite(lastPrice) && p !== lastPrice ? (p > lastPrice ? "buy" : "sell") : "";
      lastPrice = p;
      const tr = el("tr", { "data-message-id": t.message_id, "data-committed": String(t.committed !== false), class: fresh ? "fresh" : "" });
      tr.append(el("td", {}, hhmmss(t.exchange_ts)), el("td", { class: side }, price(t.price)), el("td", {}, price(t.size)),
        el("td", {}, String(t.sequence)), el("td", { class: "muted", title: "arrived from the Kafka tail, before its commit" }, t.committed === false ? "live" : ""));
      body.prepend(tr);
      $("last").textContent = price(t.price);
    }
    while (body.rows.length > TAPE_ROWS) body.deleteRow(body.rows.length - 1);
  }

  function setQuote(q) {
    if (q.symbol !== state.symbol) return;
    $("bid").textContent = price(q.bid_price);
    $("ask").textContent = price(q.ask_price);
    $("bid-size").textContent = q.bid_size ? `× ${price(q.bid_size)}` : "";
    $("ask-size").textContent = q.ask_size ? `× ${price(q.ask_size)}` : "";
  }

  async function loadTapeAndQuote() {
    const [trades, latest] = await Promise.all([
      api("/v1/trades/recent", { symbol: state.symbol, minutes: 60 }),
      api("/v1/latest", { symbols: state.symbol }),
    ]);
    $("tape").querySelector("tbody").replaceChildren();
    lastPrice = NaN;
    addTrades(trades.data.slice(-TAPE_ROWS), false);
    const row = latest.data.find((r) => r.symbol === state.symbol);
    if (row) setQuote(row);
  }

  // -- the live stream -----------------------------------------------------------------------------
  function setConnection(s, title) {
    const pill = $("connection");
    pill.dataset.state = s;
    pill.textContent = s === "open" ? "streaming" : s;
    pill.title = title || "";
  }

  function handleEvent(block, gen) {
    if (gen !== state.streamGen) return;
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (!data) return;
    const row = JSON.parse(data);
    if (event === "trade") addTrades([row], true);
    else if (event === "quote") setQuote(row);
    else if (event === "bar") mergeBar(row);
    else if (event === "status" && (row.closed || row.error)) setConnection("closed", row.closed || row.detail);
  }

  async function stream() {
    const gen = ++state.streamGen;
    if (state.abort) state.abort.abort();
    const ctrl = new AbortController();
    state.abort = ctrl;
    setConnection("connecting");
    try {
      const resp = await api("/v1/stream", { symbols: state.symbol, kinds: "trades,quotes", bars: "true" }, { raw: true, signal: ctrl.signal });
      setConnection("open");
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          handleEvent(buf.slice(0, cut), gen);
          buf = buf.slice(cut + 2);
        }
      }
      if (gen === state.streamGen) setConnection("closed");
    } catch (err) {
      if (err.name === "AbortError") return;
      setConnection("error", err.message);
    }
    if (gen === state.streamGen) setTimeout(() => gen === state.streamGen && stream(), 2000);
  }

  // -- pipeline, quality ---------------------------------------------------------------------------
  function renderStatus(s) {
    const ing = s.ingest;
    // bars the stream updated are marked uncommitted; once commits land, re-read them (at most every 10 s)
    const stale = [...state.bars.values()].some((b) => b.live || b.uncommitted > 0);
    if (state.mode === "live" && stale && Date.now() - state.liveLoadedAt > 10000) loadLive().catch(report);
    const pill = $("ingest-state");
    if (!ing) {
      pill.textContent = "no pipeline status yet";
      pill.dataset.state = "closed";
    } else {
      pill.textContent = ing.running ? `running (pid ${ing.pid})` : "stopped";
      pill.dataset.state = ing.running ? "open" : "closed";
      $("rate").textContent = fmt(ing.messages_per_s, 0);
      $("lag").textContent = fmt(ing.lag, 0);
      $("commit-latency").textContent = ing.commit_last_s === null ? "–" : fmt(ing.commit_last_s, 3);
      $("freshness").textContent = ing.freshness_s === null ? "–" : fmt(ing.freshness_s, 1);
      $("level").textContent = ing.level;
      $("level").dataset.level = ing.level;
      $("level-since").textContent = `for ${fmt(ing.level_since_s, 0)} s${ing.stalled ? " · stalled: " + ing.stall_cause : ""}`;
      $("deferred").textContent = `${fmt(ing.deferred, 0)} / ${fmt(ing.backfilled, 0)}`;
      $("backfilled").textContent = `spilled ${fmt(ing.spilled, 0)}`;
      spark("rate-spark", state.spark.rate, ing.messages_per_s);
      spark("lag-spark", state.spark.lag, ing.lag);
      spark("commit-spark", state.spark.commit, ing.commit_last_s ?? 0);
      fillTable("lags", ing.lags, (p) => [p.topic, p.partition, fmt(p.lag, 0)]);
      fillTable("breakers", ing.breakers, (b) => [b.name, el("td", { "data-breaker": b.state }, b.state), b.failures, b.opened_total]);
      fillTable("transitions", ing.transitions.slice(-10).reverse(), (t) => [hhmmss(t.at), `${t.previous} → ${t.level}`, `${t.cause}: ${t.detail}`]);
      if (!ing.transitions.length) fillTable("transitions", [null], () => ["–", `${ing.level} since the start`, ""]);
    }
    const q = s.quality;
    const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
    $("gaps-recorded").textContent = fmt(sum(q.gaps_recorded), 0);
    $("gaps-recovered").textContent = `recovered ${fmt(sum(q.gaps_recovered), 0)} · open ${fmt(sum(q.gaps_open), 0)}`;
    $("holes-pending").textContent = fmt(sum(q.holes_pending), 0);
    $("duplicates").textContent = fmt(sum(q.duplicates), 0);
    $("dead-letters").textContent = fmt(q.dead_letters, 0);
    fillTable("gaps", q.by_symbol, (g) => [g.symbol, g.opened, g.recovered, g.pending]);
    fillTable("dlq", q.latest_dead_letters.slice().reverse(), (d) => [hhmmss(d.at), d.reason, d.source]);
    $("quality-note").textContent = q.lake_error ? `lake: ${q.lake_error}` : "";
  }

  // -- lake ----------------------------------------------------------------------------------------
  function markSelected() {
    for (const tr of $("snapshots").querySelectorAll("tbody tr")) {
      tr.classList.toggle("selected", tr.dataset.snapshotId === state.snapshot);
    }
  }

  function renderSnapshots(rows) {
    const select = $("snapshot");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "live (Iceberg head + Kafka tail)"),
      ...rows.map((r) => el("option", { value: r.snapshot_id }, `${r.snapshot_id} · ${hhmmss(r.committed_at)} · ${fmt(r.total_rows, 0)} rows`)));
    select.value = rows.some((r) => r.snapshot_id === chosen) ? chosen : state.snapshot || "";
    fillTable("snapshots", rows, (r) => [
      r.snapshot_id, hhmmss(r.committed_at), r.operation, fmt(r.added_rows, 0), fmt(r.total_rows, 0),
      (r.offsets || []).map((o) => `${o.topic.split(".").slice(-2).join(".")}/${o.partition}:${o.offset}`).join("  "),
    ]);
    const body = $("snapshots").querySelector("tbody");
    [...body.rows].forEach((tr, i) => {
      tr.dataset.snapshotId = rows[i].snapshot_id;
      tr.onclick = () => { select.value = rows[i].snapshot_id; travel(rows[i].snapshot_id).catch(report); };
    });
    markSelected();
  }

  // -- wiring --------------------------------------------------------------------------------------
  function report(err) {
    console.error(err);
    $("chart-note").textContent = String(err.message || err);
  }

  function every(seconds, fn) {
    const run = () => fn().catch(report).finally(() => setTimeout(run, seconds * 1000));
    run();
  }

  async function chooseSymbol(symbol) {
    state.symbol = symbol;
    $("market-title").textContent = symbol;
    const url = new URL(location.href);
    url.searchParams.set("symbol", symbol);
    history.replaceState(null, "", url);
    await goLive();
    await loadTapeAndQuote();
    stream();
  }

  async function start() {
    const latest = await api("/v1/latest");
    const symbols = [...new Set(latest.data.map((r) => r.symbol))].sort();
    const wanted = new URL(location.href).searchParams.get("symbol");
    if (wanted && !symbols.includes(wanted)) symbols.unshift(wanted);
    $("symbol").replaceChildren(...symbols.map((s) => el("option", { value: s }, s)));
    $("symbol").onchange = () => chooseSymbol($("symbol").value).catch(report);
    $("snapshot").onchange = () => travel($("snapshot").value).catch(report);
    $("live-button").onclick = () => goLive().catch(report);
    every(2, async () => renderStatus(await api("/v1/status")));
    every(5, async () => renderSnapshots((await api("/v1/snapshots", { table: "trades", limit: 20 })).data));
    if (symbols.length) {
      $("symbol").value = wanted || symbols[0];
      await chooseSymbol($("symbol").value);
    } else {
      draw([], "no symbols yet: start a feed and `k2 ingest`");
    }
  }

  document.addEventListener("DOMContentLoaded", () => start().catch(report));
})();
