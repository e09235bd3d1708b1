"""Outbound webhooks' adapters to the outside world; the rules live in parley.services.webhooks
(endpoints) and parley.services.webhook_deliveries (fan-out, claims, retries).

- ssrf.py       which URLs and addresses may be called (checked at registration and every delivery)
- transport.py  the aiohttp client that connects only to the addresses the guard checked
- signing.py    Standard Webhooks v1 signatures
- sender.py     one attempt: sign, POST, read the answer
- engine.py     the per-worker-process delivery loop: claim, send concurrently, record
"""
