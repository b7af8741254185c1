// Subscribes with the official SDK's `subscribe` (WebSocket at /v1/realtime/connect) and prints
// every message it gets as one JSON line. Args: channel, comma-separated topics, token key
// ("-": mint one with the SDK's getSubscriptionToken), how many messages to wait for.
"use strict";

const { Inngest } = require("inngest");
const { subscribe, getSubscriptionToken } = require("inngest/realtime");

async function main() {
  const [channel, topicList, key, wanted] = process.argv.slice(2);
  const topics = topicList.split(",");
  const base = process.env.INNGEST_BASE_URL;
  let token = { channel, topics, key, apiBaseUrl: base };
  if (key === "-") {
    const app = new Inngest({ id: "realtime-subscriber" });
    token = await getSubscriptionToken(app, { channel, topics });
    token.apiBaseUrl = token.apiBaseUrl || base;
  }
  let stream;
  try {
    stream = await subscribe(token);
  } catch (err) {
    console.log(JSON.stringify({ refused: String(err && (err.message || err.type || err)) }));
    process.exit(0);
  }
  console.log(JSON.stringify({ ready: true }));
  let seen = 0;
  for await (const message of stream) {
    const { stream: _ignored, ...plain } = message;
    console.log(JSON.stringify(plain));
    seen += 1;
    if (seen >= Number(wanted)) break;
  }
  stream.close();
  process.exit(0);
}

main().catch((err) => {
  console.log(JSON.stringify({ error: String(err && err.stack || err) }));
  process.exit(1);
});
