// A three-node NATS JetStream cluster on loopback for the cluster-mode browser test, started
// like server/tests/common/nats.rs does it: one `nats-server` per node with JetStream in its
// own directory, clustered by routes. The binary is AETHERFLOW_NATS_SERVER, or the pinned one
// tests/nats-server.sh installs under target/nats-venv.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'

import { REPO_ROOT, withTimeout } from './harness.js'

/** The nats-server binary to use, or null when none is available. */
export function natsServerBinary () {
  if (process.env.AETHERFLOW_NATS_SERVER) return process.env.AETHERFLOW_NATS_SERVER
  const installed = path.join(REPO_ROOT, 'target', 'nats-venv', 'bin', 'nats-server')
  return existsSync(installed) ? installed : null
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
function freePort () {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** Three clustered nats-server processes; `url` is their client URLs, comma-separated. */
export class NatsCluster {
  constructor (servers, urls, monitors, dir) {
    this.servers = servers
    this.urls = urls
    this.monitors = monitors
    this.dir = dir
    this.url = urls.join(',')
  }

  /** Starts the cluster from `binary` and waits until every node reports JetStream healthy. */
  static async start (binary) {
    if (!existsSync(binary)) throw new Error(`nats-server not found at ${binary} (AETHERFLOW_NATS_SERVER)`)
    const dir = await mkdtemp(path.join(tmpdir(), 'aetherflow-nats-'))
    const ports = async () => Promise.all([0, 1, 2].map(freePort))
    const [clients, routes, monitors] = [await ports(), await ports(), await ports()]
    const routeUrls = routes.map((p) => `nats://127.0.0.1:${p}`).join(',')
    const servers = [0, 1, 2].map((i) => spawn(binary, [
      '--addr', '127.0.0.1', '--port', String(clients[i]), '--http_port', String(monitors[i]),
      '--server_name', `n${i}`, '--jetstream', '--store_dir', path.join(dir, `n${i}`),
      '--cluster_name', 'aetherflow-browser-test', '--cluster', `nats://127.0.0.1:${routes[i]}`,
      '--routes', routeUrls
    ], { stdio: 'ignore' }))
    const cluster = new NatsCluster(servers, clients.map((p) => `nats://127.0.0.1:${p}`), monitors, dir)
    try {
      await withTimeout(cluster.healthy(), 'the JetStream cluster to become healthy', 30_000)
    } catch (err) {
      await cluster.stop()
      throw err
    }
    return cluster
  }

  /** Resolves once every node's /healthz answers 200 (JetStream up, meta group current). */
  async healthy () {
    for (;;) {
      const answers = await Promise.all(this.monitors.map((port) =>
        fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status, () => 0)))
      if (answers.every((status) => status === 200)) return
      await new Promise((resolve) => setTimeout(resolve, 200)) // a poll interval
    }
  }

  async stop () {
    await Promise.all(this.servers.map((server) => new Promise((resolve) => {
      if (server.exitCode !== null || server.signalCode !== null) return resolve()
      server.once('exit', resolve)
      server.kill('SIGKILL')
    })))
    await rm(this.dir, { recursive: true, force: true })
  }
}
