"""The outbox's far side: handing committed events to their consumers.

Services write an event row in the transaction that made a change (parley.services.outbox). This
package is the database half of what happens next, free of any task queue:

- consumers.py   what a consumer is (name, event types, handler, after-commit step, kind of work)
                 and the registry
- dispatcher.py  claim undispatched events, hand them to their consumers in batches, mark them
                 dispatched; re-dispatch what a lost task left without a receipt
- receipts.py    run a consumer on a batch of events, each at most once, in the transaction of
                 their receipts

workers/ wires these to Celery: the dispatcher's `enqueue` publishes one task per consumer and
batch (parley.consume_events), and that task calls `consume_batch`.
"""
