// ticklet live page: one instrument's price, each model's forecast drawn at its target time, and each model's
// rolling hit rate, fed by the WebSocket stream (/v1/stream). Everything is served by ticklet serve itself.
(() => {
  "use strict";
  const WINDOW_NS = 10 * 60 * 1e9;   // what is drawn: the last 10 minutes of event time
  const HIT_WINDOW = 100;            // rolling hit rate over the last 100 non-zero moves
  const BACKLOG = 5000;              // records asked of the server's buffer on first connect
  const params = new URLSearchParams(location.search);
  const $ = id => document.getElementById(id);
  const colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  const state = {
    instrument: params.get("instrument") || "",
    horizon: params.get("horizon") ? Number(params.get("horizon")) : null,
    horizons: new Set(),
    price: [],             // [ts, price]
    forecasts: new Map(),  // model -> [[ts_target, pred_price]]
    hits: new Map(),       // model -> {moves: [0|1], series: [[ts, rate]]}
    metrics: new Map(),    // model -> latest metrics record at the chosen horizon
    seen: new Map(),       // partition -> last offset received
    records: 0, messages: 0, lastTs: 0, dirty: false, ws: null, retry: 500,
  };
  window.ticklet = state;  // for the tests and the curious

  const colour = model => {
    const models = [...new Set([...state.forecasts.keys(), ...state.hits.keys()])].sort();
    return colours[Math.max(0, models.indexOf(model)) % colours.length];
  };
  const date = ns => new Date(ns / 1e6);
  const trim = (arr, from) => { let i = 0; while (i < arr.length && arr[i][0] < from) i++; if (i) arr.splice(0, i); };

  function take(rec) {
    const h = rec.horizon;
    if (rec.type === "forecast" || rec.type === "scored") {
      if (!state.horizons.has(h)) { state.horizons.add(h); fillHorizons(); }
    }
    if (state.horizon === null && rec.type === "forecast") { state.horizon = h; fillHorizons(); }
    if (rec.type === "forecast") {
      if (!state.price.length || rec.ts_forecast > state.price[state.price.length - 1][0]) {
        state.price.push([rec.ts_forecast, rec.price]);
      }
      state.lastTs = Math.max(state.lastTs, rec.ts_forecast);
      if (h !== state.horizon) return;
      if (!state.forecasts.has(rec.model)) state.forecasts.set(rec.model, []);
      state.forecasts.get(rec.model).push([rec.ts_target, rec.pred_price]);
    } else if (rec.type === "scored" && h === state.horizon) {
      if (rec.realized_return === 0 || rec.pred_return === 0) return;  // a hit needs a move and a call
      if (!state.hits.has(rec.model)) state.hits.set(rec.model, {moves: [], series: []});
      const s = state.hits.get(rec.model);
      s.moves.push(Math.sign(rec.realized_return) === Math.sign(rec.pred_return) ? 1 : 0);
      if (s.moves.length > HIT_WINDOW) s.moves.shift();
      s.series.push([rec.ts_target, s.moves.reduce((a, b) => a + b, 0) / s.moves.length]);
    } else if (rec.type === "metrics" && h === state.horizon) {
      state.metrics.set(rec.model, rec);
    } else {
      return;
    }
    state.dirty = true;
  }

  function onMessage(ev) {
    const envelopes = JSON.parse(ev.data);
    state.messages += 1;
    for (const env of envelopes) {
      state.seen.set(env.partition, env.offset);
      state.records += 1;
      take(env.record);
    }
  }

  function connect() {
    const q = new URLSearchParams({instrument: state.instrument});
    if (params.get("api_key")) q.set("api_key", params.get("api_key"));
    if (state.seen.size) q.set("after", [...state.seen].map(([p, o]) => `${p}:${o}`).join(","));
    else q.set("backlog", String(BACKLOG));
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${location.pathname.replace(/[^/]*$/, "")}v1/stream?${q}`;
    const ws = state.ws = new WebSocket(url);
    ws.onopen = () => { state.retry = 500; status(); };
    ws.onmessage = onMessage;
    ws.onclose = () => {  // dropped, restarted or gone: resume after the last offsets seen
      status(); setTimeout(connect, state.retry); state.retry = Math.min(state.retry * 2, 10000);
    };
  }

  function status() {
    const el = $("status"), open = state.ws && state.ws.readyState === WebSocket.OPEN;
    el.className = open ? "live" : "down";
    const last = state.lastTs ? date(state.lastTs).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "-";
    el.textContent = `${open ? "live" : "reconnecting"} - ${state.records.toLocaleString()} records, last bar ${last}`;
  }

  function fillHorizons() {
    const sel = $("horizon"), hs = [...state.horizons].sort((a, b) => a - b);
    sel.innerHTML = hs.map(h => `<option value="${h}">${h} bar${h === 1 ? "" : "s"}</option>`).join("");
    if (state.horizon !== null) sel.value = String(state.horizon);
  }

  function draw() {
    if (!state.dirty) return;
    state.dirty = false;
    const from = state.lastTs - WINDOW_NS;
    trim(state.price, from);
    for (const pts of state.forecasts.values()) trim(pts, from);
    for (const s of state.hits.values()) trim(s.series, from);
    const models = [...state.forecasts.keys()].sort();
    const price = [{x: state.price.map(p => date(p[0])), y: state.price.map(p => p[1]), name: "price",
                    type: "scatter", mode: "lines", line: {color: "#222", width: 1.5}}];
    for (const m of models) {
      const pts = state.forecasts.get(m);
      price.push({x: pts.map(p => date(p[0])), y: pts.map(p => p[1]), name: `${m} (at target)`, type: "scatter",
                  mode: "markers", marker: {size: 4, color: colour(m), opacity: 0.75}});
    }
    const h = state.horizon === null ? "" : ` ${state.horizon} bar${state.horizon === 1 ? "" : "s"} ahead`;
    Plotly.react("price", price, {
      title: {text: `${state.instrument}: price and forecasts${h}, each at its target time`, font: {size: 14}},
      margin: {l: 70, r: 20, t: 40, b: 40}, xaxis: {type: "date"}, yaxis: {title: {text: "price"}},
      legend: {orientation: "h", y: -0.12}, uirevision: state.instrument + h,
    }, {displaylogo: false, responsive: true});
    const hit = [...state.hits.keys()].sort().map(m => {
      const s = state.hits.get(m).series;
      return {x: s.map(p => date(p[0])), y: s.map(p => p[1]), name: m, type: "scatter", mode: "lines",
              line: {color: colour(m), width: 1.5}};
    });
    Plotly.react("hitrate", hit, {
      title: {text: `rolling hit rate (last ${HIT_WINDOW} non-zero moves)${h}`, font: {size: 14}},
      margin: {l: 70, r: 20, t: 40, b: 40}, xaxis: {type: "date"},
      yaxis: {title: {text: "hit rate"}, range: [0, 1]},
      shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: 0.5, y1: 0.5, line: {dash: "dot", color: "#999"}}],
      legend: {orientation: "h", y: -0.15}, uirevision: state.instrument + h,
    }, {displaylogo: false, responsive: true});
    const fmt = (v, d) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));
    $("metrics").querySelector("tbody").innerHTML = [...state.metrics.keys()].sort().map(m => {
      const r = state.metrics.get(m);
      return `<tr><td>${m}</td><td>${r.n}</td><td>${fmt(r.hit_rate, 3)}</td><td>${fmt(r.skill, 4)}</td>` +
             `<td>${fmt(r.mae, 6)}</td><td>${fmt(r.rmse, 6)}</td></tr>`;
    }).join("");
    status();
  }

  async function start() {
    const key = params.get("api_key");
    const res = await fetch("v1/instruments" + (key ? `?api_key=${encodeURIComponent(key)}` : ""));
    const list = res.ok ? await res.json() : [];
    const names = list.map(i => i.instrument);
    if (!state.instrument) state.instrument = names[0] || "BTCUSDT";
    if (!names.includes(state.instrument)) names.push(state.instrument);
    $("instrument").innerHTML = names.map(n => `<option>${n}</option>`).join("");
    $("instrument").value = state.instrument;
    $("instrument").onchange = e => {
      const q = new URLSearchParams(location.search); q.set("instrument", e.target.value); q.delete("horizon");
      location.search = q.toString();
    };
    $("horizon").onchange = e => {
      const q = new URLSearchParams(location.search); q.set("horizon", e.target.value);
      location.search = q.toString();
    };
    connect();
    setInterval(draw, 500);
    setInterval(status, 2000);
    draw();
  }

  start();
})();
