"""Stand-in ``neopixel`` for the unix port: keeps the pixels; ``write`` calls :data:`on_write`."""

on_write = None


class NeoPixel:
    def __init__(self, pin, n, bpp=3, timing=1):
        self.pin = pin
        self.n = n
        self.pixels = [(0, 0, 0)] * n

    def __len__(self):
        return self.n

    def __setitem__(self, i, v):
        self.pixels[i] = tuple(v)

    def __getitem__(self, i):
        return self.pixels[i]

    def fill(self, v):
        self.pixels = [tuple(v)] * self.n

    def write(self):
        if on_write is not None:
            on_write(self)
