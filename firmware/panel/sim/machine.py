"""Stand-in ``machine`` for the MicroPython unix port (tools/panel-sim and tests only).

Pins hold a level per GPIO; :func:`drive` is the outside world (a contact closing) changing it,
which calls the pin's interrupt handler on a matching edge, as the Pico's hardware does.
"""

_levels = {}
_pins = {}
#: Set by the simulator: whether an OLED answers on I2C.
oled_fitted = True


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        if id not in _levels:
            _levels[id] = 1 if pull == Pin.PULL_UP else 0
        self.handler = None
        self.trigger = 0
        _pins.setdefault(id, []).append(self)

    def value(self, v=None):
        if v is None:
            return _levels[self.id]
        _levels[self.id] = 1 if v else 0
        return None

    def __call__(self, v=None):
        return self.value(v)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, hard=False):
        self.handler = handler
        self.trigger = trigger


def drive(gpio, level):
    """The world sets GPIO ``gpio`` to ``level``; edge interrupts fire like on the chip."""
    old = _levels.get(gpio, 1)
    _levels[gpio] = level
    if old == level:
        return
    edge = Pin.IRQ_RISING if level else Pin.IRQ_FALLING
    for pin in _pins.get(gpio, ()):
        if pin.handler is not None and pin.trigger & edge:
            pin.handler(pin)


def disable_irq():
    return 0


def enable_irq(state):
    return None


class I2C:
    def __init__(self, id, sda=None, scl=None, freq=400000):
        self.id = id

    def scan(self):
        return [0x3C] if oled_fitted else []
