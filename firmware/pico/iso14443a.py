"""ISO 14443-3 type A: wake a card, read its UID through all cascade levels, halt it.

Pure logic over one function, `transceive(data, tx_bits) -> bytes or None`
(tx_bits: valid bits of the last byte sent, 0 for all eight; None: no or a
garbled answer), so it runs under CPython against a card model in the tests.
"""

WUPA = 0x52  # wakes cards that are idle or halted: a held card is read again every poll
HLTA = 0x50
CASCADE_TAG = 0x88
SELECT = (0x93, 0x95, 0x97)  # cascade levels 1, 2, 3: UIDs of 4, 7 and 10 bytes
SAK_UID_INCOMPLETE = 0x04


def crc_a(data) -> bytes:
    """CRC_A of ISO 14443-3 (initial 0x6363, reflected polynomial 0x8408), low byte first."""
    crc = 0x6363
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return bytes((crc & 0xFF, crc >> 8))


def read_uid(transceive):
    """The UID of the one card in the field, or None (no card, two cards, a bad answer)."""
    atqa = transceive(bytes((WUPA,)), 7)
    if atqa is None or len(atqa) != 2:
        return None
    uid = bytearray()
    for level in SELECT:
        answer = transceive(bytes((level, 0x20)), 0)  # anticollision: all 32 UID bits please
        if answer is None or len(answer) != 5:
            return None
        if answer[0] ^ answer[1] ^ answer[2] ^ answer[3] != answer[4]:
            return None  # the BCC does not match
        select = bytes((level, 0x70)) + answer
        sak = transceive(select + crc_a(select), 0)
        if sak is None or len(sak) != 3 or crc_a(sak[:1]) != sak[1:]:
            return None
        if sak[0] & SAK_UID_INCOMPLETE:
            if answer[0] != CASCADE_TAG:
                return None
            uid.extend(answer[1:4])
            continue
        uid.extend(answer[0:4])
        halt(transceive)
        return bytes(uid)
    return None


def halt(transceive):
    """Put the selected card to sleep (it does not answer). WUPA wakes it at the next poll."""
    frame = bytes((HLTA, 0x00))
    transceive(frame + crc_a(frame), 0)
