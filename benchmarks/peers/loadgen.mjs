// Raw-protocol load generator: WebSocket clients that speak the y-websocket protocol (sync step 1/2,
// updates) without a Yjs document, so the generator's own cost per frame stays small and equal for
// every server. Each update is one hand-encoded Yjs v1 text insert (`~sender.seq.sentUs~`), chained
// after the same client's previous insert, so every server applies (and may store) a valid update.
// Times are process.hrtime in microseconds: CLOCK_MONOTONIC, shared by every process on the machine.
//
// One worker process serves some of the clients of one run; benchmarks/peers.py starts one or more.
// Standard input, one JSON line each:
//   {framing: "yws" | "hocuspocus", client: "ws" | "light", clients: [{url, doc, room, index}], rooms,
//    perRoom, clientIdBase}
//   {cmd: "connect", batch}                    connect and sync every client, `batch` at a time
//   {cmd: "run", rate, startUs, durationMs, drainMs}   one load step (rate: updates/s per room)
//   {cmd: "close"}
// Each command is answered with one JSON line on standard output. Once connected, every client renews
// its presence (an awareness update) every 10 s, as providers do.
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import crypto from 'node:crypto'
import { EventEmitter } from 'node:events'
import net from 'node:net'
import readline from 'node:readline'

const nowUs = () => Number(process.hrtime.bigint() / 1000n)
const AWARENESS_MS = 10_000
const TILDE = 0x7e
const DOT = 0x2e
// Latency histogram: bucket = floor(log2(1 + us) * 32), about 2 % wide.
const BUCKETS = 1024
const bucketOf = (us) => Math.min(BUCKETS - 1, Math.floor(Math.log2(1 + Math.max(0, us)) * 32))

let config = null
let clients = []

function encodeInsert (clientId, clock, text) {
  // A Yjs v1 update holding one ContentString item: the first one names the root type "text",
  // later ones follow the client's own previous character (left origin).
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1) // one client
  encoding.writeVarUint(e, 1) // one struct
  encoding.writeVarUint(e, clientId)
  encoding.writeVarUint(e, clock)
  if (clock === 0) {
    encoding.writeUint8(e, 4) // ContentString, no origins: parent follows
    encoding.writeVarUint(e, 1) // the parent is a root type, by name
    encoding.writeVarString(e, 'text')
  } else {
    encoding.writeUint8(e, 4 | 0x80) // ContentString with a left origin
    encoding.writeVarUint(e, clientId)
    encoding.writeVarUint(e, clock - 1)
  }
  encoding.writeVarString(e, text)
  encoding.writeVarUint(e, 0) // empty delete set
  return encoding.toUint8Array(e)
}

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11' // RFC 6455 section 1.3
let maskPool = Buffer.alloc(0)
let maskAt = 0

function nextMask () {
  if (maskAt + 4 > maskPool.length) { maskPool = crypto.randomBytes(4096); maskAt = 0 }
  maskAt += 4
  return maskPool.subarray(maskAt - 4, maskAt)
}

