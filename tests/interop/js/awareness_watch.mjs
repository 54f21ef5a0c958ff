// A stock y-websocket client that reports its peers' awareness states: one JSON line (the list of
// states) per change, "SYNCED" once synced. Exits when stdin closes or after 30 s.
// Usage: node awareness_watch.mjs <ws base url> <room> [token]
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [base, room, token] = process.argv.slice(2)
const doc = new Y.Doc()
const provider = new WebsocketProvider(base, room, doc, {
  WebSocketPolyfill: WebSocket, params: token ? { token } : {}
})
const peers = () => [...provider.awareness.getStates().entries()]
  .filter(([id]) => id !== doc.clientID).map(([, state]) => state)
provider.on('sync', (synced) => { if (synced) console.log('SYNCED') })
provider.awareness.on('change', () => console.log(JSON.stringify(peers())))
const stop = () => { provider.destroy(); process.exit(0) }
process.stdin.on('end', stop)
process.stdin.resume()
setTimeout(stop, 30000)
