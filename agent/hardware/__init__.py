"""Hardware at the edge: readers (initiators) and outputs (actors).

Device logic never touches the OS: it asks a gpiozero pin factory for pins,
and `agent.hardware.factory` chooses real or simulated parts.
"""
