// The agent monitor: one row per agent of the workspace, with its status, a progress bar and
// the current step; a click shows its history. Fed by the event channel; REST fills in the
// state and history of agents found on arrival. Every event carries the event log's id, so an
// event older than what a row already shows (a replay, a REST answer that crossed it) is kept in
// the history but does not move the row back.

import { h } from './dom.js'

const FINAL = new Set(['completed', 'failed', 'cancelled'])

const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '')

function describe (event) {
  const d = event.data
  switch (event.type) {
    case 'agent_execution_start':
      return `started${d.task ? `: ${d.task}` : ''}`
    case 'agent_execution_update':
      return `${Math.round(d.progress ?? 0)} %${d.current_step ? ` · ${d.current_step}` : ''}`
    case 'agent_execution_complete':
      return `${d.status}${d.result ? `: ${d.result}` : ''}`
    default:
      return event.type
  }
}

class AgentRow {
  constructor (agentId, onOpen) {
    this.agentId = agentId
    this.state = { agent_id: agentId, status: 'queued', progress: 0, current_step: null, task: null }
    this.eventId = 0
    /** @type {Map<number, any>} */
    this.history = new Map()
    this.bar = h('div', { class: 'fill' })
    this.progressEl = h('div', {
      class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-label': `progress of ${agentId}`
    }, this.bar)
    this.statusEl = h('span', { class: 'agent-status' })
    this.taskEl = h('div', { class: 'agent-task' })
    this.stepEl = h('div', { class: 'agent-step' })
    this.historyEl = h('ol', { class: 'agent-history', hidden: true })
    this.head = h('button', {
      class: 'agent-head',
      type: 'button',
      'aria-expanded': 'false',
      onclick: () => this.toggle(onOpen)
    }, h('span', { class: 'agent-name', text: agentId }), this.statusEl)
    this.el = h('li', { class: 'agent', dataset: { agentId } },
      this.head, this.taskEl, this.progressEl, this.stepEl, this.historyEl)
    this.render()
  }

  toggle (onOpen) {
    const open = this.historyEl.hidden
    this.historyEl.hidden = !open
    this.head.setAttribute('aria-expanded', String(open))
    if (open) onOpen(this)
  }

  /** A live or replayed event. */
  apply (event) {
    this.history.set(event.id, event)
    if (event.id > this.eventId) {
      this.eventId = event.id
      const d = event.data
      const next = { ...this.state }
      if (event.type === 'agent_execution_start') {
        Object.assign(next, { task: d.task ?? null, status: d.status, progress: 0, current_step: null, result: null })
      } else if (event.type === 'agent_execution_update') {
        Object.assign(next, { status: d.status, progress: d.progress ?? next.progress, current_step: d.current_step ?? next.current_step })
      } else if (event.type === 'agent_execution_complete') {
        Object.assign(next, { status: d.status, result: d.result ?? null })
        if (d.status === 'completed') next.progress = 100
      }
      this.state = next
    }
    this.render()
  }

  /** The REST view of the agent: its state and recent events (ids included). */
  applyDetail (agent, events = [], force = false) {
    for (const event of events) this.history.set(event.id, event)
    const newest = events.reduce((max, e) => Math.max(max, e.id), 0)
    if (force || this.eventId === 0 || newest > this.eventId) {
      this.state = { ...this.state, ...agent }
      this.eventId = Math.max(this.eventId, newest)
    }
    this.render()
  }

  render () {
    const { status, progress, current_step: step, task, result } = this.state
    const pct = Math.max(0, Math.min(100, Math.round(progress ?? 0)))
    this.el.dataset.status = status
    this.statusEl.textContent = status
    this.statusEl.className = `agent-status status-${status}`
    this.taskEl.textContent = task ?? ''
    this.taskEl.hidden = !task
    this.bar.style.width = `${pct}%`
    this.progressEl.setAttribute('aria-valuenow', String(pct))
    this.stepEl.textContent = FINAL.has(status) ? `${pct} %${result ? ` · ${result}` : ''}` : `${pct} %${step ? ` · ${step}` : ''}`
    if (!this.historyEl.hidden) this.renderHistory()
  }

  renderHistory () {
    const events = [...this.history.values()].sort((a, b) => a.id - b.id)
    this.historyEl.replaceChildren(...(events.length
      ? events.map((e) => h('li', {}, h('time', { text: time(e.data.timestamp) }), ' ', describe(e)))
      : [h('li', { class: 'muted', text: 'no events yet' })]))
  }
}

export class AgentMonitor {
  /**
   * @param {HTMLElement} list  the <ul> rows go into
   * @param {HTMLElement} empty  shown while there is no agent
   * @param {(agentId: string) => Promise<{agent: any, events: any[]}>} loadDetail  GET /agents/{id}
   */
  constructor (list, empty, loadDetail) {
    this.list = list
    this.empty = empty
    this.loadDetail = loadDetail
    /** @type {Map<string, AgentRow>} */
    this.rows = new Map()
  }

  clear () {
    this.rows.clear()
    this.list.replaceChildren()
    this.empty.hidden = false
  }

  row (agentId) {
    let row = this.rows.get(agentId)
    if (row == null) {
      row = new AgentRow(agentId, (r) => this.refresh(r.agentId))
      this.rows.set(agentId, row)
      this.list.prepend(row.el)
      this.empty.hidden = true
    }
    return row
  }

  has (agentId) {
    return this.rows.has(agentId)
  }

  /** An agent event from the channel. */
  event (event) {
    this.row(event.data.agent_id).apply(event)
  }

  /** States from GET /agents/status (latest first), or from resync_required (`force`: the
   * rows may have missed events, so these states replace theirs). No event ids come with them. */
  states (agents, force = false) {
    for (const agent of [...agents].reverse()) this.row(agent.agent_id).applyDetail(agent, [], force)
  }

  /** Load an agent's state and history over REST. */
  async refresh (agentId) {
    try {
      const detail = await this.loadDetail(agentId)
      this.row(agentId).applyDetail(detail.agent, detail.events)
    } catch {
      // Not visible (any more): the row keeps what the channel said.
    }
  }
}
