// One posthog-node session against `serve`: node scenario.mjs <host> <gzip|plain> <prefix>
// Prints the Content-Encoding of every request it sent, as JSON, on stdout.
import { PostHog } from 'posthog-node'

const [host, mode, p] = process.argv.slice(2)
const encodings = []
const recordingFetch = async (url, options) => {
  encodings.push((options.headers && options.headers['Content-Encoding']) || 'identity')
  return fetch(url, options)
}
const client = new PostHog('phc_sdk_test', {
  host, flushAt: 1, flushInterval: 0, disableCompression: mode !== 'gzip', fetch: recordingFetch,
  disableGeoip: true,
})
const at = (s) => new Date(Date.UTC(2024, 0, 1, 0, 0, s))
client.capture({ distinctId: `${p}-legacy`, event: 'browsed', properties: { page: 'a' }, timestamp: at(0) })
client.identify({
  distinctId: `${p}-user`,
  properties: { $set: { email: `${p}@example.com`, trial_ends: '2024-02-01T00:00:00Z' }, $set_once: { first: 'node' } },
})
await client.flush()
client.capture({
  distinctId: `${p}-user`, event: 'purchase', timestamp: at(10), groups: { company: `${p}-acme` },
  properties: { amount: 5, $set: { plan: 'pro' }, $set_once: { first: 'ignored', first_plan: 'pro' } },
})
client.groupIdentify({ groupType: 'company', groupKey: `${p}-acme`, properties: { name: 'Acme' } })
await client.flush()
client.alias({ distinctId: `${p}-user`, alias: `${p}-legacy` })  // posthog-node: distinct_id = the user
await client.flush()
client.capture({ distinctId: `${p}-legacy`, event: 'clicked', properties: { button: 'b' }, timestamp: at(30) })
await client.shutdown()
process.stdout.write(JSON.stringify(encodings) + '\n')
