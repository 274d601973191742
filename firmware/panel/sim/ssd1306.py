"""Stand-in ``ssd1306`` for the unix port: a real framebuf, plus the text drawn on each 8-px row.

``show`` calls :data:`on_show` with the driver, whose ``rows`` hold the text lines.
"""

import framebuf

on_show = None


class SSD1306_I2C(framebuf.FrameBuffer):
    def __init__(self, width, height, i2c, addr=0x3C, external_vcc=False):
        self.width = width
        self.height = height
        self.buffer = bytearray(width * height // 8)
        super().__init__(self.buffer, width, height, framebuf.MONO_VLSB)
        self.rows = [""] * (height // 8)

    def fill(self, c):
        super().fill(c)
        self.rows = [""] * (self.height // 8)

    def text(self, s, x, y, c=1):
        super().text(s, x, y, c)
        row = y // 8
        if 0 <= row < len(self.rows):
            self.rows[row] = s

    def lit(self):
        """How many pixels are on (the framebuffer really was drawn)."""
        return sum(bin(b).count("1") for b in self.buffer)

    def show(self):
        if on_show is not None:
            on_show(self)

    def poweroff(self):
        pass

    def contrast(self, contrast):
        pass
