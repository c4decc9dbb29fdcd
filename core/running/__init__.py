"""Running dialogues: the ``Orchestrator`` (``api``) prepares, the ``kernel`` runs,
``events`` calls plugins and observers, ``routing`` asks the router, ``inputs`` checks
what the user gave, and ``chat`` serves one model outside a dialogue."""
