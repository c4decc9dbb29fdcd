"""The mode language: what a mode is, and how one is read, checked and rendered.

``mode`` holds the resolved mode (``Mode``, ``Turn``, ...); ``source`` finds and parses a
document within ``limits``; ``schema`` checks it against the JSON Schema and says what is
wrong in words; ``inherit`` resolves ``extends``; ``loader`` builds the ``Mode`` and
``checks`` its templates; ``cache`` keeps loaded modes; ``templates`` and ``sandbox`` are
the Jinja side; ``convert`` reads the original specification's format.
"""
