// Node.js `ws` peer: a plain WebSocket server broadcasting with a send loop (one
// ws.send per subscriber per message), permessage-deflate off. Speaks the subset of
// tickwire's native protocol the load generator uses.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');
const { start, Sequencer, args } = require('./synthetic');

const opts = args();
const channels = new Map(); // name -> Set<WebSocket>
const seq = new Sequencer();

const server = http.createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws) => {
  const mine = [];
  ws.on('message', (raw) => {
    let msg;
    try { msg = JSON.parse(raw); } catch { return; }
    if (msg.op !== 'subscribe') return;
    for (const ch of msg.channels) {
      const name = typeof ch === 'string' ? ch : ch.channel;
      if (!channels.has(name)) channels.set(name, new Set());
      channels.get(name).add(ws);
      mine.push(name);
    }
    ws.send(JSON.stringify({ id: msg.id, type: 'subscribed', channels: msg.channels }));
  });
  ws.on('close', () => { for (const name of mine) channels.get(name)?.delete(ws); });
});

start(opts.synthetic, (channel, data) => {
  const subs = channels.get(channel);
  if (!subs || subs.size === 0) return;
  const payload = seq.envelope(channel, data);
  for (const ws of subs) ws.send(payload);
});

server.listen(opts.port, opts.host, 4096);
