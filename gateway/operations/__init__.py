"""The operations the gateway lets through: ``row`` (the record), ``assistants`` (its rows),
``apiversions``, and ``table`` (``OPERATIONS``, ``BY_NAME``, the request-target matcher)."""
