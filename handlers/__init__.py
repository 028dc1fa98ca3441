"""One module per resource, one function per operationId (``RelativeResolver("keyplane.handlers")``).

A handler parses its input, calls ``db/`` and shapes the answer: no SQL, no commit.
"""
