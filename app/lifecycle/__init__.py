"""What happens to a run outside a request, done by the server and the workers alike.

Its state changes (run_states.py), the names of its fine-tuned model, where its files
live, its re-queueing when a worker is lost (orphans.py), the queueing of its webhooks,
and the handle that sends tasks by name. These modules import app.config, app.db,
app.models and core only: the workers import them, never app's routers, pages or services.
"""
