// A JS v4 function that streams text to a realtime channel (Content-Type: text/stream), then
// publishes a JSON status with `step.realtime.publish`, using only the official SDK.
"use strict";

const http = require("node:http");
const { Inngest } = require("inngest");
const { realtime } = require("inngest/realtime");
const { serve } = require("inngest/node");

const inngest = new Inngest({ id: "realtime-js" });

const chat = realtime.channel({
  name: (id) => `chat:${id}`,
  topics: { tokens: {}, status: {} },
});

const PIECES = ["Hello", ", stream", "ing ", "wörld", "!"];

const streamer = inngest.createFunction(
  { id: "stream-tokens", triggers: [{ event: "rt/stream" }] },
  async ({ event, step }) => {
    const ch = chat(event.data.id);
    await step.run("stream", async () => {
      const encoder = new TextEncoder();
      const body = new ReadableStream({
        async start(controller) {
          for (const piece of PIECES) {
            controller.enqueue(encoder.encode(piece));
            await new Promise((resolve) => setTimeout(resolve, 30));
          }
          controller.close();
        },
      });
      await inngest.realtime.publish(ch.tokens, body);
      return PIECES.length;
    });
    await step.realtime.publish("announce", ch.status, { done: true, pieces: PIECES.length });
    return { ok: true };
  },
);

const handler = serve({ client: inngest, functions: [streamer] });
http.createServer(handler).listen(Number(process.env.PORT), "127.0.0.1");
