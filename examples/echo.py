"""The smallest agent: it answers every ask with the message it got."""

import mesh


class Echo(mesh.Actor):
    def on_message(self, message):
        return message
