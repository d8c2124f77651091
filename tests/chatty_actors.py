"""Actors whose module sets the root logger's level as it is imported (a preloaded module that
sets up logging: it keeps its level in forked and spawned agents alike)."""

import logging

import mesh

logging.getLogger().setLevel(logging.DEBUG)


class Chatty(mesh.Actor):
    """Logs every {"log": TEXT, "level": NAME} on logger "chatty"."""

    def on_message(self, message):
        logging.getLogger("chatty").log(logging.getLevelName(message.get("level", "INFO")), message["log"])
        return "logged"
