"""An RQ worker for the benchmarks, with the bench pipeline and baseline jobs loaded.

    python bench/_worker.py [--worker-class CLASS] [--queues high ...] [--no-burst]

Sets Django up (same environment as the benchmark that started it: see _setup), imports
``noop_pipeline`` (registers ``BENCH_NOOP5``), ``hostile_pipeline`` and ``bare_jobs``
before working, so this
process and, for a forking worker, every work horse it forks have them, then works the
queues (default: ``high``, ``default``, ``low``) as ``manage.py rqworker`` does, in burst
mode unless ``--no-burst``. CLASS defaults to the one ``manage.py rqworker`` uses
(settings.RQ["WORKER_CLASS"], through django-rq); ``rq.SimpleWorker`` and ``rq.Worker``
are RQ's own.
"""

from __future__ import annotations

import argparse

import _setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker-class", default="")
    parser.add_argument("--queues", nargs="+", default=["high", "default", "low"])
    parser.add_argument("--name", default=None)
    parser.add_argument("--no-burst", action="store_true")
    parser.add_argument("--logging-level", default="WARNING")
    args = parser.parse_args()

    _setup.django_setup()
    import bare_jobs  # noqa: F401 - the baseline jobs, imported once before any fork
    import django_rq
    import hostile_pipeline  # noqa: F401 - registers the hostile_memory pipelines
    import noop_pipeline  # noqa: F401 - registers BENCH_NOOP5 before any stage runs
    from django_rq.utils import reset_db_connections
    from django_rq.workers import get_worker_class
    from rq import Queue

    connection = django_rq.get_connection("high")
    queues = [Queue(name, connection=connection) for name in args.queues]
    worker_class = get_worker_class(args.worker_class or None)
    worker = worker_class(queues, connection=connection, name=args.name)
    reset_db_connections()  # as manage.py rqworker does: nothing shared across a fork
    worker.work(burst=not args.no_burst, logging_level=args.logging_level)


if __name__ == "__main__":
    main()
