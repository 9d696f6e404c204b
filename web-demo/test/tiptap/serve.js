// Bundles the Tiptap test page (page.js) with esbuild into a temporary directory and serves it
// from a local HTTP server on 127.0.0.1:0. The page is for the tests only: it never enters the
// demo's dist/ (scripts/build.mjs bundles src/main.js alone), and its packages are
// devDependencies.

import { createServer } from 'node:http'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import * as esbuild from 'esbuild'

const here = path.dirname(fileURLToPath(import.meta.url))

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Tiptap test page</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="page.css">
</head>
<body>
<main><h1>Tiptap on AetherFlow</h1></main>
<script type="module" src="page.js"></script>
</body>
</html>
`

const CSS = `body { font: 16px/1.5 system-ui, sans-serif; margin: 1rem 2rem; color: #1a1a1a; }
section { margin-bottom: 1.5rem; }
.status { font-size: 0.9rem; color: #333; }
.tiptap { border: 1px solid #666; border-radius: 4px; padding: 0.5rem 0.75rem; min-height: 4rem; }
.collaboration-carets__caret { border-left: 1px solid; border-right: 1px solid; margin: 0 -1px; position: relative; word-break: normal; pointer-events: none; }
.collaboration-carets__label { position: absolute; top: -1.4em; left: -1px; font-size: 12px; font-weight: 600; line-height: normal; padding: 0.1rem 0.3rem; border-radius: 3px 3px 3px 0; color: #fff; white-space: nowrap; user-select: none; }
`

/** The running page server: `url(params)` is the page's address with those query parameters. */
export class TiptapPage {
  constructor (server, dir) {
    this.server = server
    this.dir = dir
  }

  /** The page's address with `params` (an object) as its query. */
  url (params) {
    const { port } = this.server.address()
    return `http://127.0.0.1:${port}/?${new URLSearchParams(params)}`
  }

  async close () {
    await new Promise((resolve) => this.server.close(resolve))
    await rm(this.dir, { recursive: true, force: true })
  }
}

/** Bundles page.js into a temporary directory and starts serving it. */
export async function serveTiptapPage () {
  const dir = await mkdtemp(path.join(tmpdir(), 'aetherflow-tiptap-page-'))
  await esbuild.build({
    absWorkingDir: path.resolve(here, '..', '..'),
    entryPoints: [path.join(here, 'page.js')],
    outfile: path.join(dir, 'page.js'),
    bundle: true,
    format: 'esm',
    target: ['chrome100'],
    logLevel: 'warning'
  })
  const files = {
    '/': { type: 'text/html; charset=utf-8', body: HTML },
    '/page.css': { type: 'text/css; charset=utf-8', body: CSS },
    '/page.js': { type: 'text/javascript; charset=utf-8', body: await readFile(path.join(dir, 'page.js')) }
  }
  const server = createServer((request, response) => {
    const file = files[new URL(request.url, 'http://page').pathname]
    if (!file) {
      response.writeHead(404).end()
      return
    }
    response.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' }).end(file.body)
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  server.unref() // a failed test run must still end
  return new TiptapPage(server, dir)
}
