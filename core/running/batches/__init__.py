"""Batches: one mode run on many inputs, resumable as a whole.

``items`` (a row's dialogue and the batch's result), ``saved`` (a saved batch read back),
``cost`` (a batch's ``max_total_cost``), ``run`` (running one: ``dlg batch``, the local
executor) and ``export`` (a batch's results in one document, its status, deleting it).
Each imports only those before it in this list. The package imports none of them:
``import dlg`` loads what a run needs, no more.
"""
