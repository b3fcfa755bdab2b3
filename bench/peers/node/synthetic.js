// The synthetic publisher every Node.js peer runs: the same spec and semantics as
// `tickwire serve --synthetic` (src/tickwire/ingest/synthetic.py) and the Python peers
// (../synthetic_spec.py). See docs/benchmarks.md.
'use strict';

function parseSpec(spec) {
  const streams = [];
  for (const part of spec.split(';').map((p) => p.trim()).filter(Boolean)) {
    const kv = {};
    for (const item of part.split(',')) {
      const i = item.indexOf('=');
      kv[item.slice(0, i).trim()] = item.slice(i + 1).trim();
    }
    const count = parseInt(kv.count || '1', 10);
    const channels = count > 1
      ? Array.from({ length: count }, (_, i) => kv.channel.replace('{i}', String(i)))
      : [kv.channel];
    streams.push({
      channels,
      rate: parseFloat(kv.rate),
      batch: parseInt(kv.batch || '1', 10),
      size: parseInt(kv.size || '150', 10),
    });
  }
  return streams;
}

function makeData(bt, n, size) {
  const head = `{"bt":${bt},"n":${n},"pad":"`;
  return head + 'x'.repeat(Math.max(0, size - head.length - 2)) + '"}';
}

function nowUs() {
  // wall clock in µs, as the generator compares it with its own time.time_ns()
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

// publish(channel, dataJson) is called `batch` times per tick. Ticks keep an absolute
// schedule and carry their scheduled time; more than 1 s behind, the backlog is dropped.
function runStream(stream, publish) {
  const interval = (stream.batch / stream.rate) * 1000; // ms
  const startMs = performance.now();
  const startUs = nowUs();
  let nTick = 0;
  let n = 0;
  let k = 0;
  const tick = () => {
    const due = startMs + nTick * interval;
    const bt = startUs + Math.floor(nTick * interval * 1000);
    for (let b = 0; b < stream.batch; b++) {
      publish(stream.channels[k], makeData(bt, n, stream.size));
      n++;
      k = (k + 1) % stream.channels.length;
    }
    nTick++;
    const now = performance.now();
    const behind = now - (due + interval);
    if (behind > 1000) nTick += Math.floor(behind / interval);
    setTimeout(tick, Math.max(0, startMs + nTick * interval - now));
  };
  setTimeout(tick, 0);
}

function start(spec, publish) {
  if (spec) for (const s of parseSpec(spec)) runStream(s, publish);
}

class Sequencer {
  constructor() {
    this.seq = new Map();
    this.epoch = 'peer0001';
  }
  next(channel) {
    const s = (this.seq.get(channel) || 0) + 1;
    this.seq.set(channel, s);
    return s;
  }
  envelope(channel, data) {
    return `{"type":"pub","channel":${JSON.stringify(channel)},"seq":${this.next(channel)},` +
      `"epoch":"${this.epoch}","ts":${Date.now()},"data":${data}}`;
  }
}

function args() {
  const out = { host: '127.0.0.1', port: 0, synthetic: '' };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  out.port = parseInt(out.port, 10);
  return out;
}

module.exports = { parseSpec, makeData, start, Sequencer, args };
