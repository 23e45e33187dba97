"""A register-level driver for the NXP MFRC522 on SPI: just enough for ISO 14443 A
reads (`transceive`); the card logic is in iso14443a.py.

`spi` is a machine.SPI (mode 0, up to 10 MHz), `cs` and `rst` machine.Pin outputs.
"""

import time

COMMAND = 0x01
COM_IRQ = 0x04
ERROR = 0x06
FIFO_DATA = 0x09
FIFO_LEVEL = 0x0A
BIT_FRAMING = 0x0D
MODE = 0x11
TX_CONTROL = 0x14
TX_ASK = 0x15
T_MODE = 0x2A
T_PRESCALER = 0x2B
T_RELOAD_H = 0x2C
T_RELOAD_L = 0x2D
VERSION = 0x37

IDLE = 0x00
TRANSCEIVE = 0x0C
SOFT_RESET = 0x0F

IRQ_RX_IDLE = 0x30  # RxIRq | IdleIRq
IRQ_TIMER = 0x01
ERRORS = 0x1B  # BufferOvfl | CollErr | ParityErr | ProtocolErr
START_SEND = 0x80
MAX_IRQ_POLLS = 500  # a bound in case the chip stops answering (the timer stops a read after 25 ms)


class RC522:
    def __init__(self, spi, cs, rst):
        self.spi, self.cs, self.rst = spi, cs, rst
        self.cs.value(1)
        self.reset()

    def _write(self, reg, data):
        self.cs.value(0)
        try:
            self.spi.write(bytes((reg << 1,)) + bytes(data))
        finally:
            self.cs.value(1)

    def _read(self, reg):
        self.cs.value(0)
        try:
            self.spi.write(bytes((0x80 | (reg << 1),)))
            return self.spi.read(1)[0]
        finally:
            self.cs.value(1)

    def _set(self, reg, mask, on):
        value = self._read(reg)
        self._write(reg, (value | mask if on else value & ~mask & 0xFF,))

    def reset(self):
        """Hard and soft reset, then: a 25 ms receive timeout, 100 % ASK, CRC preset 0x6363, antenna on."""
        self.rst.value(0)
        time.sleep(0.01)
        self.rst.value(1)
        time.sleep(0.05)
        self._write(COMMAND, (SOFT_RESET,))
        time.sleep(0.05)
        self._write(T_MODE, (0x80,))  # the timer starts when a transmission ends
        self._write(T_PRESCALER, (0xA9,))  # 13.56 MHz / (2 * 169 + 1) = 40 kHz
        self._write(T_RELOAD_H, (0x03,))
        self._write(T_RELOAD_L, (0xE8,))  # 1000 ticks: 25 ms
        self._write(TX_ASK, (0x40,))
        self._write(MODE, (0x3D,))
        self._set(TX_CONTROL, 0x03, True)

    def version(self):
        """0x91 or 0x92 for a genuine MFRC522, 0x88 for some clones; 0x00 or 0xFF: nothing on the bus."""
        return self._read(VERSION)

    def transceive(self, data, tx_bits=0):
        """Send `data` to the card and return its answer, or None (no answer, an error)."""
        self._write(COMMAND, (IDLE,))
        self._write(COM_IRQ, (0x7F,))
        self._write(FIFO_LEVEL, (0x80,))  # flush the FIFO
        self._write(FIFO_DATA, data)
        self._write(BIT_FRAMING, (tx_bits & 0x07,))
        self._write(COMMAND, (TRANSCEIVE,))
        self._set(BIT_FRAMING, START_SEND, True)
        try:
            for _ in range(MAX_IRQ_POLLS):
                irq = self._read(COM_IRQ)
                if irq & IRQ_RX_IDLE:
                    break
                if irq & IRQ_TIMER:
                    return None
            else:
                return None
        finally:
            self._set(BIT_FRAMING, START_SEND, False)
        if self._read(ERROR) & ERRORS:
            return None
        return bytes([self._read(FIFO_DATA) for _ in range(self._read(FIFO_LEVEL))])
