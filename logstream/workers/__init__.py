"""Worker processes: ``pipeline.workers: N`` runs N copies of the pipeline on one host.

- :mod:`.layout`: where each worker keeps its state, and adopting what an earlier
  run with more workers left behind;
- :mod:`.worker`: the worker process (``python -m logstream.workers.worker``);
- :mod:`.aggregate`: one set of metrics summed over the workers;
- :mod:`.supervisor`: starts, watches, restarts and stops the workers.
"""
