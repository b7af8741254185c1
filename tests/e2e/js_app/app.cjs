// A test app served with the official `inngest` JavaScript SDK over plain node:http.
// The SDK itself is installed twice (v3/ and v4/ beside this file); NODE_PATH picks one.
// Every side effect is appended to the ledger file at LEDGER_PATH, one JSON line each,
// so tests can prove a step ran exactly once.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");

const { Inngest, NonRetriableError, RetryAfterError } = require("inngest");
const { serve } = require("inngest/node");

const sdkDir = path.dirname(require.resolve("inngest"));
const SDK_VERSION = JSON.parse(fs.readFileSync(path.join(sdkDir, "package.json"), "utf8")).version;
const MAJOR = Number(SDK_VERSION.split(".")[0]);

function record(kind, fields = {}) {
  const line = JSON.stringify({ kind, token: crypto.randomUUID(), at: Date.now() / 1000, ...fields });
  // One small O_APPEND write per effect: lines from concurrent requests never interleave.
  fs.appendFileSync(process.env.LEDGER_PATH, line + "\n");
}

const inngest = new Inngest({ id: "js-app" });

// v4 moved the trigger into the options object; v3 takes it as the second argument.
function createFunction(options, trigger, handler) {
  if (MAJOR >= 4) {
    return inngest.createFunction({ ...options, triggers: trigger ? [trigger] : [] }, handler);
  }
  return inngest.createFunction(options, trigger, handler);
}

const sleepMs = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const hello = createFunction({ id: "hello" }, { event: "js/hello" }, async ({ event, runId }) => {
  record("hello", { run_id: runId, name: event.data.name });
  return { hello: event.data.name, sdk: MAJOR };
});

const steps = createFunction({ id: "steps" }, { event: "js/steps" }, async ({ event, step, runId }) => {
  const a = await step.run("first", () => {
    record("step", { run_id: runId, step: "first" });
    return event.data.x + 1;
  });
  const b = await step.run("second", () => {
    record("step", { run_id: runId, step: "second" });
    return a * 2;
  });
  const c = await step.run("third", () => {
    record("step", { run_id: runId, step: "third" });
    return { total: a + b };
  });
  return { a, b, c };
});

const flaky = createFunction({ id: "flaky", retries: 3 }, { event: "js/flaky" }, async ({ step, runId, attempt }) => {
  const value = await step.run("flaky-step", () => {
    record("flaky-attempt", { run_id: runId, attempt });
    if (attempt < 2) throw new Error(`transient failure on attempt ${attempt}`);
    return "recovered";
  });
  await step.run("after-flaky", () => record("after-flaky", { run_id: runId }));
  return value;
});

const doomed = createFunction(
  {
    id: "doomed",
    retries: 3,
    onFailure: async ({ event, error, runId }) => {
      record("on-failure", {
        run_id: runId,
        failed_run_id: event.data.run_id,
        function_id: event.data.function_id,
        message: error.message,
      });
    },
  },
  { event: "js/doomed" },
  async ({ step, runId, attempt }) => {
    await step.run("doomed-step", () => {
      record("doomed-attempt", { run_id: runId, attempt });
      throw new NonRetriableError("this cannot work");
    });
  },
);

const sleeper = createFunction({ id: "sleeper" }, { event: "js/sleep" }, async ({ step, runId }) => {
  await step.run("before-sleep", () => record("before-sleep", { run_id: runId, at_ms: Date.now() }));
  await step.sleep("nap", "2s");
  await step.run("after-sleep", () => record("after-sleep", { run_id: runId, at_ms: Date.now() }));
  return "rested";
});

const waiter = createFunction({ id: "waiter" }, { event: "js/wait" }, async ({ event, step, runId }) => {
  await step.run("before-wait", () => record("before-wait", { run_id: runId, id: event.data.id }));
  const approval = await step.waitForEvent("wait-approval", {
    event: "js/approved",
    timeout: event.data.timeout || "30s",
    if: "async.data.id == event.data.id",
  });
  return { approved_by: approval ? approval.data.by : null };
});

const child = createFunction({ id: "child" }, { event: "js/child" }, async ({ event, runId }) => {
  record("child", { run_id: runId, n: event.data.n });
  return { doubled: event.data.n * 2 };
});

const parent = createFunction({ id: "parent" }, { event: "js/parent" }, async ({ event, step }) => {
  const result = await step.invoke("call-child", { function: child, data: { n: event.data.n } });
  return { child: result };
});

const failingChild = createFunction({ id: "failing-child", retries: 0 }, { event: "js/failing-child" }, async () => {
  throw new NonRetriableError("the child gave up");
});

const carefulParent = createFunction({ id: "careful-parent" }, { event: "js/careful-parent" }, async ({ step }) => {
  try {
    await step.invoke("call-failing-child", { function: failingChild, data: {} });
    return { caught: null };
  } catch (err) {
    return { caught: err.message };
  }
});

// cancelOn with `match`: the SDK turns it into `cancel: [{event, if}]` in the sync.
const patient = createFunction(
  { id: "patient", cancelOn: [{ event: "js/stop-patient", match: "data.id" }] },
  { event: "js/patient" },
  async ({ event, step, runId }) => {
    await step.run("start", () => record("patient-start", { run_id: runId, id: event.data.id }));
    await step.sleepUntil("until-later", new Date(Date.now() + (event.data.ms || 1000)));
    await step.run("end", () => record("patient-end", { run_id: runId, id: event.data.id }));
    return "woke";
  },
);

