"""The benchmark's functions served by a Connect worker (official SDK, `inngest.connect`), app `bench-connect`."""

from __future__ import annotations

import asyncio

import inngest
from inngest.connect import connect

from tests.e2e.apps.common_functions import noop_and_steps

client = inngest.Inngest(app_id="bench-connect", is_production=False)

if __name__ == "__main__":
    asyncio.run(connect([(client, noop_and_steps(client, "bench-connect"))], instance_id="bench").start())
