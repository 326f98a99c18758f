"""Fine-tuning a pretrained GPT, for classification and for instructions (chapter 5).

Pretraining (chapter 4) gives a model that continues text. Fine-tuning adapts it to
one job with a small labelled data set. Read the modules in this order:

* ``shared``      the padding id, a seeded split and the training loop both jobs use
                  (``finetune`` takes the loss as an argument)
* ``spam``        the SMS Spam Collection, balanced, split and padded
* ``baselines``   chapter 1's digit rule and a bag-of-words logistic regression, to
                  measure the fine-tuned classifier against
* ``classifier``  a ``num_classes``-way head in place of the vocabulary-sized one, most
                  of the network frozen, trained on each message's last real token
* ``instruct``    instruction/response pairs in the Alpaca prompt format, padded and
                  masked by a collate function, trained with the pretraining loss;
                  responses generated for held-out instructions
* ``rouge``       ROUGE-L F1 of a response against the reference answer
* ``judge``       scores from a larger model over HTTP (Ollama's chat API)

Every public name is also importable from ``llmcourse.finetune`` itself (the book
writes ``from llmcourse import finetune as ft``).
"""
# IGNORE_INDEX: the target value the losses skip, instruction_collate's default.
from ..model import IGNORE_INDEX
from .baselines import BagOfWords, accuracy, digit_rule, words
from .classifier import (
    add_classification_head,
    check_pad_id,
    classification_accuracy,
    classification_loss,
    classify,
    freeze_for_finetuning,
    last_token_logits,
    load_classifier,
    save_classifier,
)
from .instruct import (
    ALPACA_PREAMBLE,
    InstructionDataset,
    check_instruction_record,
    format_instruction,
    format_prompt,
    generate_responses,
    instruction_collate,
    instruction_dataloader,
    instruction_loss,
    instruction_splits,
    load_instruction_data,
    save_responses,
)
from .judge import judge_prompt, judge_responses, ollama_chat
from .rouge import lcs_length, mean_rouge_l, rouge_l_f1
from .shared import PAD_ID, LossFn, evaluate_loss, finetune, seeded_split
from .spam import (
    SPAM_LABELS,
    ClassificationDataset,
    balance_classes,
    load_sms_spam,
    spam_dataloaders,
    spam_splits,
)

__all__ = [
    "ALPACA_PREAMBLE",
    "BagOfWords",
    "ClassificationDataset",
    "IGNORE_INDEX",
    "InstructionDataset",
    "LossFn",
    "PAD_ID",
    "SPAM_LABELS",
    "accuracy",
    "add_classification_head",
    "balance_classes",
    "check_instruction_record",
    "check_pad_id",
    "classification_accuracy",
    "classification_loss",
    "classify",
    "digit_rule",
    "evaluate_loss",
    "finetune",
    "format_instruction",
    "format_prompt",
    "freeze_for_finetuning",
    "generate_responses",
    "instruction_collate",
    "instruction_dataloader",
    "instruction_loss",
    "instruction_splits",
    "judge_prompt",
    "judge_responses",
    "last_token_logits",
    "lcs_length",
    "load_classifier",
    "load_instruction_data",
    "load_sms_spam",
    "mean_rouge_l",
    "ollama_chat",
    "rouge_l_f1",
    "save_classifier",
    "save_responses",
    "seeded_split",
    "spam_dataloaders",
    "spam_splits",
    "words",
]
