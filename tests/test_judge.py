"""The judge's prompt and how its verdicts are read (prm_builder/sampling/judge.py): exact outputs of pure functions."""

import pytest

from prm_builder.sampling.judge import (
    CUT_WHILE_THINKING,
    DEFAULT_JUDGE_PROMPT_TEMPLATE,
    DROP_CUT_WHILE_THINKING,
    DROP_NO_MAJORITY,
    DROP_TIE,
    DROP_UNPARSABLE,
    UNPARSABLE,
    VerdictSlots,
    check_template,
    labels_from_first_error,
    last_boxed,
    majority,
    parse_verdict,
    render_judge_prompt,
)


def test_prompt_tags_every_step_with_its_index_and_expands_placeholders_once():
    prompt = render_judge_prompt("P: {problem}\nS:\n{steps}", "Why {steps}?", ["a = 1", "b = {problem}"])
    assert prompt == "P: Why {steps}?\nS:\n<step_0>\na = 1\n</step_0>\n\n<step_1>\nb = {problem}\n</step_1>"
    default = render_judge_prompt(DEFAULT_JUDGE_PROMPT_TEMPLATE, "What is 1 + 1?", ["1 + 1 = 2.", "\\boxed{2}"])
    assert "[Problem]\nWhat is 1 + 1?" in default and "<step_1>\n\\boxed{2}\n</step_1>" in default
    assert default.endswith("\\boxed{-1} if every step is correct.")
    with pytest.raises(ValueError, match=r"judge_prompt_template must contain \{problem\} and \{steps\}.*missing \{steps\}"):
        check_template("Judge {problem}")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The first error is in step \\boxed{2}.", 2),
        ("\\boxed{-1}", -1),
        ("\\boxed{ $1$ }", 1),
        ("\\boxed{\\text{0}}", 0),
        ("First \\boxed{0}, no wait: \\boxed{3}", 3),  # the last box counts
        ("<think>maybe \\boxed{0}</think>It is \\boxed{1}", 1),  # thinking is not the answer
        ("Hmm, it is 2</think>\\boxed{2}", 2),  # the prompt opened the thinking
        ("<think>maybe \\boxed{0} but", CUT_WHILE_THINKING),
        ("No step is wrong.", UNPARSABLE),
        ("\\boxed{step 2}", UNPARSABLE),
        ("\\boxed{4}", UNPARSABLE),  # out of range for 4 steps
        ("\\boxed{-2}", UNPARSABLE),
        ("\\boxed{1} then \\boxed{2", 1),  # a box cut off at the end: the one before it
        ("\\boxed{{1}}", UNPARSABLE),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text, 4) == expected


def test_last_boxed_balances_braces():
    assert last_boxed("\\boxed{\\frac{1}{2}} and \\boxed{x^{2}}") == "x^{2}"
    assert last_boxed("nothing") is None


def test_majority_needs_more_than_half_of_the_samples():
    assert majority([2, 2, 1], 3) == 2
    assert majority([2, 1], 2) == DROP_TIE
    assert majority([0, 1, 2], 3) == DROP_TIE
    assert majority([3, 3, 1, 2], 4) == DROP_NO_MAJORITY
    assert majority([-1], 1) == -1


def test_labels_from_first_error():
    assert labels_from_first_error(-1, 3) == [True, True, True]
    assert labels_from_first_error(0, 3) == [False, False, False]
    assert labels_from_first_error(2, 3) == [True, True, False]


def test_verdict_slots_retry_each_unparsable_verdict_then_drop():
    slots = VerdictSlots(samples=2, max_retries=1)
    assert slots.wanted() == 2
    slots.read([UNPARSABLE, 1])  # slot 0: one retry used, then 1
    assert not slots.done and slots.votes == [1] and slots.wanted() == 3
    slots.read([UNPARSABLE, 1, 1])
    assert slots.done and slots.result() == 1

    slots = VerdictSlots(samples=1, max_retries=1)
    slots.read([UNPARSABLE, UNPARSABLE])
    assert slots.done and slots.result() == DROP_UNPARSABLE and slots.consumed == 2

    slots = VerdictSlots(samples=2, max_retries=3)
    slots.read([0, CUT_WHILE_THINKING])  # no retry: the same budget would cut it again
    assert slots.done and slots.result() == DROP_CUT_WHILE_THINKING

    slots = VerdictSlots(samples=2, max_retries=0)
    slots.read([0, 1])
    assert slots.result() == DROP_TIE


def test_thinking_is_switched_off_for_the_policy_and_left_to_the_template_for_a_judge():
    from prm_builder.sampling.backends import render_prompt

    class Template:
        chat_template = "any"

        def apply_chat_template(self, messages, **options):
            self.options = options
            return f"<{messages[0]['content']}>"

    template = Template()
    assert render_prompt(template, "solve", "Step 1", thinking=False) == "<solve>Step 1"
    assert template.options["enable_thinking"] is False
    assert render_prompt(template, "judge", "", thinking=True) == "<judge>"
    assert "enable_thinking" not in template.options
