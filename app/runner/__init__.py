"""The task runner: claims tasks over HTTP, runs their commands, reports them.

It needs nothing of the service but its API, and imports nothing of it: it is installed
without the service's dependencies (only ``requests``), and what it shares with the
service is in :mod:`app.api_limits` and :mod:`app.shared_settings`. ``api`` talks to the
service, and ``identity`` names the runner to it; ``worker`` claims and runs tasks, with
``execution`` (one command), ``processes`` and ``running`` (all it starts, stopped with
it or with the runner), ``output`` and ``task_log`` (where its output goes),
``heartbeat`` (the lease while it runs, and requests to cancel), ``conventions`` (what
the output and the exit status may ask for), ``usage`` (what the output says the task
used) and ``outcome`` (how a run ended: the final report); ``reports`` and ``outbox``
deliver the results; ``folder`` is the runner's own folder and ``settings`` what it reads from the
environment. ``cli`` is the command line around them (``agent-runner``, or
``scripts/agent_runner.py`` in the project).
"""
