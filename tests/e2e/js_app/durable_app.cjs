// Durable endpoints with the official `inngest` JS SDK (v4): plain HTTP handlers wrapped with
// `inngest.endpoint(...)`, whose steps run inside the caller's request and are checkpointed to
// lockgate (sync mode). Every side effect is appended to LEDGER_PATH with the caller's `key`
// query parameter, so tests can prove a step ran exactly once.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");

const { Inngest, NonRetriableError, step } = require("inngest");
const { createEndpointServer, endpointAdapter } = require("inngest/node");

function record(kind, fields = {}) {
  const line = JSON.stringify({ kind, token: crypto.randomUUID(), at: Date.now() / 1000, ...fields });
  fs.appendFileSync(process.env.LEDGER_PATH, line + "\n");
}

const inngest = new Inngest({
  id: "durable-app",
  endpointAdapter: endpointAdapter.withOptions({ retries: Number(process.env.ENDPOINT_RETRIES || 3) }),
});

const attempts = new Map(); // per key and step: how often it ran, to fail the first tries

function once(key, name, fn) {
  return step.run(name, async () => {
    const n = (attempts.get(`${key}/${name}`) || 0) + 1;
    attempts.set(`${key}/${name}`, n);
    record("step", { key, step: name, try: n });
    return fn(n);
  });
}

const json = (body, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", "X-Endpoint": "yes" } });

const routes = {
  // Two steps and a JSON answer, all inside the caller's request.
  "/api/steps": inngest.endpoint(async (req) => {
    const url = new URL(req.url);
    const key = url.searchParams.get("key");
    // (the SDK has read the request body already, to record it in the run's event)
    const x = Number(url.searchParams.get("x"));
    const a = await once(key, "add-one", () => x + 1);
    const b = await once(key, "double", () => a * 2);
    return json({ a, b, method: req.method }, 201);
  }),
  // A step that fails on its first two tries: the run goes on in the background, retried by lockgate.
  "/api/flaky": inngest.endpoint(async (req) => {
    const key = new URL(req.url).searchParams.get("key");
    const before = await once(key, "before", () => "ok");
    const value = await once(key, "flaky", (n) => {
      if (n < 3) throw new Error(`transient failure ${n}`);
      return `recovered after ${n}`;
    });
    const after = await once(key, "after", () => "done");
    return json({ before, value, after });
  }),
  // A sleep cannot happen inside a request: the run is handed over and resumed after it.
  "/api/sleep": inngest.endpoint(async (req) => {
    const key = new URL(req.url).searchParams.get("key");
    await once(key, "before-sleep", () => 1);
    await step.sleep("nap", "1s");
    const after = await once(key, "after-sleep", () => 2);
    return json({ slept: true, after });
  }),
  // A step that always fails: its retries run out and the run fails.
  "/api/broken": inngest.endpoint(async (req) => {
    const key = new URL(req.url).searchParams.get("key");
    await once(key, "broken", (n) => {
      throw new Error(`broken on try ${n}`);
    });
    return json({ unreachable: true });
  }),
  // Two steps at once: planned by the SDK, each run by its own call from lockgate.
  "/api/parallel": inngest.endpoint(async (req) => {
    const key = new URL(req.url).searchParams.get("key");
    const [left, right] = await Promise.all([once(key, "left", () => "L"), once(key, "right", () => "R")]);
    return json({ both: left + right });
  }),
  // Waits for an event naming this request's key.
  "/api/approval": inngest.endpoint(async (req) => {
    const key = new URL(req.url).searchParams.get("key");
    await once(key, "ask", () => true);
    const approval = await step.waitForEvent("approval", {
      event: "durable/approved",
      timeout: "60s",
      if: `async.data.key == "${key}"`,
    });
    return json({ by: approval ? approval.data.by : null });
  }),
  // A step that must not be retried: the error reaches the endpoint's code on the next call.
  "/api/doomed": inngest.endpoint(async (req) => {
    const key = new URL(req.url).searchParams.get("key");
    try {
      await once(key, "doomed", () => {
        throw new NonRetriableError("cannot work");
      });
    } catch (err) {
      await once(key, "handled", () => err.message);
      return json({ handled: err.message });
    }
    return json({ handled: null });
  }),
};

const handlers = Object.fromEntries(Object.entries(routes).map(([path, fn]) => [path, fn]));

const server = createEndpointServer(async (req) => {
  const path = new URL(req.url).pathname;
  if (path === "/health") return new Response("ok");
  const handler = handlers[path];
  if (!handler) return new Response("not found", { status: 404 });
  return handler(req);
});
server.listen(Number(process.env.PORT), "127.0.0.1", () => record("listening", { port: process.env.PORT }));
