"""Live updates: every change of a job reaches the pages and integrators over websockets.

The path of one change::

    lifecycle (after commit) ── notices.announce ──▶ Redis PUBLISH  (≈0.1 ms, any process)
                                                        │
    relay (one process: manage.py live_relay) ◀─ SUBSCRIBE, coalesce progress per job
        │  messages.build_update / build_summary, on a few threads: load the jobs (or
        │  the matter's summary), render the same fragments the pages render, and the
        │  JSON of the event feed
        ▼
    channel layer group_send("matter-<id>") ──▶ consumers (daphne) ──▶ browsers, integrators

- ``notices``: what the lifecycle announces, cheaply, from any process (a forked
  work horse too: a channel-layer send costs it 5-10 ms, a PUBLISH 0.1 ms);
- ``relay``: turns notices into pushes, one render per change for all clients;
- ``messages``: group names and what a push carries (one place);
- ``consumers``, ``routing``, ``auth``: the two websockets and who may open them.

A lost push costs freshness, never correctness: every push carries the job's
whole current state, and the pages poll while their socket is down.
"""
