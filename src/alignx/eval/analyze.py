"""``alignx analyze``: layer-by-layer cross-lingual alignment of a model's sentence representations.

Reads parallel sentences (JSONL ``{"src","tgt","src_lang","tgt_lang"}``) that pair each language with a
pivot (default English), encodes every sentence once at every layer, and measures per layer and
language: MEXA against the pivot, translation-pair vs random-pair cosine, retrieval top-1 both ways and
(optionally) linear CKA. Writes ``analysis.json`` and PNG plots, and recommends the layer where pivot
alignment peaks in the middle of the network (the natural ``loss.align_layer``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignx import languages
from alignx.config import ConfigError, ModelConfig, opt, section
from alignx.eval.alignment import (
    POOLINGS,
    center_rows,
    cosine_matrix,
    encode_poolings,
    linear_cka,
    mexa_score,
    pair_metrics,
    standardize_rows,
)
from alignx.model import load as mload
from alignx.utils import environment, output_lock, write_json

# pivot sentence -> its translation, per language
PairsByLang = dict[str, list[tuple[str, str]]]
CENTERINGS = ("raw", "centred", "standardised")


def variant_name(pooling: str, centering: str) -> str:
    """Key of a pooling x centring variant in analysis.json's ``pooling`` section: mean, mean_centred, ..."""
    return pooling if centering == "raw" else f"{pooling}_{centering}"


@dataclass
class AnalyzeConfig:
    model: ModelConfig = section(ModelConfig, "model to analyse")
    parallel: list[str] = opt([], "parallel .jsonl files {src,tgt,src_lang,tgt_lang}; rows pairing a language with the pivot are used")
    pivot: str = opt("en", "pivot language every other language is compared with (MEXA uses English)")
    languages: list[str] = opt([], "languages to analyse (empty: every language paired with the pivot in the files)")
    max_sentences: int = opt(200, "pairs per language (sentences shared by many languages are taken first)")
    min_sentences: int = opt(10, "skip a language with fewer pairs than this (MEXA of tiny sets is noise)")
    pooling: list[str] = opt(["mean", "last"], "sentence poolings: mean (non-special tokens) | last (last token); the first one drives the recommendation and plots")
    centering: list[str] = opt(
        ["raw"],
        "raw: cosine of the states as they are (MEXA as published) | centred: subtract the mean sentence state of the "
        "analysed set per layer first (reported as '<pooling>_centred') | standardised: also divide each dimension by its "
        "standard deviation over the set ('<pooling>_standardised'; for models with rogue dimensions, e.g. SmolLM2)",
    )
    batch_size: int = opt(16, "sentences per forward pass")
    max_length: int = opt(128, "truncate sentences to this many tokens")
    heatmap_layer: int = opt(-1, "hidden_states index for the language x language matrix and PCA plot (-1: recommended layer)")
    middle_band: list[float] = opt([0.25, 0.75], "the recommendation is restricted to layers in [lo*L, hi*L] (L = decoder layers)")
    with_cka: bool = opt(False, "also compute linear CKA per layer")
    plots: bool = opt(True, "write PNG plots next to analysis.json")
    device: str = opt("auto", "auto (cuda when available and the model is on CPU) | cpu | cuda | cuda:N")
    output_dir: str = opt("runs/analysis", "where analysis.json and the plots are written")
    run_name: str = opt("", "name of this run in reports (empty: the output directory's name)")
    seed: int = opt(0, "seed for choosing sentences")

    def __post_init__(self) -> None:
        for p in self.pooling:
            if p not in POOLINGS:
                raise ConfigError(f"pooling must be among {', '.join(POOLINGS)}, got {p!r}")
        if not self.pooling:
            raise ConfigError("pooling: give at least one of mean, last")
        if not self.centering or any(c not in CENTERINGS for c in self.centering):
            raise ConfigError(f"centering must be a non-empty list of {', '.join(CENTERINGS)}, got {self.centering}")
        if self.max_sentences < 2 or self.min_sentences < 2:
            raise ConfigError("max_sentences and min_sentences must be >= 2 (MEXA needs candidates to rank)")
        if self.batch_size <= 0 or self.max_length <= 0:
            raise ConfigError("batch_size and max_length must be positive")
        if len(self.middle_band) != 2 or not 0 <= self.middle_band[0] <= self.middle_band[1] <= 1:
            raise ConfigError(f"middle_band must be [lo, hi] with 0 <= lo <= hi <= 1, got {self.middle_band}")
        try:
            self.pivot = languages.normalize(self.pivot)
            self.languages = [languages.normalize(c) for c in self.languages]
        except ValueError as e:
            raise ConfigError(str(e)) from None


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def read_pivot_pairs(paths: list[str], pivot: str) -> PairsByLang:
    """Pairs (pivot sentence, translation) per language from parallel sources (any format alignx.data.readers reads), in file order.

    Rows whose languages do not include the pivot are ignored; either side may be the pivot.
    Duplicate pivot sentences keep their first translation (duplicates would tie in MEXA).
    """
    from alignx.data.readers import DataError, read_parallel

    out: dict[str, dict[str, str]] = defaultdict(dict)
    seen_tr: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        p = Path(path)
        try:
            rows = read_parallel(p)  # one reader for every format; errors name file:line
        except DataError as e:
            raise ConfigError(str(e)) from None
        for row in rows:
            sl, tl, src, tgt = row.src_lang, row.tgt_lang, row.src, row.tgt
            if sl == tl:
                continue
            if sl == pivot:
                lang, piv, tr = tl, src, tgt
            elif tl == pivot:
                lang, piv, tr = sl, tgt, src
            else:
                continue
            if piv not in out[lang] and tr not in seen_tr[lang]:
                out[lang][piv] = tr
                seen_tr[lang].add(tr)
    return {lang: list(d.items()) for lang, d in out.items()}


