"""``dlg serve``: the local viewer of saved dialogues, in a browser.

``security`` has who may ask (the access token, the CSRF tokens of the forms) and what
a page may do (its headers); ``views`` works out what a page shows from the store's
records; ``live`` follows the store for the server-sent events; ``pages`` renders;
``listing``, ``dialogue_page``, ``actions`` (its forms, read by ``forms``), ``batches``
and ``routing_page`` are the routes; ``app`` is the Starlette application over them.
Starlette, uvicorn and Jinja are imported here only, when the viewer starts (``pip
install 'dlg-orchestrator[serve]'``).
"""