// A WebSocket client (RFC 6455) on a bare TCP socket, with the part of `ws`'s interface used here
// (events open, message, error, close; send, close, readyState): the opening handshake (the 101 and
// its Sec-WebSocket-Accept checked), masked frames out, unmasked frames in (fragments joined; pings
// answered; a close answered and reported with its code). No extensions, no subprotocol. A join costs
// the generator a fraction of what `ws` costs (an HTTP client request, stream objects, parsers), so
// that a join storm measures the server rather than the generator.
class LightWebSocket extends EventEmitter {
  constructor (url) {
    super()
    const u = new URL(url)
    const key = crypto.randomBytes(16).toString('base64')
    this.accept = crypto.createHash('sha1').update(key + GUID).digest('base64')
    this.readyState = 0
    this.buf = null
    this.fragments = null
    this.closeCode = null
    const sock = net.connect({ host: u.hostname, port: Number(u.port), noDelay: true })
    this.sock = sock
    sock.on('connect', () => sock.write(
      `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
    ))
    sock.on('data', (data) => this.onData(data))
    sock.on('error', (err) => this.emit('error', err))
    sock.on('close', () => {
      if (this.readyState === 3) return
      this.readyState = 3
      this.emit('close', this.closeCode ?? 1006)
    })
  }

  fail (message) {
    this.emit('error', new Error(message))
    this.readyState = 3
    this.sock.destroy()
  }

  onData (data) {
    const buf = this.buf ? Buffer.concat([this.buf, data]) : data
    let pos = 0
    if (this.readyState === 0) {
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) { this.buf = buf; return }
      const lines = buf.toString('latin1', 0, end).split('\r\n')
      pos = end + 4
      if (!/^HTTP\/1\.1 101 /.test(lines[0])) return this.fail(`unexpected response: ${lines[0]}`)
      const accept = lines.find((line) => /^sec-websocket-accept:/i.test(line))
      if (!accept || accept.slice(accept.indexOf(':') + 1).trim() !== this.accept) {
        return this.fail('wrong Sec-WebSocket-Accept')
      }
      this.readyState = 1
      this.emit('open')
    }
    // Frames are read in place (offsets into the chunk, no view per frame); every message of a
    // chunk arrived at the same time, read once.
    const t = nowUs()
    while (buf.length - pos >= 2 && this.readyState !== 3) {
      const b0 = buf[pos]
      const b1 = buf[pos + 1]
      if (b1 & 0x80) return this.fail('a masked frame from the server')
      let length = b1 & 0x7f
      let at = pos + 2
      if (length === 126) {
        if (buf.length < pos + 4) break
        length = buf.readUInt16BE(pos + 2); at = pos + 4
      } else if (length === 127) {
        if (buf.length < pos + 10) break
        length = Number(buf.readBigUInt64BE(pos + 2)); at = pos + 10
      }
      const end = at + length
      if (buf.length < end) break
      pos = end
      const opcode = b0 & 0x0f
      if (opcode === 0 || ((opcode === 1 || opcode === 2) && !(b0 & 0x80))) {
        const payload = buf.subarray(at, end)
        this.fragments = opcode === 0 ? [...(this.fragments ?? []), payload] : [payload]
        if (opcode === 0 && b0 & 0x80) {
          const message = Buffer.concat(this.fragments)
          this.fragments = null
          this.deliver(message, 0, message.length, t)
        }
      } else if (opcode === 1 || opcode === 2) {
        this.deliver(buf, at, end, t)
      } else if (opcode === 8) {
        this.closeCode = length >= 2 ? buf.readUInt16BE(at) : 1005
        if (this.readyState === 1) this.frame(8, buf.subarray(at, at + Math.min(2, length)))
        this.readyState = 2
        this.sock.end()
      } else if (opcode === 9) {
        this.frame(10, buf.subarray(at, end))
      }
    }
    this.buf = pos < buf.length ? buf.subarray(pos) : null
  }

  // A message: to `onmessage(buf, start, end, arrivedUs)` when set, else as a 'message' event.
  deliver (buf, start, end, t) {
    if (this.onmessage) this.onmessage(buf, start, end, t)
    else this.emit('message', buf.subarray(start, end))
  }

  frame (opcode, data) {
    const length = data.length
    const at = length < 126 ? 6 : length < 65536 ? 8 : 14
    const out = Buffer.allocUnsafe(at + length)
    out[0] = 0x80 | opcode
    if (length < 126) {
      out[1] = 0x80 | length
    } else if (length < 65536) {
      out[1] = 0x80 | 126; out.writeUInt16BE(length, 2)
    } else {
      out[1] = 0x80 | 127; out.writeBigUInt64BE(BigInt(length), 2)
    }
    const mask = nextMask()
    mask.copy(out, at - 4)
    for (let i = 0; i < length; i++) out[at + i] = data[i] ^ mask[i & 3]
    this.sock.write(out)
  }

  send (data) {
    if (this.readyState === 1) this.frame(2, data)
  }

  close () {
    if (this.readyState === 1) {
      this.frame(8, Buffer.from([0x03, 0xe8])) // 1000
      this.readyState = 2
      this.sock.end()
    } else if (this.readyState === 0) {
      this.readyState = 3
      this.sock.destroy()
    }
  }
}

class Client {
  constructor (spec, slot) {
    this.spec = spec
    this.slot = slot
    this.clientId = config.clientIdBase + slot
    this.clock = 0
    this.seq = 0
    this.last = new Int32Array(config.perRoom).fill(0) // highest seq seen per sender of the room
    this.received = 0
    this.prefix = null
    if (config.framing === 'hocuspocus') {
      const e = encoding.createEncoder()
      encoding.writeVarString(e, spec.doc)
      this.prefix = encoding.toUint8Array(e)
    }
  }

  frame (type, build) {
    const e = encoding.createEncoder()
    if (this.prefix) encoding.writeUint8Array(e, this.prefix)
    encoding.writeVarUint(e, type)
    build(e)
    return encoding.toUint8Array(e)
  }

  connect (stats) {
    this.startedUs = nowUs()
    return new Promise((resolve) => {
      this.onSynced = resolve
      const ws = config.client === 'light'
        ? new LightWebSocket(this.spec.url)
        : new WebSocket(this.spec.url, { perMessageDeflate: false })
      this.ws = ws
      if (ws instanceof LightWebSocket) ws.onmessage = (buf, start, end, t) => this.onMessage(buf, start, end, t)
      else ws.on('message', (data) => this.onMessage(data, 0, data.length, nowUs()))
      ws.binaryType = 'nodebuffer'
      ws.on('open', () => {
        this.openUs = nowUs() - this.startedUs
        if (this.prefix) {
          // Hocuspocus: the provider authenticates each document first (token, may be empty).
          ws.send(this.frame(2, (e) => { encoding.writeVarUint(e, 0); encoding.writeVarString(e, '') }))
        }
        ws.send(this.frame(0, (e) => { encoding.writeVarUint(e, 0); encoding.writeVarUint8Array(e, new Uint8Array([0])) }))
      })
      ws.on('error', (err) => { stats.errors.push(String(err)); resolve(false) })
      ws.on('close', (code) => { if (!this.closing) stats.closes.push(code); resolve(false) })
    })
  }

  // A message from the server: buf[start, end), arrived at `t` (us).
  onMessage (buf, start, end, t) {
    let pos = start
    if (this.prefix) {
      // Hocuspocus: the document's name first, a var-string (lib0: length as a var-uint).
      let length = 0; let shift = 0; let b = 0
      do { b = buf[pos++]; length += (b & 0x7f) * 2 ** shift; shift += 7 } while (b & 0x80)
      pos += length
    }
    if (pos + 1 >= end || buf[pos] !== 0) return // awareness, auth, sync status (or too short)
    const sub = buf[pos + 1]
    if (sub === 2) this.scan(buf, pos + 2, end, t)
    else if (sub === 1 && this.onSynced) {
      this.syncUs = t - this.startedUs
      this.onSynced(true)
      this.onSynced = null
    }
  }

  scan (buf, from, end, t) {
    // Markers `~sender.seq.sentUs~` are plain ASCII inside the update: read them before any Yjs work.
    let i = buf.indexOf(TILDE, from)
    while (i !== -1 && i < end) {
      let j = i + 1
      let a = 0; let b = 0; let c = 0; let ok = false
      let n = 0
      while (j < end && buf[j] >= 48 && buf[j] <= 57) { a = a * 10 + buf[j] - 48; j++; n++ }
      if (n && buf[j] === DOT) {
        j++; n = 0
        while (j < end && buf[j] >= 48 && buf[j] <= 57) { b = b * 10 + buf[j] - 48; j++; n++ }
        if (n && buf[j] === DOT) {
          j++; n = 0
          while (j < end && buf[j] >= 48 && buf[j] <= 57) { c = c * 10 + buf[j] - 48; j++; n++ }
          ok = n > 0 && buf[j] === TILDE
        }
      }
      if (!ok) { i = buf.indexOf(TILDE, i + 1); continue }
      if (a !== this.spec.index && a < this.last.length && b > this.last[a]) {
        this.last[a] = b
        this.received++
        if (step) step.hist[bucketOf(t - c)]++
      }
      i = buf.indexOf(TILDE, j + 1)
    }
  }

  // Presence, as a provider renews it (every 15 s by default; here every AWARENESS_MS): servers
  // may close connections that send nothing for a while (Hocuspocus: after 30 s).
  renewAwareness () {
    if (!this.ws || this.ws.readyState !== 1) return // OPEN
    this.awarenessClock = (this.awarenessClock ?? 0) + 1
    const state = JSON.stringify({ user: { name: `c${this.spec.index}` } })
    const update = encoding.createEncoder()
    encoding.writeVarUint(update, 1)
    encoding.writeVarUint(update, this.clientId)
    encoding.writeVarUint(update, this.awarenessClock)
    encoding.writeVarString(update, state)
    this.ws.send(this.frame(1, (e) => encoding.writeVarUint8Array(e, encoding.toUint8Array(update))))
  }

  write () {
    this.seq++
    const text = `~${this.spec.index}.${this.seq}.${nowUs()}~`
    const update = encodeInsert(this.clientId, this.clock, text)
    this.clock += text.length
    this.ws.send(this.frame(0, (e) => { encoding.writeVarUint(e, 2); encoding.writeVarUint8Array(e, update) }))
  }
}

let step = null

async function connectAll (batch) {
  const stats = { errors: [], closes: [] }
  const hist = new Array(BUCKETS).fill(0)
  const openHist = new Array(BUCKETS).fill(0) // the 101
  const cpu0 = process.cpuUsage()
  const t0 = nowUs()
  let failed = 0
  clients = config.clients.map((spec, slot) => new Client(spec, slot))
  for (let i = 0; i < clients.length; i += batch) {
    const group = clients.slice(i, i + batch)
    const results = await Promise.all(group.map((c) => c.connect(stats)))
    for (let k = 0; k < group.length; k++) {
      if (results[k]) {
        hist[bucketOf(group[k].syncUs)]++
        openHist[bucketOf(group[k].openUs)]++
      } else failed++
    }
  }
  const seconds = (nowUs() - t0) / 1e6
  const cpu = process.cpuUsage(cpu0)
  // Spread over the period, as independent clients would be.
  for (const c of clients) {
    setTimeout(() => setInterval(() => c.renewAwareness(), AWARENESS_MS).unref(), Math.random() * AWARENESS_MS).unref()
  }
  return {
    connected: clients.length - failed,
    failed,
    seconds,
    hist,
    open_hist: openHist,
    cpu_seconds: (cpu.user + cpu.system) / 1e6,
    errors: stats.errors.slice(0, 3),
    closes: stats.closes.slice(0, 5)
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function run ({ rate, startUs, durationMs, drainMs }) {
  const { rooms, perRoom } = config
  // Clients of each room held by this worker, by index within the room.
  const local = Array.from({ length: rooms }, () => new Map())
  for (const c of clients) local[c.spec.room].set(c.spec.index, c)
  const localRooms = []
  for (let r = 0; r < rooms; r++) if (local[r].size) localRooms.push(r)
  for (const c of clients) c.received = 0
  step = { hist: new Array(BUCKETS).fill(0) }
  while (nowUs() < startUs - 2000) await sleep(1)
  while (nowUs() < startUs) { /* spin the last 2 ms */ }
  const cpu0 = process.cpuUsage()
  const endAt = startUs + durationMs * 1000
  const due = new Array(rooms).fill(0)
  const sentBy = new Map() // client -> updates sent this step
  let sent = 0
  // Every worker computes the same schedule: update j of room r is due at (j + 1 - r / rooms) / rate
  // and written by the room's client j mod perRoom, whichever worker holds it.
  const target = (r, elapsed) => Math.floor(elapsed * rate / 1e6 + r / rooms)
  await new Promise((resolve) => {
    const tick = () => {
      const now = nowUs()
      const elapsed = Math.min(now, endAt) - startUs
      for (const r of localRooms) {
        const t = target(r, elapsed)
        for (let j = due[r]; j < t; j++) {
          const writer = local[r].get(j % perRoom)
          if (writer) {
            writer.write()
            sentBy.set(writer, (sentBy.get(writer) ?? 0) + 1)
            sent++
          }
        }
        due[r] = t
      }
      if (now >= endAt) resolve()
      else setTimeout(tick, 1)
    }
    tick()
  })
  const writeSeconds = (nowUs() - startUs) / 1e6
  const cpuWrite = process.cpuUsage(cpu0)
  let expected = 0
  for (const c of clients) expected += target(c.spec.room, durationMs * 1000) - (sentBy.get(c) ?? 0)
  const received = () => clients.reduce((sum, c) => sum + c.received, 0)
  const drainDeadline = nowUs() + drainMs * 1000
  while (received() < expected && nowUs() < drainDeadline) await sleep(5)
  const got = received()
  const result = {
    sent,
    expected,
    received: got,
    lost: Math.max(0, expected - got),
    write_seconds: writeSeconds,
    cpu_write_seconds: (cpuWrite.user + cpuWrite.system) / 1e6,
    hist: step.hist
  }
  step = null
  return result
}

const lines = readline.createInterface({ input: process.stdin })
for await (const line of lines) {
  const message = JSON.parse(line)
  let reply
  if (!config) {
    config = message
    reply = { ready: true }
  } else if (message.cmd === 'connect') {
    reply = await connectAll(message.batch)
  } else if (message.cmd === 'run') {
    reply = await run(message)
  } else if (message.cmd === 'close') {
    for (const c of clients) { c.closing = true; c.ws?.close() }
    await sleep(200)
    process.stdout.write(JSON.stringify({ closed: clients.length }) + '\n')
    process.exit(0)
  }
  process.stdout.write(JSON.stringify(reply) + '\n')
}
