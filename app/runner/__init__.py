"""The task runner: claims pending tasks over HTTP, runs their commands, reports them.

``api`` talks to the service, ``execution`` runs one command, ``worker`` ties them
together; ``scripts/agent_runner.py`` is the command line around them.
"""