def select_pairs(pairs: PairsByLang, langs: list[str], max_sentences: int, seed: int) -> PairsByLang:
    """At most ``max_sentences`` pairs per language, preferring pivot sentences translated into many
    of ``langs`` so the language x language matrix has shared sentences to compare."""
    coverage: dict[str, int] = defaultdict(int)
    for lang in langs:
        for piv, _ in pairs.get(lang, []):
            coverage[piv] += 1
    rng = random.Random(seed)
    tiebreak = {piv: rng.random() for piv in sorted(coverage)}
    return {
        lang: sorted(pairs.get(lang, []), key=lambda pt: (-coverage[pt[0]], tiebreak[pt[0]]))[:max_sentences]
        for lang in langs
    }


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------


def middle_layers(num_layers: int, band: tuple[float, float] | list[float] = (0.25, 0.75)) -> tuple[int, int]:
    """Inclusive range of hidden_states indices in the middle band, never the embeddings (0) nor,
    when the model has more than one layer, the last layer."""
    lo = max(1, math.ceil(band[0] * num_layers))
    hi = min(max(num_layers - 1, 1), math.floor(band[1] * num_layers))
    return lo, max(lo, hi)


def recommend_layer(mexa_mean: list[float], num_layers: int, band: tuple[float, float] | list[float] = (0.25, 0.75)) -> dict[str, Any]:
    """Layer maximising mean MEXA within the middle band (first one on ties), plus the global argmax."""
    lo, hi = middle_layers(num_layers, band)
    vals = [(-1.0 if math.isnan(v) else v) for v in mexa_mean]
    best = max(range(lo, min(hi, len(vals) - 1) + 1), key=lambda k: (vals[k], -k))
    glob = max(range(len(vals)), key=lambda k: (vals[k], -k))
    return {"layer": best, "value": mexa_mean[best], "band": [lo, hi], "global_layer": glob, "global_value": mexa_mean[glob]}


