// A stock Yjs client (yjs + y-websocket's WebsocketProvider), driven by the Python tests.
// Usage: node client.mjs '<json options>'
//   {url, room, token?, insert?, expect?, expectPeers?, expectDenied?, awareness?, idleMs?, timeoutMs?}
//   expectPeers: names (awareness state user.name) of other clients to wait for (seen at any time)
// Prints one JSON line: {text, synced, disconnects, messages, peers} and exits 0, or exits 1 on timeout.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const opts = JSON.parse(process.argv[2])
const timeoutMs = opts.timeoutMs ?? 15000

let messages = 0
// y-websocket reports the y-protocols auth message "permission-denied" through console.warn.
const permissionDenied = []
const warn = console.warn
console.warn = (...args) => {
  if (String(args[0]).startsWith('Permission denied')) permissionDenied.push(args.join(' '))
  else warn(...args)
}
class CountingWebSocket extends WebSocket {
  constructor (...args) {
    super(...args)
    this.addEventListener('message', () => { messages++ })
  }
}

const doc = new Y.Doc()
const text = doc.getText('text')
const provider = new WebsocketProvider(opts.url, opts.room, doc, {
  WebSocketPolyfill: CountingWebSocket,
  params: opts.token ? { token: opts.token } : {}
})
let disconnects = 0
provider.on('status', ({ status }) => { if (status === 'disconnected') disconnects++ })
if (opts.awareness) provider.awareness.setLocalState(opts.awareness)
// Names of the other clients seen so far (a peer may have left again by the time we look).
const seenPeers = new Set()
provider.awareness.on('change', () => {
  for (const [id, state] of provider.awareness.getStates()) {
    if (id !== doc.clientID && state?.user?.name) seenPeers.add(state.user.name)
  }
})

const deadline = setTimeout(() => {
  console.error(JSON.stringify({ error: 'timeout', text: text.toString(), synced: provider.synced, seenPeers: [...seenPeers] }))
  process.exit(1)
}, timeoutMs)

const waitFor = (predicate) => new Promise((resolve) => {
  const check = () => { if (predicate()) { resolve(); return true } return false }
  if (check()) return
  const onChange = () => { if (check()) { doc.off('update', onChange); provider.off('sync', onChange) } }
  doc.on('update', onChange)
  provider.on('sync', onChange)
})

await waitFor(() => provider.synced)
if (opts.insert) text.insert(text.length, opts.insert)
if (opts.expect) await waitFor(() => opts.expect.every((part) => text.toString().includes(part)))
if (opts.expectPeers) {
  await new Promise((resolve) => {
    const check = () => {
      if (opts.expectPeers.every((name) => seenPeers.has(name))) {
        provider.awareness.off('change', check)
        resolve()
      }
    }
    provider.awareness.on('change', check)
    check()
  })
}
if (opts.expectDenied) {
  await new Promise((resolve) => {
    const poll = setInterval(() => { if (permissionDenied.length) { clearInterval(poll); resolve() } }, 10)
  })
}
if (opts.idleMs) await new Promise((resolve) => setTimeout(resolve, opts.idleMs))

const peers = [...provider.awareness.getStates().entries()]
  .filter(([id]) => id !== doc.clientID)
  .map(([, state]) => state)
clearTimeout(deadline)
console.log(JSON.stringify({ text: text.toString(), synced: provider.synced, disconnects, messages, peers, seenPeers: [...seenPeers], permissionDenied }))
provider.destroy()
process.exit(0)
