// Fan-out load generator: R rooms x C clients, each a Yjs document synced over the y-websocket
// protocol. Every update is one small text insert carrying its sender, sequence number and send
// time (process.hrtime, a monotonic clock shared by every process on the machine).
//
// node loadgen.mjs '<json>'  with  {mode: "fanout", base, rooms, clients, rate, durationMs, drainMs, prefix,
//                                     writerBase?, writers?}
//   writerBase: where the first client of each room connects (another instance than `base`);
//   writers: how many clients of each room write (default: all, round-robin)
//                               or {mode: "idle", base, connections, roomSize, prefix, holdMs}
// Prints one JSON line with the measurements.
import * as Y from 'yjs'
import * as syncProtocol from 'y-protocols/sync'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import WebSocket from 'ws'

const opts = JSON.parse(process.argv[2])
const nowUs = () => Number(process.hrtime.bigint() / 1000n)
const MARK = /~(\d+)\.(\d+)\.(\d+)~/g

class Client {
  constructor (url, index, stats) {
    this.index = index
    this.doc = new Y.Doc()
    this.text = this.doc.getText('text')
    this.seq = 0
    this.received = 0
    this.stats = stats
    this.synced = new Promise((resolve) => { this._resolveSynced = resolve })
    this.ws = new WebSocket(url, { perMessageDeflate: false })
    this.ws.binaryType = 'arraybuffer'
    this.ws.on('open', () => {
      const encoder = encoding.createEncoder()
      encoding.writeVarUint(encoder, 0)
      syncProtocol.writeSyncStep1(encoder, this.doc)
      this.ws.send(encoding.toUint8Array(encoder))
    })
    this.ws.on('message', (data) => this.onMessage(new Uint8Array(data)))
    this.ws.on('error', (err) => { this.stats.errors.push(String(err)) })
    this.ws.on('close', (code) => { if (!this.closing) this.stats.closes.push(code) })
    this.doc.on('update', (update, origin) => {
      if (origin === this) return
      const encoder = encoding.createEncoder()
      encoding.writeVarUint(encoder, 0)
      syncProtocol.writeUpdate(encoder, update)
      this.ws.send(encoding.toUint8Array(encoder))
    })
    this.seen = new Set()
    this.backlog = []
  }

  onMessage (buf) {
    if (buf[0] !== 0) return // awareness and keep-alives
    if (buf[1] === 2 && this.stats.latencies) {
      // Time the arrival before any Yjs work: the markers are plain UTF-8 inside the update.
      const t = nowUs()
      for (const m of Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('latin1').matchAll(MARK)) {
        if (Number(m[1]) === this.index) continue
        const key = m[1] + '.' + m[2]
        if (this.seen.has(key)) continue
        this.seen.add(key)
        this.received++
        this.stats.latencies.push(t - Number(m[3]))
      }
      // Applying waits until the measured window is over: 100 clients in one Node process applying
      // Yjs updates between each other's arrivals would time the generator, not the server.
      const decoder = decoding.createDecoder(buf)
      decoding.readVarUint(decoder)
      decoding.readVarUint(decoder)
      this.backlog.push(decoding.readVarUint8Array(decoder))
      return
    }
    this.handle(buf)
  }

  applyBacklog () {
    if (this.backlog.length) Y.applyUpdate(this.doc, Y.mergeUpdates(this.backlog), this)
    this.backlog = []
  }

  handle (buf) {
    const decoder = decoding.createDecoder(buf)
    decoding.readVarUint(decoder)
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, 0)
    const syncType = syncProtocol.readSyncMessage(decoder, encoder, this.doc, this)
    if (encoding.length(encoder) > 1) this.ws.send(encoding.toUint8Array(encoder))
    if (syncType === syncProtocol.messageYjsSyncStep2) this._resolveSynced()
  }

  write () {
    this.seq++
    this.text.insert(0, `~${this.index}.${this.seq}.${nowUs()}~`)
  }

  close () { this.closing = true; this.ws.close() }
}

const percentile = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null

async function connectAll (urls, stats) {
  const clients = []
  // Rooms are opened one client at a time so that no server is measured on concurrent first loads.
  for (let i = 0; i < urls.length; i++) {
    const client = new Client(urls[i], i, stats)
    clients.push(client)
    await client.synced
  }
  return clients
}

