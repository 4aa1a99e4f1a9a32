"""One training-time evaluation of an untrained generator, on however many ranks this is started with.

    [mpirun -np N] python eval_spread.py OUT_DIR

Every rank builds the generator from its own seed (rank + 1), so the ranks' weights differ:
the evaluation must score rank 0's (it broadcasts them). Rank 0 writes OUT_DIR/record.json with
the scores and the momenta each rank generated.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from common.rundir import RunWriter
from energy.records import EnergyWindow
from scaling.collectives import for_world
from scaling.eval_config import EvalConfig
from scaling.world import discover


class _Meter:
    def begin(self, name: str) -> None:
        pass

    def end(self, name: str) -> EnergyWindow:
        return EnergyWindow(name=name, time_s=0.0)


def main() -> int:
    out = Path(sys.argv[1])
    world = discover()
    coll = for_world(world, "none")
    import tensorflow as tf

    from bologan.config import DataConfig, ModelConfig
    from bologan.model import build_generator
    from bologan.synthetic import generate_showers
    from scaling.evaluation import Evaluator, training_and_reference

    tf.keras.utils.set_random_seed(world.rank + 1)
    model_cfg = ModelConfig(generator="relu", generator_widths=[16, 16])
    generator = build_generator(model_cfg)
    cfg = EvalConfig(eval_every=1, showers_per_momentum=40)
    _, reference = training_and_reference(cfg, generate_showers("photons", 1500, 10), "photons", 10)
    writer = RunWriter(out, {"run_id": "spread"}) if world.rank == 0 else None
    evaluator = Evaluator(cfg=cfg, rank=world.rank, size=world.size, coll=coll, meter=_Meter(), model_cfg=model_cfg,
                          label_kind=DataConfig().label, seed=10, reference=reference, iterations_per_epoch=1,
                          writer=writer, generator_fn=lambda: generator)
    records = evaluator.evaluate(0)          # rank 0: one row (one GAN); elsewhere none
    mine = coll.gather([p for _, p in evaluator.mine])
    if world.rank == 0:
        fields = {k: v for k, v in dataclasses.asdict(records[0]).items() if isinstance(v, (int, float))}
        (out / "record.json").write_text(json.dumps({"record": fields, "momenta_by_rank": mine}))
    coll.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
