// A Market Prophit client of the book and trades endpoints on socket.io-client 4, for the
// cross-dialect tests (tests/test_dialects_together.py):
// `node market_client.js <url> <token> <subscriptions JSON>`.
// It subscribes on every `connect` whose session was not recovered (the pattern Socket.IO's
// docs give for connection state recovery: `if (!socket.recovered) { resubscribe }`) and
// prints every event as a JSON line, each `res` with the offset the server appends
// ("<channel>|<epoch>|<seq>"). socket.io-client reconnects by itself.
'use strict'
const io = require('socket.io-client-4')
const [url, token, subs] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const socket = io.connect(url, {
  query: 'token=' + token,
  reconnectionDelay: 100,
  reconnectionDelayMax: 500
})
socket
  .on('connect', () => {
    out({ ev: 'connect', recovered: socket.recovered === true })
    if (socket.recovered) return
    for (const sub of JSON.parse(subs)) {
      socket.emit('subscribe', sub, (err) => out({ ev: 'ack', sub: sub, err: err }))
    }
  })
  .on('disconnect', (reason) => out({ ev: 'disconnect', reason: reason }))
  .on('connect_error', (err) => out({ ev: 'connect_error', message: err.message, data: err.data }))
  .on('err', (err) => out({ ev: 'err', err: err }))
  .on('res', (res, offset) => out({ ev: 'res', res: res, offset: offset }))
  .on('pub', (pub, offset) => out({ ev: 'pub', pub: pub, offset: offset }))
process.stdin.on('end', () => process.exit(0)).resume()