def _digest(pairs: list[tuple[str, str]]) -> str:
    """Short hash of the ordered pairs: two analyses can be compared item by item only when it matches."""
    return hashlib.blake2b("\x1e".join(f"{a}\x1f{b}" for a, b in pairs).encode(), digest_size=8).hexdigest()


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def analyze_model(model: torch.nn.Module, tokenizer: Any, pairs_by_lang: PairsByLang, cfg: AnalyzeConfig) -> dict[str, Any]:
    """Compute every metric, write ``<cfg.output_dir>/analysis.json`` (+ plots) and return the result.

    pairs_by_lang: {language: [(pivot sentence, translation), ...]} (already selected/capped).
    """
    langs = [lang for lang in pairs_by_lang if lang != cfg.pivot and len(pairs_by_lang[lang]) >= 2]
    if not langs:
        raise ConfigError(f"no language has at least 2 pairs with the pivot {cfg.pivot!r}")
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Encode every distinct sentence once, in one pass serving all poolings.
    texts: list[str] = []
    index: dict[str, int] = {}
    for lang in langs:
        for piv, tr in pairs_by_lang[lang]:
            for s in (piv, tr):
                if s not in index:
                    index[s] = len(texts)
                    texts.append(s)
    with mload.inference_autocast(model, cfg.model):  # bf16 where the device computes it natively (model.autocast)
        states = encode_poolings(
            model, tokenizer, texts, cfg.pooling, batch_size=cfg.batch_size, max_length=cfg.max_length, desc="analyze: encode"
        )  # {pooling: [L+1, S, H]}
    n_states = next(iter(states.values())).shape[0]
    num_layers = n_states - 1
    transform = {"raw": lambda st: st, "centred": center_rows, "standardised": standardize_rows}
    variants = {variant_name(p, c): transform[c](st) for p, st in states.items() for c in cfg.centering}

    def rows(lang: str, side: int) -> list[int]:
        return [index[pair[side]] for pair in pairs_by_lang[lang]]

    per_pooling: dict[str, Any] = {}
    for pooling, st in variants.items():
        res: dict[str, dict[str, list[Any]]] = {
            k: {} for k in ("mexa", "mexa_items", "cos_pair", "cos_random", "retrieval_top1", "retrieval_top1_from_pivot")
        }
        if cfg.with_cka:
            res["cka"] = {}
        for lang in langs:
            # One gather and one float64 cast per language; every layer's metrics come from one cosine matrix.
            xs, ps = st[:, rows(lang, 1)].double(), st[:, rows(lang, 0)].double()  # [L+1, n, H]
            for k in res:
                res[k][lang] = []
            for layer in range(n_states):
                x, p = xs[layer], ps[layer]
                m = pair_metrics(x, p)
                wins = m["mexa_wins"]
                res["mexa"][lang].append(wins.double().mean().item())
                # Per-pair outcomes ("1" = strict top-1 both ways), pair order as in ``pairs``: for paired bootstraps.
                res["mexa_items"][lang].append("".join("1" if w else "0" for w in wins.tolist()))
                for key in ("cos_pair", "cos_random", "retrieval_top1", "retrieval_top1_from_pivot"):
                    res[key][lang].append(m[key])
                if cfg.with_cka:
                    res["cka"][lang].append(linear_cka(x, p))
        per_pooling[pooling] = {
            **res,
            "mexa_mean": [_mean([res["mexa"][lang][k] for lang in langs]) for k in range(n_states)],
            "n": {lang: len(pairs_by_lang[lang]) for lang in langs},
            "pairs_digest": {lang: _digest(pairs_by_lang[lang]) for lang in langs},
        }

    primary = variant_name(cfg.pooling[0], cfg.centering[0])
    rec = recommend_layer(per_pooling[primary]["mexa_mean"], num_layers, cfg.middle_band)
    layer = rec["layer"] if cfg.heatmap_layer < 0 else cfg.heatmap_layer
    if not 0 <= layer < n_states:
        raise ConfigError(f"heatmap_layer {cfg.heatmap_layer} out of range 0..{num_layers}")
    lang_matrix = language_matrix(variants[primary][layer], pairs_by_lang, langs, cfg.pivot, index)
    lang_matrix.update(layer=layer, pooling=primary)
    pca = pca_points(variants[primary][layer], pairs_by_lang, langs, cfg.pivot, index)
    pca.update(layer=layer, pooling=primary)

    result: dict[str, Any] = {
        "kind": "analysis",
        "run_name": cfg.run_name or out_dir.resolve().name,
        "model": cfg.model.name_or_path or type(model).__name__,
        "config": dataclasses.asdict(cfg),
        "env": environment(),
        "autocast": mload.inference_precision(model, cfg.model),
        "pivot": cfg.pivot,
        "languages": langs,
        # per pair, a short hash of its pivot sentence: pairs of different languages that share one form a cluster,
        # which alignx compare resamples as one
        "pivot_ids": {lang: [_digest([(piv, "")])[:8] for piv, _ in pairs_by_lang[lang]] for lang in langs},
        "num_layers": num_layers,
        "layer_index": "hidden_states index: 0 = embeddings, l = output of decoder layer l",
        "pooling": per_pooling,
        "lang_matrix": lang_matrix,
        "pca": pca,
        "recommended_layer": rec["layer"],
        "recommended": {**rec, "pooling": primary},
        "recommendation": recommendation_text(rec, num_layers, cfg.pivot, langs, primary, min(per_pooling[primary]["n"].values())),
    }
    if cfg.plots:
        from alignx.report.plots import plot_analysis  # plots read only the result dict

        result["plots"] = [p.name for p in plot_analysis(result, out_dir)]
    write_json(out_dir / "analysis.json", result)
    return result


