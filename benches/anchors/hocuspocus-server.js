// Minimal Hocuspocus server for the load generator: no persistence, no auth hook (clients still
// send the protocol's token message, which the server then accepts). With REDIS_PORT set it is
// one of several instances joined through `@hocuspocus/extension-redis` (the cluster anchor of
// benches/anchors/cluster.sh): updates and awareness cross instances over Redis pub/sub.
//
//   PORT=1235 HOST=127.0.0.1 [REDIS_PORT=6379 REDIS_HOST=127.0.0.1] node hocuspocus-server.js
//   prints: hocuspocus ready: http://HOST:PORT

import { Server } from '@hocuspocus/server'
import { Redis } from '@hocuspocus/extension-redis'

const extensions = []
if (process.env.REDIS_PORT) {
  extensions.push(new Redis({
    host: process.env.REDIS_HOST || '127.0.0.1',
    port: Number(process.env.REDIS_PORT),
  }))
}

const server = new Server({
  port: Number(process.env.PORT || 1235),
  address: process.env.HOST || '127.0.0.1',
  quiet: true,
  // The default is 30 s without a message; idle-connection scenarios hold sockets open longer.
  timeout: 600000,
  extensions,
})

await server.listen()
console.log(`hocuspocus ready: http://${server.address.address}:${server.address.port}`)
