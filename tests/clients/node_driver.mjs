// Drives one unmodified Node SDK against a collector and prints what the client saw, as one JSON line.
// Run by tests/clients/test_node_sdks.py: node node_driver.mjs '{"sdk": "segment"|"rudder", "host": ...,
// "writeKey": ..., "run": ..., "batched": true|false}'.
import { createRequire } from 'node:module'
import { randomUUID } from 'node:crypto'

const require = createRequire(import.meta.url)
const args = JSON.parse(process.argv[2])
const user = `u-${args.run}`
const anon = `a-${args.run}`
const sent = [] // {messageId, type, time}: the client's own record of each call
const errors = []
const requests = [] // what the SDK put on the wire (Segment's SDK reports it)
const started = Date.now()

const calls = [
  ['identify', { traits: { firstName: 'Ann', lastName: 'Lee', email: `ann-${args.run}@acme.io` },
    context: { locale: 'de-DE', traits: { plan: 'pro' } } }],
  ['track', { event: 'Order Completed', properties: { revenue: 42.5, currency: 'EUR' },
    integrations: { All: false, Mixpanel: true } }],
  ['page', { name: 'Install', category: 'Docs',
    properties: { url: 'https://shop.example/docs/install', path: '/docs/install' } }],
  ['screen', { name: 'Billing', properties: { tab: 'invoices' } }],
  ['group', { groupId: `g-${args.run}`, traits: { name: 'Acme Inc', website: 'https://www.acme.io', employees: 120 } }],
  ['alias', { previousId: `old-${args.run}` }],
]
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function segment () {
  const { Analytics } = require('@segment/analytics-node')
  const analytics = new Analytics({
    writeKey: args.writeKey, host: args.host, path: '/v1/batch', maxRetries: 3,
    maxEventsInBatch: args.batched ? 20 : 1, flushInterval: args.batched ? 2000 : 10,
  })
  analytics.on('error', (err) => errors.push({ code: err.code, reason: String(err.reason || err.message || err) }))
  analytics.on('http_request', (req) => {
    const body = typeof req.body === 'string' ? JSON.parse(req.body) : req.body
    requests.push({ url: req.url, headers: req.headers, events: (body.batch || []).length })
  })
  for (const [type, params] of calls) {
    const messageId = randomUUID()
    sent.push({ messageId, type, time: new Date().toISOString() })
    analytics[type]({ userId: user, anonymousId: anon, messageId, ...params })
    await sleep(150) // distinct client times; batched, the client holds them until its flush
  }
  await analytics.closeAndFlush({ timeout: 20000 })
}

async function rudder () {
  const Analytics = require('@rudderstack/rudder-sdk-node')
  const client = new Analytics(args.writeKey, {
    dataPlaneUrl: args.host, flushAt: args.batched ? 20 : 1, flushInterval: args.batched ? 2000 : 10,
    retryCount: 3, logLevel: 'error', errorHandler: (err) => errors.push({
      status: err.response ? err.response.status : null, body: err.response ? err.response.data : null,
      reason: String(err.message || err),
    }),
  })
  for (const [type, params] of calls) {
    const messageId = randomUUID()
    sent.push({ messageId, type, time: new Date().toISOString() }) // the SDK stamps originalTimestamp now
    client[type]({ userId: user, anonymousId: anon, messageId, ...params })
    await sleep(150)
  }
  await new Promise((resolve) => client.flush(() => resolve()))
  await sleep(200) // the first call's own flush may still be in flight
}

await (args.sdk === 'segment' ? segment() : rudder())
console.log(JSON.stringify({ sent, errors, requests, seconds: (Date.now() - started) / 1000 }))
process.exit(0)
