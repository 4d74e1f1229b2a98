"""What the server and the workers share: torch-free, importing neither app nor worker.

The run config, dataset formats, the schedule arithmetic, the shapes of the events the
worker records, the model catalog, and the Celery app's name, queues and task names.
"""
