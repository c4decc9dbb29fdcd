"""``dlg serve``: the local viewer of saved dialogues, in a browser.

``security`` has who may ask (the access token, the CSRF tokens of the forms) and what
a page may do (its headers); ``views`` works out what a page shows from the store's
records; ``live`` follows a dialogue's saved turns for the server-sent events; ``app``
is the Starlette application. Starlette, uvicorn and Jinja are imported here only, when
the viewer starts (``pip install 'dlg-orchestrator[serve]'``).
"""