def language_matrix(
    st: torch.Tensor, pairs_by_lang: PairsByLang, langs: list[str], pivot: str, index: dict[str, int]
) -> dict[str, Any]:
    """Pairwise MEXA and mean pair cosine between all languages (pivot first) at one layer.

    st: [S, H] states of all sentences. Languages X and Y are compared on the pivot sentences both
    translate (x_p, y_p); the pivot row uses all of X's pairs. Pairs of languages sharing fewer than
    2 pivot sentences get null cells: with no multi-way parallel data only the pivot row is filled.
    ``n`` holds the number of sentences behind each cell (MEXA chance level is 1/n).
    """
    names = [pivot, *langs]
    trans = {lang: dict(pairs_by_lang[lang]) for lang in langs}
    k = len(names)
    mexa: list[list[float | None]] = [[None] * k for _ in range(k)]
    cos: list[list[float | None]] = [[None] * k for _ in range(k)]
    n: list[list[int]] = [[0] * k for _ in range(k)]
    for i in range(k):
        mexa[i][i], cos[i][i] = 1.0, 1.0
        for j in range(i + 1, k):
            a_lang, b_lang = names[i], names[j]
            if a_lang == pivot:
                pairs = list(trans[b_lang].items())
            else:
                shared = [p for p in trans[a_lang] if p in trans[b_lang]]
                pairs = [(trans[a_lang][p], trans[b_lang][p]) for p in shared]
            n[i][j] = n[j][i] = len(pairs)
            if len(pairs) < 2:
                continue
            a = st[[index[x] for x, _ in pairs]]
            b = st[[index[y] for _, y in pairs]]
            m = mexa_score(a, b)
            c = cosine_matrix(a, b).diagonal().mean().item()
            mexa[i][j] = mexa[j][i] = m
            cos[i][j] = cos[j][i] = c
    out: dict[str, Any] = {"langs": names, "mexa": mexa, "cos": cos, "n": n}
    missing = [f"{names[i]}-{names[j]}" for i in range(k) for j in range(i + 1, k) if mexa[i][j] is None]
    if missing:
        out["note"] = f"null cells ({', '.join(missing)}): fewer than 2 pivot sentences translated into both languages"
    return out


