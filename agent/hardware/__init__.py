"""Hardware at the edge: readers (initiators) and outputs (actors).

`agent.hardware.factory` chooses real or simulated parts, as gpiozero chooses
a pin factory. Each backend reaches the OS through one thin layer: gpiozero
pins (the relay, LEDs, inputs), spidev (the MFRC522), pyserial (serial
readers and the reader head).
"""
