// Runs TrackClient calls against a Customer.io-compatible URL and prints one JSON result per call.
// stdin: {"url": "https://127.0.0.1:1234/api/v1", "site_id": "...", "api_key": "...",
//         "calls": [["identify", "u1", {...}], ...]}
// stdout: [{"ok": <parsed response body>} | {"error": "...", "status": <HTTP status or null>}, ...]
"use strict";
const { TrackClient } = require("customerio-node");

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const client = new TrackClient(input.site_id, input.api_key, { url: input.url, retry: { maxRetries: 0 } });
  const results = [];
  for (const [method, ...args] of input.calls) {
    try {
      results.push({ ok: await client[method](...args) });
    } catch (error) {
      results.push({ error: String(error && error.message), status: (error && error.statusCode) || null });
    }
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack));
  process.exit(1);
});
