// A worker using the official `inngest` JS SDK (v4) in Connect mode: it dials lockgate over a
// WebSocket and serves no HTTP. WORKER_NAME tags its ledger lines; the ledger is LEDGER_PATH.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");

const { Inngest } = require("inngest");
const { connect } = require("inngest/connect");

const WORKER = process.env.WORKER_NAME || "js";

function record(kind, fields = {}) {
  const line = JSON.stringify({ kind, token: crypto.randomUUID(), at: Date.now() / 1000, ...fields });
  fs.appendFileSync(process.env.LEDGER_PATH, line + "\n");
}

const inngest = new Inngest({ id: "connect-js", appVersion: process.env.APP_VERSION || "v1" });
const sleepMs = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const steps = inngest.createFunction(
  { id: "steps", retries: 3, triggers: [{ event: "connect-js/steps" }] },
  async ({ event, step, runId }) => {
    const first = await step.run("one", async () => {
      record("step", { run_id: runId, step: "one", worker: WORKER });
      return "one";
    });
    const second = await step.run("two", async () => {
      record("step-start", { run_id: runId, step: "two", worker: WORKER });
      await sleepMs(1000 * Number(event.data.pause || 0));
      record("step", { run_id: runId, step: "two", worker: WORKER });
      return "two";
    });
    return { steps: [first, second], n: event.data.n };
  },
);

connect({ apps: [{ client: inngest, functions: [steps] }], instanceId: WORKER })
  .then((conn) => {
    record("connected", { worker: WORKER, connection_id: conn.connectionId });
    return conn.closed;
  })
  .then(() => process.exit(0))
  .catch((err) => {
    console.error("connect failed:", err);
    process.exit(1);
  });
