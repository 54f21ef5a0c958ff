// "Run a demo agent": a simulated execution reported over the event channel, attached to the
// workspace, so the monitor and the agent's presence in the document move as a real agent's would.

import { randomHex } from './names.js'

const STEPS = [
  'Reading the document',
  'Counting words',
  'Finding the key points',
  'Drafting a summary',
  'Checking the draft',
  'Polishing'
]
const STEP_MS = 700

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Start, report progress through STEPS, complete. Resolves with the agent id once completed;
 * rejects (after reporting `failed` when it still can) if the channel refuses a report.
 *
 * @param {import('./events.js').EventChannel} channel
 * @param {string} workspaceId
 * @param {() => string} readText  the document's text, for the result
 * @param {(agentId: string, start: object) => void} onStart  once the start is acknowledged
 */
export async function runDemoAgent (channel, workspaceId, readText, onStart = () => {}) {
  const agentId = `demo-agent-${randomHex()}`
  const start = { agent_id: agentId, task: 'Summarise the document', workspace_id: workspaceId, status: 'running' }
  await channel.request('agent_execution_start', start)
  onStart(agentId, start)
  try {
    for (const [index, step] of STEPS.entries()) {
      await pause(STEP_MS)
      const progress = Math.round((index * 100) / STEPS.length)
      await channel.request('agent_execution_update', { agent_id: agentId, status: 'running', progress, current_step: step })
    }
    await pause(STEP_MS)
    const text = readText()
    const words = text.split(/\s+/).filter(Boolean).length
    const lines = text ? text.split('\n').length : 0
    await channel.request('agent_execution_complete', {
      agent_id: agentId,
      status: 'completed',
      result: `Read ${words} words on ${lines} lines`
    })
  } catch (error) {
    await channel.request('agent_execution_complete', { agent_id: agentId, status: 'failed', result: String(error.message ?? error) }).catch(() => {})
    throw error
  }
  return agentId
}
