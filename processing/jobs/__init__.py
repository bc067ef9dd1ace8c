"""The job engine: statuses, the lifecycle (the only writer of a job's state), and
what runs it on RQ.

- ``states``: the statuses and the allowed transitions;
- ``lifecycle``: every transition (people's actions and the worker's steps);
- ``statements``: the worker's per-stage steps as single SQL statements;
- ``dispatch``: putting a job's current stage on an RQ queue, after commit;
- ``tasks``: the RQ entry point that runs one stage; ``context``: what a stage gets;
- ``worker``: the RQ worker class; ``estimates``: progress, ETA and queue position.
"""
