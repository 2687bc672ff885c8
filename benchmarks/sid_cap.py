"""How much of a user's history can a model that reads only SIDs use? (issue 11; README "Headline results").

A personal ranking that sees nothing but the SID tokens of the user's past negatives: `own_negatives` (the most-
disliked list tilted towards what this user disliked before) with each SID token ("level b = 7") as a facet, in
place of the items' true category and attributes. It is the ceiling of what SIDs hand a history-reading model on
the simulator, measured for the SIDs of notebook 02's choices: one MiniLM vector per title or one per attribute
column (`EmbedConfig.per_column`), the RQ-VAE or residual k-means, 3 x 64, 4 x 32 or 5 x 16 codes. Every ranking is
scored like notebook 06 scores the baselines (all test rows of the run, the one candidate rule, `recommend.score`),
beside `own_negatives` on the true facets and the most-disliked list.

    .venv/bin/python benchmarks/sid_cap.py                       # runs/tutorial, ~3 min on 2 cores
    .venv/bin/python benchmarks/sid_cap.py --small --max-rows 50  # two settings: checks the plumbing

Reads a run folder where notebook 01 has finished (the SIDs are built here, in memory; the run's own are left
alone). Results: benchmarks/results/sid_cap.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from conrec_lib.baselines import heuristics  # noqa: E402
from conrec_lib.data import dataprep  # noqa: E402
from conrec_lib.data.dataset import item_facets  # noqa: E402
from conrec_lib.data.histories import sample_positions, split_rows  # noqa: E402
from conrec_lib.llm import recommend  # noqa: E402
from conrec_lib.runs import Run  # noqa: E402
from conrec_lib.sids import embeddings, item_tokenizer, semantic_ids  # noqa: E402
from conrec_lib.sids.quantizer import SIDConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "sid_cap.json"
SHAPES = ((3, 64), (4, 32), (5, 16))  # (levels, codebook_size)
GRID = [(text, quantizer, levels, size) for text in ("title", "columns") for quantizer in ("rqvae", "rqkmeans")
        for levels, size in SHAPES]
SMALL_GRID = [("title", "rqkmeans", 3, 16), ("columns", "rqkmeans", 3, 16)]


def sid_token_facets(codes) -> list[frozenset[str]]:
    """Per item, its SID tokens as facets ("sid_a=5", "sid_b=2", ...; the de-duplication token left out)."""
    return [frozenset(f"sid_{semantic_ids.level_letter(d)}={c}" for d, c in enumerate(row)) for row in codes]


def own_negatives_fhr(prepared, tokenized, rows, facets: list[frozenset[str]]) -> float:
    """FHR@20 of `own_negatives` with these item facets, scored on `rows`."""
    matrix, _ = heuristics.facet_matrix(facets, sorted({f.split("=")[0] for fs in facets for f in fs}))
    ranking = heuristics.OwnNegatives(prepared, matrix, heuristics.negative_popularity(prepared) + 1.0,
                                      heuristics.BaselineConfig())
    return recommend.score(ranking.recommend(rows), rows, prepared, tokenized)["FHR@20"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/tutorial"))
    parser.add_argument("--max-rows", type=int, default=0, help="test rows scored (0: all, as notebook 06)")
    parser.add_argument("--small", action="store_true", help="two settings (checks the plumbing)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    run = Run.at(args.run_dir if args.run_dir.is_absolute() else ROOT / args.run_dir)
    prepared = dataprep.load_prepared(run)
    ds = prepared.dataset
    frame = split_rows(prepared, "test")
    rows = frame.iloc[sample_positions(len(frame), args.max_rows or None, 0)].reset_index(drop=True)
    cache = run.root / "cache" / "embeddings"
    vectors = {text: embeddings.embed_items(ds, item_tokenizer.TokenizerConfig.for_dataset(ds, item_text=text).embed,
                                            cache_dir=cache) for text in ("title", "columns")}
    found = []
    for text, quantizer, levels, size in (SMALL_GRID if args.small else GRID):
        started = time.perf_counter()
        sids = semantic_ids.build(vectors[text], SIDConfig(quantizer=quantizer, levels=levels, codebook_size=size))
        tokenized = item_tokenizer.Tokenized(sids, vectors[text], {})
        fhr = own_negatives_fhr(prepared, tokenized, rows, sid_token_facets(sids.table.quantized_codes))
        purity = item_tokenizer.level_purity(sids.table.quantized_codes, ds.items, ("category", *ds.attributes))
        found.append({"item_text": text, "quantizer": quantizer, "levels": levels, "codebook_size": size,
                      "FHR@20": fhr, "level_purity": purity, "seconds": round(time.perf_counter() - started, 1)})
        print(f"{text:8} {quantizer:9} {levels} x {size:<3} SID-token own_negatives FHR@20 {fhr:.3f}", flush=True)
    tokenized = item_tokenizer.Tokenized(sids, vectors["title"], {})  # the scoring needs one; only ids are used
    reference = {"own_negatives (true facets)": own_negatives_fhr(prepared, tokenized, rows, item_facets(ds)),
                 "most_disliked": recommend.score(heuristics.MostDisliked.fit(prepared).recommend(rows), rows,
                                                  prepared, tokenized)["FHR@20"]}
    for name, fhr in reference.items():
        print(f"{name:36} FHR@20 {fhr:.3f}")
    result = {"run_dir": str(args.run_dir), "n_rows": len(rows), "settings": found, "reference": reference,
              "own_negatives": dataclasses.asdict(heuristics.BaselineConfig())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return json.loads(text)  # as written (tuples of the config become lists)


if __name__ == "__main__":
    main()
