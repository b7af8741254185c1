"""Flow control: concurrency, throttle, rate limit, idempotency, debounce, batching, priority,
timeouts and singleton (spec section 5). Config parsing in `config`, creation-time rules in
`admission`, lease-time concurrency in `concurrency`; all state lives in the store."""
