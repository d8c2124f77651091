"""An agent with constructor arguments: a spec's ``config`` table becomes ``Ticker(**config)``.

    [[agents]]
    name = "ticker"
    class = "examples.ticker:Ticker"
    config = { interval = 5.0 }
"""

import mesh


class Ticker(mesh.Actor):
    def __init__(self, interval: float = 5.0):   # the keyword arguments of config; self.mesh is not set yet
        self.interval = float(interval)
        self.ticks = 0

    def on_start(self):                          # self.mesh exists from on_start on
        self.mesh.every(self.interval, "tick")

    def on_message(self, message):
        if message == "tick":                    # from the timer
            self.ticks += 1
        return {"ticks": self.ticks, "interval": self.interval}
