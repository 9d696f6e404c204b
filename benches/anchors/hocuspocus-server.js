// Minimal Hocuspocus server for the load generator: no extensions, no persistence, no auth hook
// (clients still send the protocol's token message, which the server then accepts).
//
//   PORT=1235 HOST=127.0.0.1 node hocuspocus-server.js
//   prints: hocuspocus ready: http://HOST:PORT

import { Server } from '@hocuspocus/server'

const server = new Server({
  port: Number(process.env.PORT || 1235),
  address: process.env.HOST || '127.0.0.1',
  quiet: true,
  // The default is 30 s without a message; idle-connection scenarios hold sockets open longer.
  timeout: 600000,
})

await server.listen()
console.log(`hocuspocus ready: http://${server.address.address}:${server.address.port}`)
