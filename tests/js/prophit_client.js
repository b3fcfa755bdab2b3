// A Market Prophit client exactly as the seed writes it, driven by the tests
// (tests/test_prophit_node.py): `node prophit_client.js <2|4> <url> <token> <transports>`.
// It connects with `query: 'token=' + token`, emits the seed's subscribe at once (before
// the connection is up, as the seed does), prints every event as a JSON line, and runs
// the JSON commands it reads on stdin: {"emit": name, "arg": …, "id": n} (the ack is
// printed with that id), {"state": true} (prints whether the client will reconnect:
// `active` is socket.io-client's own flag, which a server disconnect clears, and the
// manager's reconnection state), {"exit": true}.
'use strict'
const readline = require('readline')
const [version, url, token, transports] = process.argv.slice(2)
const io = require(version === '2' ? 'socket.io-client-2' : 'socket.io-client-4')
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const socket = io.connect(url, {
  query: 'token=' + token,
  transports: transports.split(','),
  reconnectionDelay: 2000,
  randomizationFactor: 0
})
const transport = () => socket.io.engine && socket.io.engine.transport.name
socket
  .on('connect', () => out({ ev: 'connect', recovered: socket.recovered === true, transport: transport() }))
  .emit('subscribe', {
    path: '/real-time/crowd-sentiment',
    method: 'get',
    params: { ticker: 'AAPL' }
  }, (err) => out({ ev: 'ack', id: 0, err: err }))
  .on('disconnect', (reason) => out({ ev: 'disconnect', reason: reason }))
  .on('connect_error', (err) => out({ ev: 'connect_error', message: err.message, data: err.data }))
  .on('error', (err) => out({ ev: 'error', err: err }))
  .on('err', (err) => out({ ev: 'err', err: err }))
  .on('res', (res) => out({ ev: 'res', res: res, transport: transport() }))
  .on('data', (data) => out({ ev: 'data', data: data, transport: transport() }))

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line)
  if (cmd.state) {
    const m = socket.io
    out({
      ev: 'state',
      connected: socket.connected,
      active: !!socket.subs,
      reconnecting: !!(m._reconnecting || m.reconnecting),
      skipReconnect: !!m.skipReconnect
    })
    return
  }
  if (cmd.exit) {
    socket.close()
    process.exit(0)
  }
  socket.emit(cmd.emit, cmd.arg, (err) => out({ ev: 'ack', id: cmd.id, err: err, transport: transport() }))
})
