from hoshikage.engine.text_stream import TextAssembler


def feed_all(assembler, pieces):
    return "".join(assembler.feed(piece) for piece in pieces) + assembler.finish()


def test_multibyte_characters_split_across_tokens():
    encoded = "星影".encode()
    assembler = TextAssembler()
    assert assembler.feed(encoded[:2]) == ""
    assert feed_all(assembler, [encoded[2:4], encoded[4:]]) == "星影"


def test_stop_sequence_split_across_tokens_is_held_back_and_cut():
    assembler = TextAssembler(("END",))
    assert assembler.feed(b"hello E") == "hello "
    assert assembler.feed(b"N") == ""
    assert assembler.feed(b"D and more") == ""
    assert assembler.stopped
    assert assembler.finish() == ""


def test_held_back_text_is_released_when_it_is_not_a_stop():
    assembler = TextAssembler(("END",))
    assert assembler.feed(b"E") == ""
    assert assembler.feed(b"X") == "EX"
    assembler = TextAssembler(("END",))
    assembler.feed(b"abc EN")
    assert assembler.finish() == "EN"


def test_earliest_of_several_stops_wins():
    assembler = TextAssembler(("world", "lo"))
    assert feed_all(assembler, [b"hello world"]) == "hel"


def test_no_stops_passes_text_straight_through():
    assembler = TextAssembler()
    assert assembler.feed(b"a") == "a"
    assert assembler.feed(b"b") == "b"