async function fanout () {
  const { base, rooms, clients: perRoom, rate, durationMs, drainMs, prefix } = opts
  const writerBase = opts.writerBase ?? base
  const writers = Math.min(opts.writers ?? perRoom, perRoom)
  const stats = { latencies: [], errors: [], closes: [] }
  const urls = []
  for (let r = 0; r < rooms; r++) {
    for (let c = 0; c < perRoom; c++) urls.push(`${c === 0 ? writerBase : base}/${prefix}-${r}`)
  }
  const clients = await connectAll(urls, stats)
  const byRoom = []
  for (let r = 0; r < rooms; r++) byRoom.push(clients.slice(r * perRoom, (r + 1) * perRoom))

  // Token bucket per room at `rate` updates/s, writers taken round-robin within the room.
  let sent = 0
  const start = nowUs()
  const endAt = start + durationMs * 1000
  const due = new Array(rooms).fill(0)
  const cursor = new Array(rooms).fill(0)
  await new Promise((resolve) => {
    const tick = () => {
      const now = nowUs()
      const elapsed = Math.min(now, endAt) - start
      for (let r = 0; r < rooms; r++) {
        // Rooms are phase-shifted so that they do not all write in the same instant.
        const target = Math.floor(elapsed * rate / 1e6 + r / rooms)
        while (due[r] < target) {
          byRoom[r][cursor[r]].write()
          cursor[r] = (cursor[r] + 1) % writers
          due[r]++
          sent++
        }
      }
      if (now >= endAt) resolve()
      else setTimeout(tick, 1)
    }
    tick()
  })
  const writeSeconds = (nowUs() - start) / 1e6
  const expected = sent * (perRoom - 1)
  const drainDeadline = nowUs() + drainMs * 1000
  const received = () => clients.reduce((sum, c) => sum + c.received, 0)
  while (received() < expected && nowUs() < drainDeadline) await new Promise((resolve) => setTimeout(resolve, 5))
  const got = received()
  for (const c of clients) c.applyBacklog()
  const sorted = Float64Array.from(stats.latencies).sort()
  // Convergence: every client of a room holds the same text.
  let diverged = 0
  for (const room of byRoom) {
    const first = room[0].text.toString()
    for (const c of room) if (c.text.toString() !== first) diverged++
  }
  for (const c of clients) c.close()
  return {
    sent,
    expected,
    received: got,
    lost: expected - got,
    diverged,
    write_seconds: writeSeconds,
    deliveries_per_second: got / writeSeconds,
    p50_ms: percentile(sorted, 0.5) / 1000,
    p99_ms: percentile(sorted, 0.99) / 1000,
    max_ms: sorted.length ? sorted[sorted.length - 1] / 1000 : null,
    errors: stats.errors.slice(0, 5),
    closes: stats.closes.slice(0, 5)
  }
}

async function idle () {
  const { base, connections, roomSize, prefix } = opts
  const stats = { latencies: null, errors: [], closes: [] }
  const url = (j) => `${base}/${prefix}-${Math.floor(j / roomSize)}`
  const clients = []
  // The first client of each room alone (no server is measured on concurrent first loads),
  // then the rest in batches.
  for (let j = 0; j < connections; j += roomSize) {
    const opener = new Client(url(j), j, stats)
    await opener.synced
    clients.push(opener)
  }
  const rest = []
  for (let j = 0; j < connections; j++) if (j % roomSize !== 0) rest.push(j)
  const batch = 100
  for (let i = 0; i < rest.length; i += batch) {
    const group = rest.slice(i, i + batch).map((j) => new Client(url(j), j, stats))
    await Promise.all(group.map((c) => c.synced))
    clients.push(...group)
  }
  process.stdout.write(JSON.stringify({ ready: clients.length }) + '\n')
  // Hold the connections until the orchestrator has measured, then close them.
  await new Promise((resolve) => process.stdin.once('data', resolve))
  for (const c of clients) c.close()
  return { connections: clients.length, errors: stats.errors.slice(0, 5), closes: stats.closes.slice(0, 5) }
}

const result = opts.mode === 'idle' ? await idle() : await fanout()
process.stdout.write(JSON.stringify(result) + '\n')
process.exit(0)
