"""The pipeline, stage by stage: the one table that the CLI, the MLflow runs and ``dvc.yaml`` are made from.

To add a stage: write its function (``config, **arguments -> StageResult``) in the package of its concern,
declare it here, then run ``synthembed pipeline --write`` to regenerate ``dvc.yaml``; the tests check that the
declaration, the code it imports and ``dvc.yaml`` agree.
"""

from __future__ import annotations

import dataclasses

from synthembed.encoder.reference_encoder import REFERENCE_ENCODER
from synthembed.params import Params
from synthembed.pipeline.stage import Plot, Stage


def trained_embedder(config: Params) -> str:
    """Where the train stage writes the merged SentenceTransformer folder."""
    return f"{config.train.output_dir}/embedder"


def evaluation_data(config: Params) -> list[str]:
    return [config.evaluate.data_dir or "data/eval"]


BRAINSTORM = Stage(
    name="brainstorm",
    help="Ask the LLM (llm.model) for task definitions of the four asymmetric kinds.",
    runs="synthembed.synth.brainstorm:run_brainstorm",
    plans="synthembed.synth.brainstorm:brainstorm_requests",
    sections=("seed", "llm", "brainstorm"),
    code=("synth", "encoder", "secrets.py"),  # encoder: the local provider's builtin model
    assets=("prompts/brainstorm",),
    outputs=lambda config: [config.brainstorm.output],
    metrics="metrics/brainstorm.json",
    logged="outputs",
)

GENERATE = Stage(
    name="generate",
    help="Write one training example per sampled request (kind, task and template parameters drawn with seed).",
    runs="synthembed.synth.generate:run_generate",
    plans="synthembed.synth.generate:planned_requests",
    sections=("seed", "llm", "generate", "brainstorm.output"),
    code=(*BRAINSTORM.code, "corpus.py"),  # corpus.py: grounded generation reads generate.corpus
    assets=("prompts/generate",),
    inputs=lambda config: [config.brainstorm.output, *([config.generate.corpus] if config.generate.corpus else [])],
    outputs=lambda config: [
        config.generate.output,
        *([config.generate.grounded_output] if config.generate.corpus else []),
    ],
    metrics="metrics/generate.json",
    logged="sample",
)

PREPARE = Stage(
    name="prepare",
    help="Turn synthetic examples, corpus-grounded records and labeled sets into training and validation records, "
    "filtering LLM-written pairs, mining hard negatives and auditing every record against the evaluation tasks.",
    runs="synthembed.data.prepare:run_prepare",
    sections=("seed", "prepare", "evaluate.data_dir"),
    code=("data", "encoder", "corpus.py", "evaluate"),  # evaluate: the tasks the contamination audit reads
    inputs=lambda config: [
        config.prepare.synthetic,
        *([config.prepare.grounded] if config.prepare.grounded else []),
        *config.prepare.labeled,
        *([config.prepare.negative_corpus] if config.prepare.mine_negatives and config.prepare.negative_corpus else []),
        *evaluation_data(config),
    ],
    outputs=lambda config: [config.prepare.output_dir],
    metrics="metrics/prepare.json",
)

TRAIN = Stage(
    name="train",
    help="Fine-tune the backbone with LoRA and InfoNCE; writes the adapter and the merged embedder.",
    runs="synthembed.train.trainer:run_train",
    sections=("seed", "model", "lora", "train", "prepare.output_dir"),
    code=("train", "encoder", "data"),
    inputs=lambda config: [config.prepare.output_dir],
    outputs=lambda config: [f"{config.train.output_dir}/adapter", trained_embedder(config)],
    metrics="metrics/train.json",
    plot=Plot(x="step", y="loss", title="InfoNCE training loss"),
)

EVALUATE = Stage(
    name="evaluate",
    help="Score a model with MTEB on local real data (bundled MTEB tasks or your own BEIR folder).",
    runs="synthembed.evaluate.run:run_evaluate",
    sections=("seed", "model", "evaluate", "train.output_dir"),
    code=("evaluate", "encoder"),
    inputs=lambda config: [*evaluation_data(config), trained_embedder(config)],
    arguments=lambda config: {"model": trained_embedder(config)},
    options=("--model", "${train.output_dir}/embedder"),
    metrics="metrics/eval.json",
    plot=Plot(),
    comment="The trained model and its two baselines, on the same tasks (the seed draws the subsets). The\n"
    "baselines depend only on their own references, the encoder and the evaluate params, so\n"
    "experiments that change training reuse their cached results.",
)

EVALUATE_BASE = Stage(
    name="evaluate_base",
    help=EVALUATE.help,
    runs=EVALUATE.runs,
    command="evaluate",
    sections=("seed", "model", "evaluate"),
    code=EVALUATE.code,
    inputs=evaluation_data,
    arguments=lambda config: {"model": config.model.backbone},
    options=("--model", "${model.backbone}"),
    metrics="metrics/eval_base.json",
    plot=Plot(),
)

EVALUATE_REFERENCE = Stage(
    name="evaluate_reference",
    help=EVALUATE.help,
    runs=EVALUATE.runs,
    command="evaluate",
    sections=("seed", "evaluate", "model.batch_size"),
    code=EVALUATE.code,
    inputs=evaluation_data,
    arguments=lambda config: {"model": REFERENCE_ENCODER},
    options=("--model", REFERENCE_ENCODER),
    metrics="metrics/eval_reference.json",
    plot=Plot(),
)

REGISTER = Stage(
    name="register",
    help="Register the trained embedder in MLflow; it becomes the champion only if it scores higher.",
    runs="synthembed.tracking.registry:run_register",
    sections=("register", "mlflow", "train.output_dir"),
    code=("tracking", "encoder", "secrets.py"),
    inputs=lambda config: [config.register.model or trained_embedder(config), EVALUATE.metrics],
    arguments=lambda config: {"model": config.register.model or trained_embedder(config), "scores": EVALUATE.metrics},
    metrics="metrics/register.json",
)


def evaluation_stage(config: Params, model: str) -> Stage:
    """The evaluate stage that scores ``model``: one of the pipeline's three, else an ad hoc one whose only
    declared inputs are the task data."""
    for stage in (EVALUATE, EVALUATE_BASE, EVALUATE_REFERENCE):
        if stage.arguments(config)["model"] == model:
            return stage
    return dataclasses.replace(EVALUATE, inputs=evaluation_data, arguments=lambda config: {"model": model})


PIPELINE: dict[str, Stage] = {
    stage.name: stage
    for stage in (BRAINSTORM, GENERATE, PREPARE, TRAIN, EVALUATE, EVALUATE_BASE, EVALUATE_REFERENCE, REGISTER)
}

# dvc.yaml's plot over the three evaluation tables.
COMPARISON = {
    "per_task_comparison": {
        "title": "main score per task (trained vs base vs all-MiniLM-L6-v2)",
        "template": "bar_horizontal",
        "x": "main_score",
        "y": {stage.table: "task" for stage in (EVALUATE, EVALUATE_BASE, EVALUATE_REFERENCE)},
    }
}
