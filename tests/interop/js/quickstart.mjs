// The spec's Quick Start, as written, under Node (the `ws` package provides WebSocket).
// Usage: node quickstart.mjs <base ws url> ; prints every message as a JSON line, "READY" once both
// commands are acknowledged, and exits after agent_execution_complete for agent-123.
import WebSocket from 'ws'

const base = process.argv[2]
const timeout = setTimeout(() => { console.error('timeout'); process.exit(1) }, 20000)
let acks = 0

const ws = new WebSocket(`${base}/ws`)

ws.onopen = () => {
  console.log(JSON.stringify({ note: 'Connected to real-time collaboration service' }))
  ws.send(JSON.stringify({
    type: 'subscribe_agent',
    data: { agent_id: 'agent-123' }
  }))
  ws.send(JSON.stringify({
    type: 'join_workspace',
    data: { workspace_id: 'workspace-789' }
  }))
}

ws.onmessage = (event) => {
  const message = JSON.parse(event.data)
  console.log(JSON.stringify(message))
  if (message.type === 'ack' && ++acks === 2) console.log('READY')
  if (message.type === 'agent_execution_complete' && message.data.agent_id === 'agent-123') {
    clearTimeout(timeout)
    ws.close()
    process.exit(0)
  }
}
