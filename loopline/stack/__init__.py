"""The local development stack: a real Kafka broker (KRaft) and Redis.

>>> from loopline.config.loader import load_settings
>>> stack = Stack(load_settings(env={}))  # nothing runs until .up()

Public API:

* :class:`Stack` -- ``up()``, ``down()``, ``status()``, ``fetch()``, ``shared()``
* :class:`StackStatus`, :class:`ComponentStatus` -- what ``status`` reports
* :func:`ensure_topics`, :func:`delete_topics`, :func:`existing_topics`
* :func:`free_port` -- a free loopback port for a server started beside others
"""

from loopline.stack.component import ComponentStatus
from loopline.stack.ports import free_port
from loopline.stack.stack import Stack, StackStatus
from loopline.stack.topics_admin import delete_topics, ensure_topics, existing_topics

__all__ = [
    "ComponentStatus",
    "Stack",
    "StackStatus",
    "delete_topics",
    "ensure_topics",
    "existing_topics",
    "free_port",
]
