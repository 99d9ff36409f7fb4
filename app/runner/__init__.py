"""The task runner: claims tasks over HTTP, runs their commands, reports them.

It needs nothing of the service but its API. ``api`` talks to the service; ``worker``
claims and runs tasks, with ``execution`` (one command), ``output`` and ``task_log``
(where its output goes), ``heartbeat`` (the lease while it runs) and ``conventions``
(what the output may ask for); ``reports`` and ``outbox`` deliver the results;
``folder`` is the runner's own folder. ``scripts/agent_runner.py`` is the command line
around them.
"""
