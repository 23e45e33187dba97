"""fabpass reader head: Raspberry Pi Pico (RP2040, MicroPython) + MFRC522 + LEDs + buzzer.

Talks to the agent over USB serial (the board's stdin/stdout). Wiring and
installation: firmware/README.md. Under CPython this module only defines
functions; the hardware is touched when it runs on the board.
"""

import time

import iso14443a
from headloop import Head

# Pico GPIO numbers (GPn), see the wiring table in firmware/README.md.
SPI_ID, SCK, MOSI, MISO, CS, RST = 0, 18, 19, 16, 17, 20
GREEN, RED, AMBER, BUZZER = 13, 14, 15, 12
BUZZER_HZ = 2700
STEP_MS = 10


def make_card_reader():
    from machine import SPI, Pin
    from rc522 import RC522

    spi = SPI(SPI_ID, baudrate=1000000, polarity=0, phase=0, sck=Pin(SCK), mosi=Pin(MOSI), miso=Pin(MISO))
    chip = RC522(spi, Pin(CS, Pin.OUT), Pin(RST, Pin.OUT))
    return lambda: iso14443a.read_uid(chip.transceive)


def make_outputs():
    from machine import PWM, Pin

    leds = [Pin(n, Pin.OUT, value=0) for n in (GREEN, RED, AMBER)]
    buzzer = PWM(Pin(BUZZER))
    buzzer.freq(BUZZER_HZ)

    def show(green, red, amber, buzz):
        for led, on in zip(leds, (green, red, amber)):
            led.value(1 if on else 0)
        buzzer.duty_u16(32768 if buzz else 0)

    return show


def make_serial():
    """Non-blocking reads of, and writes to, the USB serial port."""
    import select
    import sys

    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)

    def read_available():
        data = bytearray()
        while len(data) < 256 and poller.poll(0):
            data.extend(sys.stdin.buffer.read(1))
        return bytes(data)

    def write(line):
        sys.stdout.buffer.write(line)

    return read_available, write


def run():
    read_available, write = make_serial()
    head = Head(make_card_reader(), write, make_outputs())
    now, last = 0, time.ticks_ms()
    while True:
        tick = time.ticks_ms()
        now += time.ticks_diff(tick, last)  # a clock that does not wrap after 12 days as ticks_ms does
        last = tick
        head.step(now, read_available())
        time.sleep_ms(STEP_MS)


def main():
    try:
        run()
    except KeyboardInterrupt:
        raise  # Ctrl-C from mpremote: back to the REPL, to install or debug
    except Exception:  # anything unforeseen: start afresh rather than sit dead at the machine
        import machine

        time.sleep(1)
        machine.reset()


if __name__ == "__main__":
    main()
