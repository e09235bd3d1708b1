"""The outbox's far side: handing committed events to their consumers.

Services write an event row in the transaction that made a change (parley.services.outbox). This
package is the database half of what happens next, free of any task queue:

- consumers.py   what a consumer is (name, event types, handler, kind of work) and the registry
- dispatcher.py  claim undispatched events, hand each to its consumers, mark it dispatched
- receipts.py    run a consumer on an event at most once, in the transaction of its receipt

workers/ wires these to Celery: the dispatcher's `enqueue` publishes one task per consumer and
event, and that task calls `consume_once`.
"""
