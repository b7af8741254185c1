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

function startsOf(runId) {
  if (!fs.existsSync(process.env.LEDGER_PATH)) return [];
  return fs.readFileSync(process.env.LEDGER_PATH, "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line))
    .filter((entry) => entry.kind === "step-start" && entry.run_id === runId);
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
      // `pause` seconds on the step's first try only (time to kill the worker): a retry on
      // another worker, which the ledger shows started it before, goes straight on.
      const retried = startsOf(runId).length > 0;
      record("step-start", { run_id: runId, step: "two", worker: WORKER });
      if (!retried) await sleepMs(1000 * Number(event.data.pause || 0));
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
