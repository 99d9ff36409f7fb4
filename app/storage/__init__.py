"""Where tasks and metric records are kept: the interfaces the services use
(:mod:`app.storage.stores`), the types both backends share, and the backends themselves,
:mod:`app.storage.jsonl` (files on this machine, the default) and
:mod:`app.storage.postgres` (one database for many servers); :mod:`app.storage.backends`
picks one from the settings."""
