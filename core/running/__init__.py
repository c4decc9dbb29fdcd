"""Running dialogues: the ``Orchestrator`` (``api``, with ``resume``) prepares, the
``kernel`` runs, ``events`` calls plugins and observers, ``routing`` asks the router,
``budget`` keeps a dialogue within ``max_cost``, ``learning`` keeps quality scores,
``structured`` parses structured answers, ``stopping`` ends a dialogue early,
``compression`` trims what a turn reads, ``inputs`` checks what the user gave, and
``chat`` serves one model outside a dialogue."""
