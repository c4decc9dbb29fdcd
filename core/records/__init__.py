"""Records of dialogues: the ``Dialogue`` record (``record``), saving and resuming it in a
store plugin (``store``), and exporting it through an exporter plugin (``export``)."""