def pca_points(
    st: torch.Tensor, pairs_by_lang: PairsByLang, langs: list[str], pivot: str, index: dict[str, int]
) -> dict[str, Any]:
    """2-D PCA (SVD of the centred states) of the pivot sentences and every language's translations.

    st: [S, H]. Returns {"points": [[x, y], ...], "lang": [code per point], "explained": [r1, r2]}
    (explained: share of variance of the two components), stored so plots need only the JSON.
    """
    labels: list[str] = []
    rows: list[int] = []
    seen_pivot: set[str] = set()
    for lang in langs:
        for piv, tr in pairs_by_lang[lang]:
            if piv not in seen_pivot:
                seen_pivot.add(piv)
                labels.append(pivot)
                rows.append(index[piv])
            labels.append(lang)
            rows.append(index[tr])
    x = st[rows].double()
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    pts = x @ vh[:2].T  # [P, <=2]
    if pts.shape[1] < 2:  # a single point or a 1-D hidden size: pad so consumers always see 2 columns
        pts = torch.cat([pts, torch.zeros(pts.shape[0], 2 - pts.shape[1], dtype=pts.dtype)], dim=1)
    var = s.pow(2)
    explained = (var[:2] / var.sum().clamp(min=1e-30)).tolist()
    return {
        "points": [[round(a, 5), round(b, 5)] for a, b in pts.tolist()],
        "lang": labels,
        "explained": explained,
    }


def recommendation_text(rec: dict[str, Any], num_layers: int, pivot: str, langs: list[str], pooling: str, n_min: int) -> str:
    lo, hi = rec["band"]
    text = (
        f"Mean MEXA of {', '.join(langs)} against {pivot} ({pooling} pooling) peaks at layer {rec['layer']} of "
        f"{num_layers} within the middle band [{lo}, {hi}] (MEXA {rec['value']:.3f}; global maximum at layer "
        f"{rec['global_layer']}, {rec['global_value']:.3f}). Middle layers are where translations share a "
        f"representation before the top layers turn language-specific (align-then-diverge), so layer "
        f"{rec['layer']} is the natural loss.align_layer; the band excludes the embeddings and top layers."
    )
    if rec["value"] < 2.0 / max(n_min, 1):
        text += f" Note: this is within 2x chance (1/{n_min}), so the model shows little cross-lingual alignment."
    return text


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def prepare_pairs(cfg: AnalyzeConfig) -> PairsByLang:
    if not cfg.parallel:
        raise ConfigError("parallel: give at least one .jsonl file of pairs with the pivot language")
    pairs = read_pivot_pairs(cfg.parallel, cfg.pivot)
    langs = cfg.languages or sorted(pairs)
    missing = [lang for lang in langs if lang != cfg.pivot and len(pairs.get(lang, [])) < cfg.min_sentences]
    for lang in missing:
        print(f"analyze: skipping {lang}: {len(pairs.get(lang, []))} pairs with {cfg.pivot} (< min_sentences={cfg.min_sentences})")
    langs = [lang for lang in langs if lang != cfg.pivot and lang not in missing]
    if not langs:
        raise ConfigError(f"{', '.join(cfg.parallel)}: no language has >= {cfg.min_sentences} pairs with pivot {cfg.pivot!r}")
    return select_pairs(pairs, langs, cfg.max_sentences, cfg.seed)


def main(cfg: AnalyzeConfig, loaded: tuple[torch.nn.Module, Any] | None = None) -> dict[str, Any]:
    """Load the model (or take ``loaded``, its model and tokenizer), run :func:`analyze_model`, print where the results
    went."""
    from alignx.model.load import load_model_and_tokenizer

    pairs = prepare_pairs(cfg)  # fail on bad data before spending time loading the model
    model, tokenizer = loaded if loaded is not None else load_model_and_tokenizer(cfg.model)
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if cfg.device == "auto":
        if on_cpu and torch.cuda.is_available():
            model.to("cuda")
    elif on_cpu or cfg.device == "cpu":
        model.to(cfg.device)
    with output_lock(cfg.output_dir, "analyze"):  # analysis.json itself is written atomically
        result = analyze_model(model, tokenizer, pairs, cfg)
    print(f"analyze: wrote {Path(cfg.output_dir) / 'analysis.json'}")
    print(f"analyze: {result['recommendation']}")
    return result
