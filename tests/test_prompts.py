"""Prompt layout, history windowing and caps, the positive switch, SID parsing, chat templates."""
import pandas as pd
import pytest

from conrec_lib.llm import prompts

DAY = prompts.SECONDS_PER_DAY
CUTOFF = 10 * DAY


def sid_of(item: int) -> str:
    return f"<a_{item}><b_{item % 3}><c_0>"


def title_of(item: int) -> str:
    return f"title {item}"


def _history() -> pd.DataFrame:
    """Negatives 0..5 (days 2..7), positives 100..103 (days 1..4), an exposure, rows at/after the cutoff."""
    rows = [(i, (2 + i) * DAY, "negative") for i in range(6)]
    rows += [(100 + i, (1 + i) * DAY + 5, "positive") for i in range(4)]
    rows += [(50, 8 * DAY, "exposure"), (60, CUTOFF, "negative"), (61, CUTOFF + DAY, "positive")]
    df = pd.DataFrame(rows, columns=["item_id", "timestamp", "feedback"])
    df["day"] = df["timestamp"] // DAY
    return df.sample(frac=1.0, random_state=0)  # time order must come from the timestamps


def test_sections_follow_include_positives():
    neg, pos = ["<a_1><b_1><c_0>"], ["<a_99><b_0><c_0>"]
    with_pos = prompts.build_prompt(neg, pos, prompts.PromptConfig(include_positives=True))
    assert with_pos.index(prompts.POSITIVE_HEADER) < with_pos.index(prompts.NEGATIVE_HEADER)
    assert "<a_99>" in with_pos
    without = prompts.build_prompt(neg, pos, prompts.PromptConfig(include_positives=False))
    assert prompts.POSITIVE_HEADER not in without
    assert "<a_99>" not in without
    assert without.endswith(prompts.INSTRUCTION + "\n")


def test_empty_negative_history_is_written_as_none():
    text = prompts.build_prompt([], [], prompts.PromptConfig())
    assert text == f"{prompts.NEGATIVE_HEADER}\n{prompts.EMPTY_SECTION}\n\n{prompts.INSTRUCTION}\n"


def test_render_history_keeps_time_order_and_drops_future_and_exposures():
    cfg = prompts.PromptConfig(include_positives=True)
    hist = prompts.render_history(_history(), CUTOFF, sid_of, None, cfg)
    assert hist.negatives == [sid_of(i) for i in range(6)]
    assert hist.positives == [sid_of(100 + i) for i in range(4)]


def test_window_drops_old_items():
    cfg = prompts.PromptConfig(window_days=3, include_positives=True)  # keeps days 7, 8, 9
    hist = prompts.render_history(_history(), CUTOFF, sid_of, None, cfg)
    assert hist.negatives == [sid_of(5)]  # negative 5 is on day 7; 4 on day 6 is too old
    assert hist.positives == []


def test_caps_keep_the_most_recent():
    cfg = prompts.PromptConfig(max_negatives=2, max_positives=3, include_positives=True)
    hist = prompts.render_history(_history(), CUTOFF, sid_of, None, cfg)
    assert hist.negatives == [sid_of(4), sid_of(5)]
    assert hist.positives == [sid_of(101), sid_of(102), sid_of(103)]
    text = prompts.build_prompt([sid_of(i) for i in range(6)], [], cfg)  # build_prompt caps too
    assert sid_of(3) not in text and sid_of(4) in text and sid_of(5) in text


def test_no_positive_text_leaks_when_positives_are_off():
    cfg = prompts.PromptConfig(include_positives=False, item_format="sid+title")
    hist = prompts.render_history(_history(), CUTOFF, sid_of, title_of, cfg)
    assert hist.positives == []
    text = prompts.build_prompt(*hist, cfg)
    for item in range(100, 104):
        assert f"<a_{item}>" not in text and f"title {item}" not in text
    assert "title 5" in text


def test_sid_plus_title_needs_title_of():
    cfg = prompts.PromptConfig(item_format="sid+title")
    assert prompts.render_item(4, sid_of, title_of, cfg) == "<a_4><b_1><c_0> title 4"
    with pytest.raises(ValueError, match="title_of"):
        prompts.render_history(_history(), CUTOFF, sid_of, None, cfg)


def test_render_history_names_missing_columns():
    with pytest.raises(ValueError, match="timestamp"):
        prompts.render_history(pd.DataFrame({"item_id": [1], "feedback": ["negative"]}), CUTOFF,
                               sid_of, None, prompts.PromptConfig())


def test_config_validation():
    with pytest.raises(ValueError, match="window_days"):
        prompts.PromptConfig(window_days=0)
    with pytest.raises(ValueError, match="max_negatives"):
        prompts.PromptConfig(max_negatives=0)
    with pytest.raises(ValueError, match="item_format"):
        prompts.PromptConfig(item_format="title")


@pytest.mark.parametrize("sid", ["<a_5><b_2><c_9><d_0>", "<a_0><b_12><c_255>", "<a_7>"])
def test_completion_parse_round_trip(sid):
    assert prompts.parse_completion(prompts.completion(sid)) == sid
    assert prompts.parse_completion(f"Answer: {sid} and more text <a_1><b_1>") == sid
    assert prompts.parse_completion(prompts.completion(sid), valid={sid}) == sid


@pytest.mark.parametrize("text", ["", "no sid here", "<b_2><c_3>", "<a_x><b_2>", "<a_1 ><b_2>"])
def test_parse_completion_none_on_garbage(text):
    assert prompts.parse_completion(text) is None


def test_parse_completion_stops_at_a_broken_level_order_and_checks_validity():
    assert prompts.parse_completion("<a_1><c_2><d_3>") == "<a_1>"
    assert prompts.parse_completion("<a_1><b_2>", valid={"<a_1><b_2><c_3>"}) is None
    with pytest.raises(ValueError, match="not a SID"):
        prompts.completion("<a_1> ")


class _StubTokenizer:
    chat_template = "stub"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def test_apply_chat_with_a_stub_tokenizer():
    cfg = prompts.PromptConfig(chat_template=True)
    text = prompts.build_prompt(["<a_1>"], [], cfg, tokenizer=_StubTokenizer())
    assert text.startswith("<user>" + prompts.NEGATIVE_HEADER)
    assert text.endswith(prompts.INSTRUCTION + "</user><assistant>")
    with pytest.raises(ValueError, match="tokenizer"):
        prompts.build_prompt(["<a_1>"], [], cfg)


def test_apply_chat_with_a_real_hf_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    hf.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    assert prompts.apply_chat(hf, "hello\n") == "<|user|>\nhello\n<|assistant|>\n"
    hf.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        prompts.apply_chat(hf, "hello")
