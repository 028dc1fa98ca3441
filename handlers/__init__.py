"""One module per resource, one function per operationId (``RelativeResolver``).

A handler parses its input, calls ``db/`` and shapes the answer: no SQL, no commit.
"""
