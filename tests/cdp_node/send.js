// Replays calls with Customer.io's official Node client: node send.js <host> <writeKey> < calls.json
// calls.json: [{"method": "identify", "params": {...}}, ...]; prints "ok" or the delivery errors.
const { Analytics } = require('@customerio/cdp-analytics-node')

async function main() {
  const [host, writeKey] = process.argv.slice(2)
  const calls = JSON.parse(require('fs').readFileSync(0, 'utf8'))
  const analytics = new Analytics({ writeKey, host, flushInterval: 50, maxRetries: 0 })
  const errors = []
  analytics.on('error', (err) => errors.push(String((err && err.reason) || err)))
  for (const { method, params } of calls) {
    analytics[method](params)
  }
  await analytics.closeAndFlush({ timeout: 20000 })
  if (errors.length) {
    console.log(JSON.stringify(errors))
    process.exit(1)
  }
  console.log('ok')
}

main().catch((err) => {
  console.error(err)
  process.exit(2)
})
