// Event-channel load generator: A agents, each with one publisher on /ws/agents and S subscribers
// on /ws/agents, publishing agent_execution_update events at a total rate. Each event's
// current_step carries its agent, sequence number and send time (process.hrtime, a monotonic clock
// shared by every process on the machine), padded to stepBytes.
//
// node eventload.mjs '<json>' with {base, agents, subscribersPerAgent, rate, durationMs, drainMs,
//                                   prefix, stepBytes, publisherToken?, subscriberTokens?}
//   subscriberTokens: one token per agent (its subscribers' user, the user the agent works for)
// Prints one JSON line with the measurements.
import WebSocket from 'ws'

const opts = JSON.parse(process.argv[2])
const nowUs = () => Number(process.hrtime.bigint() / 1000n)
const withToken = (url, token) => (token ? `${url}?token=${encodeURIComponent(token)}` : url)
const STEP = /^(\d+):(\d+):(\d+)~/

function open (url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false })
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

function request (ws, message) {
  return new Promise((resolve) => {
    const requestId = `r${Math.random().toString(36).slice(2)}`
    const onMessage = (raw) => {
      const reply = JSON.parse(raw.toString())
      if (reply.request_id === requestId) {
        ws.off('message', onMessage)
        resolve(reply)
      }
    }
    ws.on('message', onMessage)
    ws.send(JSON.stringify({ ...message, request_id: requestId }))
  })
}

const stats = { latencies: [], delivered: 0, duplicates: 0, errors: [], closes: [], acked: 0, refused: 0 }
const agents = []
for (let a = 0; a < opts.agents; a++) {
  const agentId = `${opts.prefix}-agent-${a}`
  const subscriberToken = opts.subscriberTokens ? opts.subscriberTokens[a] : null
  const subscribers = []
  for (let s = 0; s < opts.subscribersPerAgent; s++) {
    const ws = await open(withToken(`${opts.base}/ws/agents`, subscriberToken))
    const reply = await request(ws, { type: 'subscribe_agent', data: { agent_id: agentId } })
    if (reply.type !== 'ack') throw new Error(`subscribe refused: ${JSON.stringify(reply)}`)
    const sub = { ws, seen: new Set() }
    ws.on('message', (raw) => {
      const message = JSON.parse(raw.toString())
      if (message.type !== 'agent_execution_update') return
      const match = STEP.exec(message.data.current_step)
      if (!match || Number(match[1]) !== a) return
      const seq = Number(match[2])
      if (sub.seen.has(seq)) { stats.duplicates++; return }
      sub.seen.add(seq)
      stats.delivered++
      stats.latencies.push(nowUs() - Number(match[3]))
    })
    ws.on('close', (code) => { if (!sub.closing) stats.closes.push(code) })
    subscribers.push(sub)
  }
  const publisher = await open(withToken(`${opts.base}/ws/agents`, opts.publisherToken))
  const start = { agent_id: agentId, task: 'benchmark' }
  if (subscriberToken) start.user_id = opts.subscriberUsers[a]
  const started = await request(publisher, { type: 'agent_execution_start', data: start })
  if (started.type !== 'ack') throw new Error(`start refused: ${JSON.stringify(started)}`)
  publisher.on('message', (raw) => {
    const message = JSON.parse(raw.toString())
    if (message.type === 'ack') stats.acked++
    else if (message.type === 'error') { stats.refused++; if (stats.errors.length < 5) stats.errors.push(message.data) }
  })
  publisher.on('close', (code) => { if (!publisher.closing) stats.closes.push(code) })
  agents.push({ index: a, agentId, publisher, subscribers, seq: 0 })
}

const pad = 'x'.repeat(Math.max(0, opts.stepBytes - 40))
const cpuBefore = process.cpuUsage()
const wallBefore = nowUs()
const tickMs = 10
const perTick = (opts.rate * tickMs) / 1000
let sent = 0
let owed = 0
const started = Date.now()
await new Promise((resolve) => {
  const timer = setInterval(() => {
    owed += perTick
    while (owed >= 1) {
      const agent = agents[sent % agents.length]
      const step = `${agent.index}:${agent.seq}:${nowUs()}~${pad}`
      agent.seq++
      agent.publisher.send(JSON.stringify({
        type: 'agent_execution_update',
        data: { agent_id: agent.agentId, progress: 50, current_step: step }
      }))
      sent++
      owed--
    }
    if (Date.now() - started >= opts.durationMs) { clearInterval(timer); resolve() }
  }, tickMs)
})
const sendEnd = nowUs()
const expected = agents.reduce((n, agent) => n + agent.seq * agent.subscribers.length, 0)
const drainUntil = Date.now() + opts.drainMs
while ((stats.delivered < expected || stats.acked + stats.refused < sent) && Date.now() < drainUntil) {
  await new Promise((resolve) => setTimeout(resolve, 20))
}
const lastDelivery = nowUs()
const cpu = process.cpuUsage(cpuBefore)
for (const agent of agents) {
  agent.publisher.closing = true
  agent.publisher.close()
  for (const sub of agent.subscribers) { sub.closing = true; sub.ws.close() }
}
stats.latencies.sort((x, y) => x - y)
const pct = (p) => (stats.latencies.length ? stats.latencies[Math.min(stats.latencies.length - 1, Math.floor(p * stats.latencies.length))] / 1000 : null)
const deliverySeconds = Math.max((lastDelivery - wallBefore) / 1e6, (sendEnd - wallBefore) / 1e6)
console.log(JSON.stringify({
  sent,
  acked: stats.acked,
  refused: stats.refused,
  expected,
  delivered: stats.delivered,
  duplicates: stats.duplicates,
  lost: expected - stats.delivered,
  p50_ms: pct(0.5),
  p99_ms: pct(0.99),
  accepted_per_second: stats.acked / deliverySeconds,
  deliveries_per_second: stats.delivered / deliverySeconds,
  loadgen_cpu_percent: (100 * (cpu.user + cpu.system)) / (nowUs() - wallBefore),
  closes: stats.closes,
  errors: stats.errors
}))
process.exit(0)
