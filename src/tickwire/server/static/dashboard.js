// tickwire live dashboard: plain JavaScript, no build step, no third-party code.
// It speaks the native protocol (docs/protocol.md) at /ws and reads the market registry
// from GET /api/v1/markets; docs/dashboard.md says what every panel shows.
"use strict";

(() => {
  // ---- settings ------------------------------------------------------------------------
  const LEVELS = 20; // ladder levels shown a side
  const TAPE = 40; // trades kept on the tape
  const CANDLES_KEPT = 600;
  const MP_KEPT = 900; // mp points (one a second) kept per ticker
  const CROWD_KEPT = 240; // crowd points (one a minute) kept per ticker
  const SENTI_WINDOW_MS = 10 * 60 * 1000; // the sentiment chart's time span
  // At start, up to this many publications of each kind are fetched from the channel's
  // history (a resubscribe with `since`), so the tape, chart and sentiment lines are not
  // empty; if the history does not reach back that far, a quarter of it is tried.
  const WARM = { trades: 100, candles: 1000, sentiment: 600 };
  const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];
  const STALE_MS = 40000; // nothing heard for this long (heartbeats: every 15 s): reconnect
  const STATE_KINDS = new Set(["book", "ticker", "candles"]);
  const CHART_INTERVALS = ["1m", "5m", "15m", "1h"];
  const INTERVAL_MS = {
    "1m": 60e3, "5m": 300e3, "15m": 900e3, "30m": 1800e3, "1h": 3600e3, "2h": 7200e3,
    "4h": 14400e3, "6h": 21600e3, "12h": 43200e3, "1d": 86400e3, "3d": 259200e3, "1w": 604800e3,
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ---- decimals: prices and sizes stay strings; arithmetic on BigInt units -------------
  const placesOf = (inc) => (inc.split(".")[1] || "").length;
  const isZero = (s) => !/[1-9]/.test(s);
  function units(s, p) {
    const neg = s.startsWith("-");
    const [i, f = ""] = (neg ? s.slice(1) : s).split(".");
    const u = BigInt((i || "0") + f.padEnd(p, "0").slice(0, p));
    return neg ? -u : u;
  }
  function decimal(u, p) {
    const neg = u < 0n;
    let s = (neg ? -u : u).toString();
    if (p > 0) {
      s = s.padStart(p + 1, "0");
      s = s.slice(0, -p) + "." + s.slice(-p);
    }
    return (neg ? "-" : "") + s;
  }
  // "65000.5" -> "65,000.5"; a leading "-" becomes a minus sign.
  function group(s) {
    if (s === null || s === undefined) return "—";
    const neg = s.startsWith("-");
    const [i, f] = (neg ? s.slice(1) : s).split(".");
    const g = i.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (neg ? "−" : "") + g + (f !== undefined ? "." + f : "");
  }
  // At most `keep` decimals, cut (not rounded): for volumes.
  function cut(s, keep) {
    if (s === null || s === undefined) return null;
    const [i, f] = s.split(".");
    return f === undefined || keep <= 0 ? i : i + "." + f.slice(0, keep);
  }
  // Compare two non-negative decimal strings.
  function cmpDec(a, b) {
    const [ai0, af = ""] = a.split(".");
    const [bi0, bf = ""] = b.split(".");
    const ai = ai0.replace(/^0+(?=\d)/, "");
    const bi = bi0.replace(/^0+(?=\d)/, "");
    if (ai.length !== bi.length) return ai.length - bi.length;
    if (ai !== bi) return ai < bi ? -1 : 1;
    const n = Math.max(af.length, bf.length);
    const x = af.padEnd(n, "0");
    const y = bf.padEnd(n, "0");
    return x === y ? 0 : x < y ? -1 : 1;
  }
  const signed = (x, digits) =>
    x === null || x === undefined ? "—" : (x > 0 ? "+" : x < 0 ? "−" : "") + Math.abs(x).toFixed(digits);
  const pad2 = (n) => String(n).padStart(2, "0");
  const clock = (ts) => {
    const d = new Date(ts);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  };
  const hhmm = (ts) => {
    const d = new Date(ts);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  };

  // ---- Kraken's CRC32 book checksum (docs/market-data.md) -------------------------------
  const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[n] = c >>> 0;
    }
    return t;
  })();
  function crc32(text) {
    let c = 0xffffffff;
    for (let i = 0; i < text.length; i++) c = CRC_TABLE[(c ^ text.charCodeAt(i)) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }
  // The 10 best asks (low to high), then the 10 best bids (high to low): price, then size,
  // each with the "." removed and leading zeros stripped; CRC32 of it all, unsigned.
  function bookChecksum(bids, asks) {
    const part = (s) => s.replace(".", "").replace(/^0+/, "");
    let text = "";
    for (const [p, s] of asks.slice(0, 10)) text += part(p) + part(s);
    for (const [p, s] of bids.slice(0, 10)) text += part(p) + part(s);
    return crc32(text);
  }

  // ---- the local order book: rebuilt from the snapshot plus every update ----------------
  class Book {
    constructor() {
      this.clear();
    }
    clear() {
      this.bids = []; // prices, best (highest) first
      this.asks = []; // prices, best (lowest) first
      this.sizes = { bids: new Map(), asks: new Map() };
    }
    find(side, price) {
      const arr = this[side];
      const sign = side === "bids" ? -1 : 1;
      let lo = 0;
      let hi = arr.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cmpDec(arr[mid], price) * sign < 0) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    }
    set(side, price, size) {
      const sizes = this.sizes[side];
      const had = sizes.has(price);
      if (isZero(size)) {
        if (!had) return;
        sizes.delete(price);
        this[side].splice(this.find(side, price), 1);
        return;
      }
      sizes.set(price, size);
      if (!had) this[side].splice(this.find(side, price), 0, price);
    }
    apply(data) {
      for (const [p, s] of data.bids || []) this.set("bids", p, s);
      for (const [p, s] of data.asks || []) this.set("asks", p, s);
    }
    top(side, n) {
      const sizes = this.sizes[side];
      return this[side].slice(0, n).map((p) => [p, sizes.get(p)]);
    }
    checksum() {
      return bookChecksum(this.top("bids", 10), this.top("asks", 10));
    }
    crossed() {
      return this.bids.length > 0 && this.asks.length > 0 && cmpDec(this.bids[0], this.asks[0]) >= 0;
    }
  }

  // ---- state -----------------------------------------------------------------------------
  const app = {
    registry: null,
    info: null, // the selected market: id, base, quote, pp (price places), sp (size places)
    market: "",
    interval: "1m",
    ticker: "",
    ws: null,
    state: "connecting",
    attempt: 0,
    reconnects: 0,
    connected: false, // has been live at least once
    nextId: 1,
    requests: new Map(), // id -> {op, kind, since: Map, warm: Map, gens: Map}
    streams: new Map(), // channel -> {epoch, seq, synced, replayUntil, replayed, resets, gaps, resyncing}
    gens: new Map(), // channel -> times it was dropped (replies for an older one are stale)
    wanted: new Set(),
    recovery: null, // {text, cls} after a reconnect
    lastError: "",
    book: new Book(),
    bookFresh: true, // the next ladder render follows a snapshot: no flashing
    check: { ok: 0, bad: 0, resyncs: 0 },
    crossedSeen: 0,
    trades: new Map(), // id -> trade
    tradeLive: new Set(), // ids that arrived live (flash once)
    ticker24: null,
    lastTick: 0, // +1 / -1: direction of the last price
    candles: new Map(), // start -> candle
    senti: new Map(), // ticker -> {mp: Map(ts -> point), crowd: Map(ts -> point)}
    latencies: [],
    frames: 0,
    rate: 0,
    lastFrameAt: 0,
    theme: "auto",
    colors: {},
  };

  const marketChannels = () =>
    app.market
      ? [`book:${app.market}`, `trades:${app.market}`, `ticker:${app.market}`, `candles:${app.market}:${app.interval}`]
      : [];
  const sentimentChannels = () => (app.registry ? app.registry.tickers.map((t) => `sentiment:${t}`) : []);
  const kindOf = (channel) => channel.slice(0, channel.indexOf(":"));
  const sentiOf = (ticker) => {
    let s = app.senti.get(ticker);
    if (!s) {
      s = { mp: new Map(), crowd: new Map() };
      app.senti.set(ticker, s);
    }
    return s;
  };
  function stream(channel) {
    let st = app.streams.get(channel);
    if (!st) {
      st = { epoch: null, seq: null, synced: false, replayUntil: 0, replayed: 0, resets: 0, gaps: 0, resyncing: false };
      app.streams.set(channel, st);
    }
    return st;
  }

  // ---- rendering is batched: at most once per animation frame ---------------------------
  const dirty = new Set();
  let frame = 0;
  function mark(...parts) {
    for (const p of parts) dirty.add(p);
    if (!frame) frame = requestAnimationFrame(render);
  }
  function render() {
    frame = 0;
    const parts = new Set(dirty);
    dirty.clear();
    if (parts.has("book")) renderBook();
    if (parts.has("trades")) renderTape();
    if (parts.has("ticker")) renderTicker();
    if (parts.has("candles")) drawCandles();
    if (parts.has("sentiment")) renderSentiment();
    if (parts.has("health")) renderHealth();
  }
  const renderAll = () => {
    renderBook();
    renderTape();
    renderTicker();
    drawCandles();
    renderSentiment();
    renderHealth();
  };

  // ---- the protocol ----------------------------------------------------------------------
  const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;

  function send(msg) {
    if (app.ws && app.ws.readyState === WebSocket.OPEN) {
      app.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }
  function request(op, fields, meta) {
    if (!app.ws || app.ws.readyState !== WebSocket.OPEN) return false;
    const id = app.nextId++;
    const names = (fields.channels || []).map((c) => (typeof c === "string" ? c : c.channel));
    const gens = new Map(names.map((c) => [c, app.gens.get(c) || 0]));
    app.requests.set(id, { op, kind: "initial", since: new Map(), warm: new Map(), ...meta, gens });
    return send({ id, op, ...fields });
  }
  // Subscribe `channels`; those with a position (and, for state channels, a book/ticker/
  // candle to continue) resume from it with `since`.
  function subscribe(channels, kind) {
    if (!channels.length) return;
    const items = [];
    const since = new Map();
    for (const ch of channels) {
      const st = app.streams.get(ch);
      const resumable = st && st.epoch !== null && st.seq !== null && (st.synced || !STATE_KINDS.has(kindOf(ch)));
      if (resumable && kind !== "fresh") {
        const pos = { epoch: st.epoch, seq: st.seq };
        since.set(ch, pos);
        items.push({ channel: ch, since: pos });
      } else items.push(ch);
    }
    request("subscribe", { channels: items }, { kind, since });
  }
  function drop(channels) {
    for (const ch of channels) {
      app.wanted.delete(ch);
      app.streams.delete(ch);
      app.gens.set(ch, (app.gens.get(ch) || 0) + 1);
    }
    if (channels.length) request("unsubscribe", { channels }, { kind: "unsubscribe" });
  }

  function connect() {
    app.state = app.connected ? "reconnecting" : "connecting";
    if (app.connected) app.reconnects++;
    mark("health");
    const ws = new WebSocket(wsUrl);
    app.ws = ws;
    ws.onopen = () => {
      app.lastFrameAt = Date.now();
      subscribe([...app.wanted], app.connected ? "recover" : "initial");
    };
    ws.onmessage = (e) => {
      if (app.ws === ws) onFrame(e.data);
    };
    ws.onclose = (e) => {
      if (app.ws !== ws) return;
      app.ws = null;
      app.requests.clear();
      app.warmQueue = [];
      app.warming = false;
      const why = `closed ${e.code}${e.reason ? " (" + e.reason + ")" : ""}`;
      if (e.code >= 3500 && e.code <= 3999) {
        // 3500 and above: the server says do not reconnect as is (docs/protocol.md)
        app.state = "closed";
        app.lastError = why;
        mark("health");
        return;
      }
      app.state = "reconnecting";
      app.lastError = why;
      const delay = BACKOFF_MS[Math.min(app.attempt, BACKOFF_MS.length - 1)] * (1 + Math.random() * 0.2);
      app.attempt++;
      setTimeout(connect, delay);
      mark("health");
    };
  }

  function onFrame(text) {
    app.frames++;
    app.lastFrameAt = Date.now();
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      app.lastError = "a frame that is not JSON";
      return;
    }
    switch (m.type) {
      case "pub":
      case "snapshot":
        onData(m);
        break;
      case "subscribed":
        onSubscribed(m);
        break;
      case "reset":
        onReset(m);
        break;
      case "error": {
        const req = app.requests.get(m.id);
        app.requests.delete(m.id);
        if (req && req.kind === "warm") warmDone();
        app.lastError = `${m.code}: ${m.message}`;
        console.warn("tickwire:", m.code, m.message, req ? req.op : "");
        mark("health");
        break;
      }
      case "unsubscribed":
        app.requests.delete(m.id);
        break;
      default: // heartbeat, pong
        break;
    }
  }

  function onSubscribed(m) {
    const req = app.requests.get(m.id);
    app.requests.delete(m.id);
    if (!req) return;
    if (req.kind === "warm") warmDone();
    let held = 0;
    let recovered = 0;
    let replayed = 0;
    const warm = [];
    const retry = [];
    for (const c of m.channels) {
      const ch = c.channel;
      if (!app.wanted.has(ch) || (app.gens.get(ch) || 0) !== req.gens.get(ch)) continue; // dropped since
      const st = stream(ch);
      const since = req.since.get(ch);
      const state = STATE_KINDS.has(kindOf(ch));
      st.resyncing = false;
      st.epoch = c.epoch;
      st.replayUntil = c.seq;
      if (since && c.recovered) {
        // exactly the publications after since.seq follow, then live ones
        st.seq = since.seq;
        if (req.kind !== "warm") {
          st.replayed += c.seq - since.seq;
          replayed += c.seq - since.seq;
        }
        if (state && !st.synced) retry.push(ch); // nothing to continue: start afresh
      } else {
        st.seq = c.seq;
        if (state) st.synced = false; // a snapshot follows
        if (since && req.kind === "warm") {
          const k = req.warm.get(ch) || 0;
          if (k >= 40 && c.seq > 0) warm.push([ch, Math.floor(k / 4)]);
        } else if (since) st.resets++;
        else if (req.kind !== "resync") {
          const w = WARM[kindOf(ch)];
          if (w && c.seq > 0) warm.push([ch, w]);
        }
      }
      if (since && req.kind !== "warm") {
        held++;
        if (c.recovered) recovered++;
      }
    }
    if (req.kind === "recover" || req.kind === "initial" || req.kind === "fresh") {
      app.state = "live";
      app.connected = true;
      app.attempt = 0;
    }
    if (req.kind === "recover" && held) {
      app.recovery =
        recovered === held
          ? { text: `recovered · ${held} channels, ${replayed} replayed`, cls: "ok" }
          : { text: `resynced · ${held - recovered} of ${held} channels from a fresh start`, cls: "warn" };
    }
    if (retry.length) resync(retry);
    for (const [ch, k] of warm) warmUp(ch, k);
    mark("health", "book", "trades", "ticker", "candles", "sentiment");
  }

  // Fetch up to k publications of the channel's history (see WARM), one channel at a time:
  // the server sends a replay in one go and cuts a client whose queue passes its byte cap
  // (max_queue_bytes), so the histories of all channels at once could get the page cut.
  function warmUp(ch, k) {
    (app.warmQueue ||= []).push([ch, k]);
    pumpWarm();
  }
  function warmDone() {
    app.warming = false;
    pumpWarm();
  }
  function pumpWarm() {
    while (!app.warming && app.warmQueue && app.warmQueue.length) {
      const [ch, k] = app.warmQueue.shift();
      app.warming = warmNow(ch, k);
    }
  }
  function warmNow(ch, k) {
    const st = app.streams.get(ch);
    if (!st || st.seq === null) return false;
    const n = Math.min(k, st.seq);
    if (n <= 0) return false;
    const pos = { epoch: st.epoch, seq: st.seq - n };
    return request("subscribe", { channels: [{ channel: ch, since: pos }] }, { kind: "warm", since: new Map([[ch, pos]]), warm: new Map([[ch, n]]) });
  }

  // Start channels again: a state channel from a fresh snapshot, others from where they were.
  function resync(channels) {
    const fresh = [];
    const resume = [];
    for (const ch of channels) {
      const st = stream(ch);
      st.resyncing = true;
      st.resets++;
      if (STATE_KINDS.has(kindOf(ch))) {
        st.synced = false;
        fresh.push(ch);
      } else resume.push(ch);
    }
    if (fresh.length) request("subscribe", { channels: fresh }, { kind: "resync" });
    if (resume.length) subscribe(resume, "resync");
  }

  function onReset(m) {
    if (!app.wanted.has(m.channel)) return;
    const st = stream(m.channel);
    st.resets++;
    st.epoch = m.epoch;
    st.seq = m.seq;
    const kind = kindOf(m.channel);
    if (STATE_KINDS.has(kind)) {
      st.synced = false; // a snapshot of the new epoch follows
      if (kind === "book") app.book.clear();
      if (kind === "ticker") app.ticker24 = null;
    }
    mark("health", kind === "candles" ? "candles" : kind);
  }

  function onData(m) {
    const ch = m.channel;
    if (!app.wanted.has(ch)) return; // another market's, or one just left
    const st = app.streams.get(ch);
    if (!st || st.resyncing) return;
    const kind = kindOf(ch);
    if (m.type === "snapshot") {
      st.epoch = m.epoch;
      st.seq = m.seq;
      st.synced = true;
    } else {
      if (STATE_KINDS.has(kind) && !st.synced) return; // cannot happen: a snapshot comes first
      if (m.epoch !== st.epoch || m.seq !== st.seq + 1) {
        if (m.epoch === st.epoch && m.seq <= st.seq) return; // seen already
        st.gaps++;
        resync([ch]);
        mark("health");
        return;
      }
      st.seq = m.seq;
      if (m.seq > st.replayUntil && typeof m.ts === "number") {
        app.latencies.push(Date.now() - m.ts);
        if (app.latencies.length > 100) app.latencies.shift();
      }
    }
    const live = m.type === "pub" && m.seq > st.replayUntil;
    const d = m.data;
    switch (kind) {
      case "book":
        onBook(ch, m, d);
        break;
      case "trades":
        app.trades.set(d.id, d);
        if (live) app.tradeLive.add(d.id);
        if (app.trades.size > TAPE * 2) {
          const ids = [...app.trades.keys()].sort((a, b) => a - b);
          for (const id of ids.slice(0, ids.length - TAPE)) {
            app.trades.delete(id);
            app.tradeLive.delete(id);
          }
        }
        mark("trades");
        break;
      case "ticker":
        if (app.ticker24 && d.last && app.ticker24.last && d.last !== app.ticker24.last)
          app.lastTick = cmpDec(d.last, app.ticker24.last) > 0 ? 1 : -1;
        app.ticker24 = d;
        mark("ticker");
        break;
      case "candles":
        app.candles.set(d.start, d);
        if (app.candles.size > CANDLES_KEPT) {
          const starts = [...app.candles.keys()].sort((a, b) => a - b);
          for (const s of starts.slice(0, starts.length - CANDLES_KEPT)) app.candles.delete(s);
        }
        mark("candles");
        break;
      case "sentiment":
        onSentiment(ch.slice(10), d);
        break;
      default:
        break;
    }
  }

  function onBook(ch, m, d) {
    const book = app.book;
    if (m.type === "snapshot") {
      book.clear();
      app.bookFresh = true;
    }
    book.apply(d);
    if (book.crossed()) {
      app.crossedSeen++;
      resync([ch]);
    } else if (typeof d.checksum === "number") {
      if (book.checksum() === d.checksum) app.check.ok++;
      else {
        app.check.bad++;
        app.check.resyncs++;
        resync([ch]);
      }
    }
    mark("book");
  }

  function onSentiment(ticker, d) {
    const s = sentiOf(ticker);
    if (d.type === "mp") {
      s.mp.set(d.ts, d);
      trim(s.mp, MP_KEPT);
    } else if (d.type === "crowd") {
      s.crowd.set(d.ts, d);
      trim(s.crowd, CROWD_KEPT);
    } else return; // a single user's message: the series above are made of them
    mark("sentiment");
  }
  function trim(map, keep) {
    if (map.size <= keep) return;
    const keys = [...map.keys()].sort((a, b) => a - b);
    for (const k of keys.slice(0, keys.length - keep)) map.delete(k);
  }
  const sortedPoints = (map) => [...map.values()].sort((a, b) => a.ts - b.ts);

  // ---- market, interval and ticker choice (remembered in the URL) -----------------------
  function setMarket(id) {
    if (id === app.market) return;
    drop(marketChannels());
    app.market = id;
    const m = app.registry.markets.find((x) => x.id === id);
    app.info = { ...m, pp: placesOf(m.price_increment), sp: placesOf(m.size_increment) };
    // nothing of the old market stays on screen, not even for a frame
    app.book.clear();
    app.bookFresh = true;
    app.trades.clear();
    app.tradeLive.clear();
    app.ticker24 = null;
    app.lastTick = 0;
    app.candles.clear();
    app.check = { ok: 0, bad: 0, resyncs: 0 };
    const chans = marketChannels();
    for (const ch of chans) app.wanted.add(ch);
    subscribe(chans, "initial");
    $("market").value = id;
    $("h-price").textContent = `Price (${m.quote})`;
    $("h-size").textContent = `Size (${m.base})`;
    $("h-tprice").textContent = `Price (${m.quote})`;
    $("h-tsize").textContent = `Size (${m.base})`;
    $("t-vol-k").textContent = `24h volume (${m.base})`;
    $("t-qvol-k").textContent = `24h turnover (${m.quote})`;
    $("chart-title").textContent = `${id} · ${app.interval}`;
    saveUrl();
    renderAll();
  }
  function setInterval_(iv) {
    if (iv === app.interval) return;
    drop([`candles:${app.market}:${app.interval}`]);
    app.interval = iv;
    app.candles.clear();
    const ch = `candles:${app.market}:${iv}`;
    app.wanted.add(ch);
    subscribe([ch], "initial");
    for (const b of $("intervals").children) b.setAttribute("aria-pressed", String(b.dataset.iv === iv));
    $("chart-title").textContent = `${app.market} · ${iv}`;
    saveUrl();
    drawCandles();
    renderHealth();
  }
  function setTicker(t) {
    app.ticker = t;
    saveUrl();
    renderSentiment();
  }
  function saveUrl() {
    const q = new URLSearchParams(location.search);
    q.set("market", app.market);
    if (app.interval !== "1m") q.set("interval", app.interval);
    else q.delete("interval");
    if (app.registry.tickers.length && app.ticker !== app.registry.tickers[0]) q.set("ticker", app.ticker);
    else q.delete("ticker");
    history.replaceState(null, "", `${location.pathname}?${q}`);
  }

  // ---- panels ----------------------------------------------------------------------------
  const ladder = { asks: [], bids: [], prev: { asks: new Map(), bids: new Map() } };
  function buildLadder() {
    for (const side of ["asks", "bids"]) {
      const box = $(side);
      const rows = [];
      for (let i = 0; i < LEVELS; i++) {
        const row = el("div", "lv empty");
        const bar = el("span", "bar");
        const p = el("span", "p px");
        const s = el("span", "s");
        const t = el("span", "t");
        row.append(bar, p, s, t);
        rows.push({ row, bar, p, s, t });
      }
      ladder[side] = rows;
      // asks: the best at the bottom, next to the spread
      box.replaceChildren(...(side === "asks" ? [...rows].reverse() : rows).map((r) => r.row));
    }
  }
  function renderBook() {
    const info = app.info;
    const book = app.book;
    const sides = { asks: book.top("asks", LEVELS), bids: book.top("bids", LEVELS) };
    const cums = {};
    let max = 0n;
    for (const side of ["asks", "bids"]) {
      let cum = 0n;
      cums[side] = sides[side].map(([, s]) => (cum += units(s, info ? info.sp : 0)));
      if (cum > max) max = cum;
    }
    for (const side of ["asks", "bids"]) {
      const levels = sides[side];
      const prev = ladder.prev[side];
      const next = new Map();
      ladder[side].forEach((r, i) => {
        const level = levels[i];
        if (!level) {
          if (!r.row.classList.contains("empty")) {
            r.row.classList.add("empty");
            r.p.textContent = r.s.textContent = r.t.textContent = "";
            r.bar.style.transform = "scaleX(0)";
          }
          return;
        }
        const [price, size] = level;
        next.set(price, size);
        r.row.classList.remove("empty");
        r.p.textContent = group(price);
        r.s.textContent = group(size);
        r.t.textContent = group(decimal(cums[side][i], info.sp));
        const ratio = max > 0n ? Number((cums[side][i] * 10000n) / max) / 10000 : 0;
        r.bar.style.transform = `scaleX(${ratio})`;
        if (!app.bookFresh && prev.get(price) !== size && r.row.animate)
          r.row.animate([{ backgroundColor: app.colors.flash || "transparent" }, { backgroundColor: "transparent" }], {
            duration: 500,
            easing: "ease-out",
          });
      });
      ladder.prev[side] = next;
      $(side).dataset.levels = String(levels.length);
    }
    app.bookFresh = book.bids.length === 0 && book.asks.length === 0;
    const bb = sides.bids[0];
    const ba = sides.asks[0];
    if (bb && ba && info) {
      const b = units(bb[0], info.pp);
      const a = units(ba[0], info.pp);
      const spread = a - b;
      const mid = decimal((a + b) * 5n, info.pp + 1).replace(/(\.\d*?)0$/, "$1").replace(/\.$/, "");
      $("mid").textContent = group(mid);
      const bps = (Number(spread) / Number(a + b)) * 2e4;
      $("spread").textContent = `spread ${group(decimal(spread, info.pp))} · ${bps.toFixed(2)} bps`;
    } else {
      $("mid").textContent = "—";
      $("spread").textContent = "spread —";
    }
    const badge = $("checksum");
    const c = app.check;
    badge.dataset.ok = String(c.ok);
    badge.dataset.bad = String(c.bad);
    if (c.bad) {
      badge.textContent = `checksum mismatch · resynced ${c.resyncs}×`;
      badge.className = "badge bad";
    } else if (c.ok) {
      badge.textContent = `checksum ok · ${c.ok.toLocaleString("en-US")}`;
      badge.className = "badge ok";
    } else {
      badge.textContent = "checksum —";
      badge.className = "badge";
    }
  }

  const tapeRows = new Map(); // trade id -> row element
  function renderTape() {
    const ids = [...app.trades.keys()].sort((a, b) => b - a).slice(0, TAPE);
    const keep = new Set(ids);
    for (const id of [...tapeRows.keys()]) if (!keep.has(id)) tapeRows.delete(id);
    const fresh = [];
    const rows = ids.map((id) => {
      let row = tapeRows.get(id);
      if (!row) {
        const t = app.trades.get(id);
        row = el("div", `tr ${t.side}`);
        row.append(el("span", "time", clock(t.ts)), el("span", "px", group(t.price)), el("span", "sz", group(t.size)));
        row.title = `trade ${t.id} · ${new Date(t.ts).toISOString()} · taker ${t.side}s`;
        tapeRows.set(id, row);
        if (app.tradeLive.has(id)) fresh.push(row);
      }
      return row;
    });
    $("tape").replaceChildren(...rows);
    for (const row of fresh)
      if (row.animate)
        row.animate([{ backgroundColor: app.colors.flash || "transparent" }, { backgroundColor: "transparent" }], 800);
    $("trade-count").textContent = ids.length ? `last ${ids.length}` : "waiting for trades…";
  }

  function renderTicker() {
    const t = app.ticker24;
    const last = $("t-last");
    last.textContent = t && t.last ? group(t.last) : "—";
    last.className = "px " + (app.lastTick > 0 ? "up" : app.lastTick < 0 ? "down" : "");
    const ch = $("t-change");
    if (t && t.change_24h !== null && t.change_24h !== undefined) {
      const neg = t.change_24h.startsWith("-");
      const sign = neg || isZero(t.change_24h) ? "" : "+";
      ch.textContent = `${sign}${group(t.change_24h)} (${sign}${group(t.change_pct_24h)}%)`;
      ch.className = "v " + (neg ? "down" : isZero(t.change_24h) ? "" : "up");
    } else {
      ch.textContent = "—";
      ch.className = "v";
    }
    $("t-high").textContent = t ? group(t.high_24h) : "—";
    $("t-low").textContent = t ? group(t.low_24h) : "—";
    $("t-vol").textContent = t && t.volume_24h ? group(cut(t.volume_24h, 4)) : "—";
    $("t-qvol").textContent = t && t.quote_volume_24h ? group(cut(t.quote_volume_24h, 0)) : "—";
    document.title = t && t.last ? `${group(t.last)} ${app.market} · tickwire` : `${app.market} · tickwire`;
  }

  // ---- canvas charts ---------------------------------------------------------------------
  function canvasContext(cv) {
    const dpr = window.devicePixelRatio || 1;
    const w = cv.clientWidth;
    const h = cv.clientHeight;
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
      cv.width = Math.round(w * dpr);
      cv.height = Math.round(h * dpr);
    }
    const ctx = cv.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = `11px ${app.colors.font || "sans-serif"}`;
    ctx.textBaseline = "middle";
    return { ctx, w, h };
  }
  // About n round values between lo and hi.
  function ticks(lo, hi, n) {
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const raw = span / n;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || 10 * mag;
    const out = [];
    for (let i = Math.ceil(lo / step); i * step <= hi + 1e-9; i++) out.push(i * step);
    out.digits = (String(+step.toPrecision(6)).split(".")[1] || "").length; // decimals a label needs
    return out;
  }
  const fmtAxis = (v, digits) => group(v.toFixed(Math.max(0, digits)));

  function drawCandles() {
    const cv = $("candles");
    const { ctx, w, h } = canvasContext(cv);
    const c = app.colors;
    const info = app.info;
    const list = [...app.candles.values()].sort((a, b) => a.start - b.start);
    const len = INTERVAL_MS[app.interval] || 60e3;
    const axisW = 70;
    const timeH = 18;
    const plotW = Math.max(10, w - axisW);
    const plotH = Math.max(10, h - timeH - 8);
    const volH = Math.round(plotH * 0.18);
    const priceH = plotH - volH - 6;
    const top = 8;
    const step = w < 500 ? 7 : 9;
    const slots = Math.max(1, Math.floor(plotW / step));
    if (!list.length || !info) {
      ctx.fillStyle = c.muted;
      ctx.textAlign = "center";
      ctx.fillText(app.market ? "waiting for the first trade…" : "", w / 2, h / 2);
      cv.dataset.candles = "0";
      delete cv.dataset.low;
      delete cv.dataset.high;
      $("ohlc").textContent = "";
      return;
    }
    const lastStart = list[list.length - 1].start;
    const first = lastStart - (slots - 1) * len;
    const vis = list.filter((k) => k.start >= first);
    let lo = Infinity;
    let hi = -Infinity;
    let loS = null;
    let hiS = null;
    let vmax = 0;
    for (const k of vis) {
      const l = Number(k.low);
      const hh = Number(k.high);
      if (l < lo) (lo = l), (loS = k.low);
      if (hh > hi) (hi = hh), (hiS = k.high);
      vmax = Math.max(vmax, Number(k.volume));
    }
    const tick = 10 ** -info.pp;
    const padP = Math.max((hi - lo) * 0.08, tick * 2);
    const pLo = lo - padP;
    const pHi = hi + padP;
    const y = (p) => top + ((pHi - p) / (pHi - pLo)) * priceH;
    const x = (start) => ((start - first) / len) * step + step / 2;
    // grid and price axis
    ctx.strokeStyle = c.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = c.muted;
    ctx.textAlign = "left";
    const pt = ticks(pLo, pHi, Math.max(3, Math.floor(priceH / 40)));
    const digits = Math.min(info.pp, pt.digits);
    const labels = [];
    for (const v of pt) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, yy);
      ctx.lineTo(plotW, yy);
      ctx.stroke();
      labels.push([fmtAxis(v, digits), yy]);
    }
    // time axis: a label every ~70 px on a round time
    const every = Math.max(1, Math.ceil(70 / step));
    ctx.textAlign = "center";
    for (let i = 0; i < slots; i++) {
      const start = first + i * len;
      if (Math.round(start / len) % every !== 0) continue;
      const xx = Math.round(x(start)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, top);
      ctx.lineTo(xx, top + plotH);
      ctx.stroke();
      if (xx > 16 && xx < plotW - 16) ctx.fillText(hhmm(start), xx, h - timeH / 2);
    }
    // volume
    const vBase = top + plotH;
    for (const k of vis) {
      const up = Number(k.close) >= Number(k.open);
      const vh = vmax > 0 ? (Number(k.volume) / vmax) * volH : 0;
      ctx.fillStyle = up ? c.upVol : c.downVol;
      ctx.fillRect(Math.round(x(k.start) - step * 0.35), vBase - vh, Math.max(1, Math.round(step * 0.7)), vh);
    }
    // candles
    const bw = Math.max(1, Math.round(step * 0.7));
    for (const k of vis) {
      const o = Number(k.open);
      const cl = Number(k.close);
      const up = cl >= o;
      ctx.strokeStyle = ctx.fillStyle = up ? c.up : c.down;
      const xx = Math.round(x(k.start)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, Math.round(y(Number(k.high))));
      ctx.lineTo(xx, Math.round(y(Number(k.low))));
      ctx.stroke();
      const yTop = Math.round(y(Math.max(o, cl)));
      const yBot = Math.round(y(Math.min(o, cl)));
      ctx.fillRect(Math.round(xx - bw / 2), yTop, bw, Math.max(1, yBot - yTop));
    }
    // the last price
    const lastK = vis[vis.length - 1];
    const ly = Math.round(y(Number(lastK.close))) + 0.5;
    const lastUp = Number(lastK.close) >= Number(lastK.open);
    ctx.fillStyle = c.muted;
    ctx.textAlign = "left";
    for (const [text, yy] of labels) if (Math.abs(yy - ly) > 13) ctx.fillText(text, plotW + 6, yy);
    ctx.setLineDash([3, 3]);
    ctx.strokeStyle = lastUp ? c.up : c.down;
    ctx.beginPath();
    ctx.moveTo(0, ly);
    ctx.lineTo(plotW, ly);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = lastUp ? c.up : c.down;
    ctx.fillRect(plotW + 1, ly - 8, axisW - 1, 16);
    ctx.fillStyle = "#fff";
    ctx.textAlign = "left";
    ctx.fillText(group(lastK.close), plotW + 5, ly);
    cv.dataset.candles = String(vis.length);
    cv.dataset.low = loS;
    cv.dataset.high = hiS;
    const o = $("ohlc");
    o.replaceChildren();
    for (const [k, v] of [["O", lastK.open], ["H", lastK.high], ["L", lastK.low], ["C", lastK.close], ["V", cut(lastK.volume, 4)]]) {
      o.append(`${k} `, el("b", "", group(v)), " ");
    }
  }

  function renderSentiment() {
    const body = $("senti-table").tBodies[0];
    const tickers = app.registry ? app.registry.tickers : [];
    if (body.rows.length !== tickers.length) {
      body.replaceChildren(
        ...tickers.map((t) => {
          const tr = el("tr");
          tr.dataset.ticker = t;
          for (let i = 0; i < 6; i++) tr.append(el("td"));
          tr.cells[0].textContent = t;
          tr.addEventListener("click", () => setTicker(t));
          return tr;
        }),
      );
    }
    const cls = (v) => (v === null || v === undefined ? "" : v > 0 ? "up" : v < 0 ? "down" : "");
    for (const tr of body.rows) {
      const s = app.senti.get(tr.dataset.ticker);
      const mp = s && s.mp.size ? s.mp.get(Math.max(...s.mp.keys())) : null;
      const cr = s && s.crowd.size ? s.crowd.get(Math.max(...s.crowd.keys())) : null;
      tr.classList.toggle("sel", tr.dataset.ticker === app.ticker);
      const cells = tr.cells;
      // a value and, smaller beside it (below it on a phone), its moving average
      const pair = (cell, v, ma) => {
        cell.replaceChildren(el("span", cls(v), signed(v, 3)), el("small", "ma", signed(ma, 3)));
      };
      if (mp) pair(cells[1], mp.mp_sentiment, mp.mp_sentiment_moving_average);
      else cells[1].textContent = "—";
      cells[2].textContent = mp ? signed(mp.mp_sentiment_z_score, 2) : "—";
      if (cr) pair(cells[3], cr.crowd_sentiment, cr.crowd_sentiment_moving_average);
      else cells[3].textContent = "—";
      cells[4].textContent = cr ? String(cr.volume) : "—";
      cells[5].textContent = cr && cr.buzz !== null ? cr.buzz.toFixed(2) : "—";
    }
    $("senti-ticker").textContent = app.ticker;
    drawSentiment();
  }

  function drawSentiment() {
    const cv = $("sentiment");
    const { ctx, w, h } = canvasContext(cv);
    const c = app.colors;
    const s = app.senti.get(app.ticker);
    const mp = s ? sortedPoints(s.mp) : [];
    const crowd = s ? sortedPoints(s.crowd) : [];
    const axisW = 34;
    const plotW = Math.max(10, w - axisW);
    const timeH = 16;
    const top = 6;
    const plotH = Math.max(10, h - timeH - top);
    const end = Math.max(mp.length ? mp[mp.length - 1].ts : 0, crowd.length ? crowd[crowd.length - 1].ts + 60e3 : 0);
    if (!end) {
      ctx.fillStyle = c.muted;
      ctx.textAlign = "center";
      ctx.fillText("waiting for sentiment…", w / 2, h / 2);
      cv.dataset.points = "0";
      return;
    }
    // the last 10 minutes; less while there is less, but at least 2
    const firstTs = Math.min(mp.length ? mp[0].ts : end, crowd.length ? crowd[0].ts : end);
    const span = Math.min(SENTI_WINDOW_MS, Math.max(120e3, end - firstTs));
    const start = end - span;
    const x = (ts) => ((ts - start) / span) * plotW;
    const y = (v) => top + ((1 - v) / 2) * plotH;
    // grid: -1, -0.5, 0, 0.5, 1
    ctx.lineWidth = 1;
    ctx.textAlign = "left";
    for (const v of [1, 0.5, 0, -0.5, -1]) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = v === 0 ? c.muted : c.grid;
      ctx.beginPath();
      ctx.moveTo(0, yy);
      ctx.lineTo(plotW, yy);
      ctx.stroke();
      ctx.fillStyle = c.muted;
      ctx.fillText(v.toFixed(1), plotW + 4, yy);
    }
    ctx.textAlign = "center";
    const every = span > 300e3 ? 120e3 : 60e3;
    for (let t = Math.ceil(start / every) * every; t <= end; t += every)
      if (x(t) > 16 && x(t) < plotW - 16) ctx.fillText(hhmm(t), x(t), h - timeH / 2);
    // crowd volume per minute, scaled to the panel's lower third
    const shown = crowd.filter((p) => p.ts + 60e3 > start);
    const vmax = Math.max(1, ...shown.map((p) => p.volume));
    ctx.fillStyle = c.vol;
    const bw = Math.max(2, (60e3 / span) * plotW - 2);
    for (const p of shown) {
      const vh = (p.volume / vmax) * plotH * 0.3;
      ctx.fillRect(x(p.ts) + 1, top + plotH - vh, bw, vh);
    }
    let points = 0;
    const line = (pts, key, color, dash, at) => {
      ctx.strokeStyle = color;
      ctx.setLineDash(dash);
      ctx.lineWidth = dash.length ? 1.2 : 1.6;
      ctx.beginPath();
      let open = false;
      for (const p of pts) {
        const v = p[key];
        if (p.ts < start - 60e3 || v === null || v === undefined) {
          open = false;
          continue;
        }
        const xx = x(at(p));
        if (open) ctx.lineTo(xx, y(v));
        else ctx.moveTo(xx, y(v));
        open = true;
        if (!dash.length) points++;
      }
      ctx.stroke();
      ctx.setLineDash([]);
    };
    const mid = (p) => p.ts + 30e3; // a crowd point covers its minute
    line(crowd, "crowd_sentiment_moving_average", c.crowd, [4, 3], mid);
    line(crowd, "crowd_sentiment", c.crowd, [], mid);
    for (const p of crowd) {
      if (p.crowd_sentiment === null || p.ts < start) continue;
      ctx.fillStyle = c.crowd;
      ctx.beginPath();
      ctx.arc(x(mid(p)), y(p.crowd_sentiment), 2.2, 0, 2 * Math.PI);
      ctx.fill();
    }
    line(mp, "mp_sentiment_moving_average", c.mp, [4, 3], (p) => p.ts);
    line(mp, "mp_sentiment", c.mp, [], (p) => p.ts);
    cv.dataset.points = String(points);
  }

  function renderHealth() {
    const pill = $("conn-state");
    pill.dataset.state = app.state;
    pill.textContent = app.state;
    $("h-state").textContent = app.state + (app.lastError && app.state !== "live" ? ` · ${app.lastError}` : "");
    $("reconnects").textContent = String(app.reconnects);
    const rec = $("recovery");
    rec.textContent = app.recovery ? app.recovery.text : app.connected ? "first connection" : "—";
    rec.className = "badge " + (app.recovery ? app.recovery.cls : "");
    const lat = [...app.latencies].sort((a, b) => a - b);
    $("latency").textContent = lat.length ? `${Math.max(0, lat[lat.length >> 1])} ms` : "—";
    $("rate").textContent = String(app.rate);
    $("endpoint").textContent = wsUrl;
    const rows = [...app.wanted].sort().map((ch) => {
      const st = app.streams.get(ch);
      const tr = el("tr");
      tr.dataset.channel = ch;
      tr.title = st && st.epoch ? `epoch ${st.epoch}` : "";
      const name = el("td");
      ch.split(":").forEach((part, i, all) => name.append(part + (i < all.length - 1 ? ":" : ""), el("wbr")));
      tr.append(
        name,
        el("td", "seq", st && st.seq !== null ? st.seq.toLocaleString("en-US") : "—"),
        el("td", "", st ? String(st.replayed) : "0"),
        el("td", st && st.resets + st.gaps ? "bad" : "", st ? String(st.resets + st.gaps) : "0"),
      );
      return tr;
    });
    $("channels").tBodies[0].replaceChildren(...rows);
  }

  // ---- theme -----------------------------------------------------------------------------
  const media = window.matchMedia("(prefers-color-scheme: light)");
  function applyTheme() {
    const light = app.theme === "light" || (app.theme === "auto" && media.matches);
    document.documentElement.dataset.theme = light ? "light" : "dark";
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    app.colors = {
      up: v("--up"),
      down: v("--down"),
      muted: v("--muted"),
      grid: v("--grid"),
      mp: v("--mp"),
      crowd: v("--crowd"),
      vol: v("--vol"),
      flash: v("--flash"),
      font: v("--font"),
      upVol: light ? "rgba(3,166,109,.30)" : "rgba(14,203,129,.30)",
      downVol: light ? "rgba(207,48,74,.28)" : "rgba(246,70,93,.30)",
    };
    const btn = $("theme");
    btn.title = `Theme: ${app.theme} (click to change)`;
    btn.textContent = app.theme === "auto" ? "◐" : app.theme === "light" ? "☀" : "☾";
    drawCandles();
    drawSentiment();
  }
  function loadTheme() {
    try {
      app.theme = localStorage.getItem("tickwire-theme") || "auto";
    } catch {
      app.theme = "auto";
    }
    if (!["auto", "light", "dark"].includes(app.theme)) app.theme = "auto";
  }

  // ---- start -----------------------------------------------------------------------------
  function everySecond() {
    app.rate = app.frames;
    app.frames = 0;
    if (app.ws && app.ws.readyState === WebSocket.OPEN && Date.now() - app.lastFrameAt > STALE_MS)
      app.ws.close(4000, "no data"); // a half-open connection: start again
    mark("health");
  }

  async function loadRegistry() {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch("/api/v1/markets", { cache: "no-store" });
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        return await r.json();
      } catch (err) {
        app.lastError = `market registry: ${err.message}`;
        renderHealth();
        await new Promise((ok) => setTimeout(ok, BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]));
      }
    }
  }

  async function start() {
    loadTheme();
    buildLadder();
    media.addEventListener("change", applyTheme);
    $("theme").addEventListener("click", () => {
      app.theme = { auto: "light", light: "dark", dark: "auto" }[app.theme];
      try {
        localStorage.setItem("tickwire-theme", app.theme);
      } catch {
        /* private mode: the choice lasts this page */
      }
      applyTheme();
    });
    applyTheme();
    $("endpoint").textContent = wsUrl;
    app.registry = await loadRegistry();
    const reg = app.registry;
    const q = new URLSearchParams(location.search);
    const select = $("market");
    select.replaceChildren(...reg.markets.map((m) => el("option", "", m.id)));
    select.addEventListener("change", () => setMarket(select.value));
    const ivs = CHART_INTERVALS.filter((iv) => reg.candle_intervals.includes(iv));
    $("intervals").replaceChildren(
      ...ivs.map((iv) => {
        const b = el("button", "", iv);
        b.type = "button";
        b.dataset.iv = iv;
        b.addEventListener("click", () => setInterval_(iv));
        return b;
      }),
    );
    const iv = q.get("interval");
    app.interval = ivs.includes(iv) ? iv : ivs[0] || "1m";
    for (const b of $("intervals").children) b.setAttribute("aria-pressed", String(b.dataset.iv === app.interval));
    const t = q.get("ticker");
    app.ticker = reg.tickers.includes(t) ? t : reg.tickers[0] || "";
    for (const ch of sentimentChannels()) app.wanted.add(ch);
    const wantedMarket = q.get("market");
    const market = reg.markets.some((m) => m.id === wantedMarket) ? wantedMarket : reg.markets[0] && reg.markets[0].id;
    if (market) setMarket(market);
    else renderAll();
    new ResizeObserver(() => {
      drawCandles();
      drawSentiment();
    }).observe(document.querySelector(".layout"));
    setInterval(everySecond, 1000);
    connect();
  }

  // For the browser test and the curious: the checksum and the page's state.
  window.tickwire = { crc32, bookChecksum, app };
  start();
})();
