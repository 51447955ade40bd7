"""Prompt helpers referenced by the task YAMLs as ``!function alignx.eval.tasks.utils.<name>``.

Ported from lm-eval 0.4.13's stock xcopa / xwinograd / paws-x tasks so that prompts (and scores)
match the harness's own tasks; only the data source differs (local files).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

# --- XCOPA: "<premise without final period> <connector>" + lower-cased choices -----------------
XCOPA_CONNECTORS: dict[str, dict[str, str]] = {
    "et": {"cause": "sest", "effect": "seetõttu"},
    "ht": {"cause": "poukisa", "effect": "donk sa"},
    "id": {"cause": "karena", "effect": "maka"},
    "it": {"cause": "perché", "effect": "quindi"},
    "qu": {"cause": "imataq", "effect": "chaymi"},
    "sw": {"cause": "kwa sababu", "effect": "kwa hiyo"},
    "ta": {"cause": "காரணமாக", "effect": "எனவே"},
    "th": {"cause": "เพราะ", "effect": "ดังนั้น"},
    "tr": {"cause": "çünkü", "effect": "bu yüzden"},
    "vi": {"cause": "bởi vì", "effect": "vì vậy"},
    "zh": {"cause": "因为", "effect": "所以"},
}


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def xcopa_text(doc: dict[str, Any], connector: dict[str, str]) -> str:
    return doc["premise"].strip()[:-1] + f" {connector[doc['question']]}"


def xcopa_choices(doc: dict[str, Any]) -> list[str]:
    return [_lower_first(doc["choice1"]), _lower_first(doc["choice2"])]


xcopa_text_et = partial(xcopa_text, connector=XCOPA_CONNECTORS["et"])
xcopa_text_ht = partial(xcopa_text, connector=XCOPA_CONNECTORS["ht"])
xcopa_text_id = partial(xcopa_text, connector=XCOPA_CONNECTORS["id"])
xcopa_text_it = partial(xcopa_text, connector=XCOPA_CONNECTORS["it"])
xcopa_text_qu = partial(xcopa_text, connector=XCOPA_CONNECTORS["qu"])
xcopa_text_sw = partial(xcopa_text, connector=XCOPA_CONNECTORS["sw"])
xcopa_text_ta = partial(xcopa_text, connector=XCOPA_CONNECTORS["ta"])
xcopa_text_th = partial(xcopa_text, connector=XCOPA_CONNECTORS["th"])
xcopa_text_tr = partial(xcopa_text, connector=XCOPA_CONNECTORS["tr"])
xcopa_text_vi = partial(xcopa_text, connector=XCOPA_CONNECTORS["vi"])
xcopa_text_zh = partial(xcopa_text, connector=XCOPA_CONNECTORS["zh"])


# --- XWinograd: "multiple input" mode, one context per option, shared continuation ----------------
def xwinograd_text(doc: dict[str, Any]) -> int:
    """Index of the correct context (lm-eval's multiple-input convention)."""
    return {"1": 0, "2": 1}[str(doc["answer"])]


def xwinograd_target(doc: dict[str, Any]) -> str:
    idx = doc["sentence"].index("_") + 1
    return doc["sentence"][idx:].strip()


def xwinograd_choices(doc: dict[str, Any]) -> list[str]:
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]


# --- PAWS-X: detokenise, drop the final period of sentence1, lower-case sentence2 ------------------
def _detokenize(text: str) -> str:
    text = text.replace(" n't", "n't").replace(" )", ")").replace("( ", "(").replace('" ', '"').replace(' "', '"')
    return re.sub(r" (['.,])", r"\1", text)


def _pawsx_doc(doc: dict[str, Any]) -> dict[str, Any]:
    s1 = _detokenize(doc["sentence1"]).strip()
    if s1.endswith((".", ",", ";")):
        s1 = s1[:-1]
    return {**doc, "sentence1": s1, "sentence2": _lower_first(_detokenize(doc["sentence2"]).strip())}


def pawsx_process_docs(dataset: Any) -> Any:
    return dataset.filter(lambda d: bool(d["sentence1"]) and bool(d["sentence2"])).map(_pawsx_doc)
