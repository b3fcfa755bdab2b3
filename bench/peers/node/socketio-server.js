// Node.js `socket.io` peer: rooms per channel, io.to(channel).emit('pub', …), WebSocket
// transport, permessage-deflate off. Subscribe: emit('subscribe', {channels}, ack).
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { start, Sequencer, args } = require('./synthetic');

const opts = args();
const seq = new Sequencer();
const server = http.createServer();
const io = new Server(server, { transports: ['websocket'], perMessageDeflate: false });

io.on('connection', (socket) => {
  socket.on('subscribe', (msg, ack) => {
    const names = (msg && msg.channels || []).map((c) => (typeof c === 'string' ? c : c.channel));
    for (const name of names) socket.join(name);
    if (typeof ack === 'function') ack({ channels: names });
  });
});

start(opts.synthetic, (channel, data) => {
  io.to(channel).emit('pub', {
    type: 'pub', channel, seq: seq.next(channel), epoch: seq.epoch, ts: Date.now(),
    data: JSON.parse(data),
  });
});

server.listen(opts.port, opts.host, 4096);