const sender = createFunction({ id: "sender" }, { event: "js/send" }, async ({ event, step }) => {
  const sent = await step.sendEvent("send-hello", { name: "js/hello", data: { name: event.data.name } });
  return sent;
});

const parallel = createFunction({ id: "parallel" }, { event: "js/parallel" }, async ({ step, runId }) => {
  const branch = (name) =>
    step.run(name, async () => {
      record("branch", { run_id: runId, step: name });
      await sleepMs(100);
      return name.toUpperCase();
    });
  const results = await Promise.all([branch("a"), branch("b"), branch("c")]);
  await step.run("joined", () => record("joined", { run_id: runId, results }));
  return results;
});

// v4 marks steps inside `group.parallel` as a race (`opts.parallelMode`), so the server moves on
// after the first; v3 has no groups and gets a discovery after every step anyway (request version 1).
const racer = createFunction({ id: "racer" }, { event: "js/race" }, async ({ step, group, runId }) => {
  const inRaceGroup = group && group.parallel ? (fn) => group.parallel(fn) : (fn) => fn();
  const winner = await inRaceGroup(() => Promise.race([
    step.run("fast", async () => {
      record("race-branch", { run_id: runId, step: "fast" });
      return "fast";
    }),
    step.run("slow", async () => {
      record("race-branch", { run_id: runId, step: "slow" });
      await sleepMs(3000);
      record("slow-done", { run_id: runId });
      return "slow";
    }),
  ]));
  await step.run("after-race", () => record("after-race", { run_id: runId, winner }));
  return winner;
});

// Plenty of retries: the app is down for a moment while the test restarts it.
const durable = createFunction({ id: "durable", retries: 20 }, { event: "js/durable" }, async ({ step, runId, attempt }) => {
  const one = await step.run("one", () => {
    record("durable-one", { run_id: runId });
    return "one done";
  });
  const two = await step.run("two", async () => {
    record("durable-two", { run_id: runId, attempt });
    if (attempt === 0) await sleepMs(60000); // the test kills the app here
    return "two done";
  });
  return [one, two];
});

// Its middle step takes 3 s: time for a test to cancel the run or kill -9 lockgate meanwhile.
const slowMiddle = createFunction({ id: "slow-middle" }, { event: "js/slow-middle" }, async ({ step, runId }) => {
  await step.run("one", () => record("slow-one", { run_id: runId }));
  await step.run("two", async () => {
    record("slow-two", { run_id: runId });
    await sleepMs(3000);
  });
  await step.run("three", () => record("slow-three", { run_id: runId }));
  return "done";
});

// v4 only: checkpoint two steps at a time and hand back to the server (DiscoveryRequest) after
// 1 s, so a six-step run takes a few calls instead of one.
const longSteps = createFunction(
  { id: "long-steps", ...(MAJOR >= 4 ? { checkpointing: { maxRuntime: "1s", bufferedSteps: 2 } } : {}) },
  { event: "js/long-steps" },
  async ({ step, runId }) => {
    const done = [];
    for (let i = 0; i < 6; i++) {
      done.push(await step.run(`part-${i}`, async () => {
        record("part", { run_id: runId, i });
        await sleepMs(400);
        return i;
      }));
    }
    return done;
  },
);

// Two 2.5 MB step results: the call after the sleep is too large to carry its state, so the
// SDK fetches it from /v0/runs/{id}/actions and /batch (use_api).
const big = createFunction({ id: "big" }, { event: "js/big" }, async ({ step, runId }) => {
  const first = await step.run("big-1", () => "a".repeat(2_500_000));
  const second = await step.run("big-2", () => "b".repeat(2_500_000));
  await step.sleep("pause", "1s");
  return await step.run("measure", () => {
    record("big-measure", { run_id: runId });
    return { first: first.length, second: second.length, ends: first.slice(-1) + second.slice(-1) };
  });
});

// Errors thrown by the function itself, outside any step: a plain Error is retried (JS answers
// 500 + X-Inngest-No-Retry: false), a RetryAfterError sets Retry-After in whole seconds.
const fnFlaky = createFunction({ id: "fn-flaky", retries: 3 }, { event: "js/fn-flaky" }, async ({ event, runId, attempt }) => {
  record("fn-attempt", { run_id: runId, attempt, at_ms: Date.now() });
  if (attempt === 0) {
    if (event.data.retryAfter) throw new RetryAfterError("come back later", event.data.retryAfter);
    throw new Error("function-level failure");
  }
  return { attempt };
});

const functions = [hello, steps, flaky, doomed, sleeper, waiter, child, parent, sender, parallel, racer, durable,
  slowMiddle, longSteps, big, fnFlaky, failingChild, carefulParent, patient];
if (process.env.BAD_TRIGGER) {
  // A trigger expression the server refuses: the whole sync must fail with a clear error.
  functions.push(createFunction({ id: "broken" }, { event: "js/broken", if: "event.data.x ==" }, async () => null));
}

const handler = serve({ client: inngest, functions });

const server = http.createServer((req, res) => {
  if (!req.url.startsWith("/api/inngest")) {
    res.writeHead(404).end();
    return;
  }
  if (req.method === "POST") {
    // One line per execution request lockgate makes, to count round trips per run.
    const stepId = new URL(req.url, "http://app").searchParams.get("stepId");
    record("request", { run_id: req.headers["x-run-id"], step_id: stepId });
  }
  return handler(req, res);
});

server.listen(Number(process.env.PORT), "127.0.0.1", () => {
  console.log(`js app (inngest ${SDK_VERSION}) listening on ${process.env.PORT}`);
});

process.on("SIGTERM", () => server.close(() => process.exit(0)));
