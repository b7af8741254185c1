// JS v4 SDK steps the server carries out: `step.ai.infer` and `step.fetch` (the `Gateway` op), pointed at
// a fake provider (FAKE_PROVIDER_URL), and `step.waitForSignal` / `step.sendSignal`. Served over
// node:http like app.cjs; LEDGER_PATH records effects.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");

const { Inngest } = require("inngest");
const { serve } = require("inngest/node");

const PROVIDER = process.env.FAKE_PROVIDER_URL;
const inngest = new Inngest({ id: "js-outbound" });

function record(kind, fields = {}) {
  const line = JSON.stringify({ kind, token: crypto.randomUUID(), at: Date.now() / 1000, ...fields });
  fs.appendFileSync(process.env.LEDGER_PATH, line + "\n");
}

const infer = inngest.createFunction(
  { id: "infer", retries: 1, triggers: [{ event: "js-outbound/infer" }] },
  async ({ event, step, runId }) => {
    const answer = await step.ai.infer("ask", {
      model: step.ai.models.openai({ apiKey: "sk-js", baseUrl: PROVIDER + event.data.path, model: "gpt-js" }),
      body: { messages: [{ role: "user", content: event.data.q }] },
    });
    record("after-infer", { run_id: runId });
    return { content: answer.choices[0].message.content, path: answer.path };
  },
);

const fetcher = inngest.createFunction(
  { id: "fetcher", retries: 1, triggers: [{ event: "js-outbound/fetch" }] },
  async ({ event, step }) => {
    const response = await step.fetch(PROVIDER + event.data.path, {
      method: "POST",
      headers: { "x-token": "t-1", "content-type": "application/json" },
      body: JSON.stringify({ hello: event.data.hello }),
    });
    const body = await response.json();
    return { status: response.status, fake: response.headers.get("x-fake"), echo: body.echo };
  },
);

const signalWaiter = inngest.createFunction(
  { id: "signal-waiter", retries: 0, triggers: [{ event: "js-outbound/wait-signal" }] },
  async ({ event, step }) => {
    const got = await step.waitForSignal("await-signal", {
      signal: event.data.signal,
      timeout: event.data.timeout || "1m",
      onConflict: event.data.conflict || "replace",
    });
    return { got };
  },
);

const signalSender = inngest.createFunction(
  { id: "signal-sender", retries: 0, triggers: [{ event: "js-outbound/send-signal" }] },
  async ({ event, step }) => {
    const sent = await step.sendSignal("send", { signal: event.data.signal, data: event.data.payload });
    return { runId: sent.runId ?? null };
  },
);

const handler = serve({ client: inngest, functions: [infer, fetcher, signalWaiter, signalSender] });
const server = http.createServer((req, res) => handler(req, res));
server.listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
