"""Events on named topics: ``self.mesh.publish(topic, data)`` and ``self.mesh.subscribe(topic)``.

Events ride PUB/SUB: ``publish`` sends an EVENT envelope once, to the publisher's node's
forwarder, which fans it out to the subscribers of its topic (see
:mod:`mesh.runtime.broadcast`); the subscriber's ``on_event(event)`` hook runs with a
:class:`Event`. A subscription is also listed as ``$subs/TOPIC/ACTOR`` in the shared
state, written by the subscriber's node (so any node knows every subscriber). Events are fire-and-forget, like
tells, and carry an id and a correlation id (``corr``: the id of the event or
message they answer, for the playbook's request/response over topics).

The playbook's message types are ready-made topic names: :data:`DISCOVERY`,
:data:`REQUEST`, :data:`ALERT`, :data:`COMPLETE`, :data:`HELP`.
"""

from __future__ import annotations

from dataclasses import dataclass

DISCOVERY = "DISCOVERY"  #: "found something relevant"
REQUEST = "REQUEST"  #: "need someone with skill X"
ALERT = "ALERT"  #: "something's wrong"
COMPLETE = "COMPLETE"  #: "finished my part"
HELP = "HELP"  #: "stuck, need assistance"
PLAYBOOK_TOPICS = (DISCOVERY, REQUEST, ALERT, COMPLETE, HELP)

SUBS_PREFIX = "$subs/"
CACHE_S = 1.0  #: seconds a publisher reuses the subscriber list of a topic


@dataclass(frozen=True)
class Event:
    topic: str
    data: object
    id: str  #: unique: "PUBLISHER:N"
    corr: str | None  #: the id this event answers, if any
    sender: str  #: the publisher


def check_topic(topic: object) -> str:
    if not isinstance(topic, str) or not topic or len(topic) > 200 or "/" in topic:
        raise ValueError(f"a topic is a non-empty string of at most 200 characters without '/', not {topic!r:.60}")
    return topic
